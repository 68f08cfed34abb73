"""Benign text from the installed Python packages: docstrings, READMEs, source.

Everything here is read from the virtualenv's site-packages; each item keeps
the package it came from so the train/test split can hold packages out.
"""

from __future__ import annotations

import ast
import email.parser
import random
import site
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

SKIP = {"__pycache__", "garak", "_distutils_hack", "pip", "setuptools", "pkg_resources"}


@dataclass
class Item:
    package: str
    kind: str  # "doc", "readme" or "code"
    text: str


def site_packages() -> Path:
    for p in [sysconfig.get_paths()["purelib"], *site.getsitepackages()]:
        path = Path(p)
        if path.is_dir() and "site-packages" in path.name:
            return path
    return Path(sys.prefix)


def heldout_package(name: str, fraction: float = 0.25) -> bool:
    """A fixed quarter of the packages is test-only (by a hash of the name)."""
    return zlib.crc32(name.lower().encode()) % 1000 < fraction * 1000


def _packages(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP and "." not in p.name)


def docstrings(root: Path | None = None, *, per_package: int = 400, seed: int = 0) -> list[Item]:
    root = root or site_packages()
    rng = random.Random(seed)
    out: list[Item] = []
    for pkg in _packages(root):
        files = sorted(pkg.rglob("*.py"))
        rng.shuffle(files)
        found: list[Item] = []
        for f in files[:300]:
            try:
                tree = ast.parse(f.read_text(encoding="utf-8", errors="replace"))
            except (SyntaxError, ValueError, RecursionError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and 80 <= len(doc) <= 6000:
                        found.append(Item(pkg.name, "doc", doc))
            if len(found) >= per_package:
                break
        out.extend(found[:per_package])
    return out


def code_files(root: Path | None = None, *, per_package: int = 30, seed: int = 0) -> list[Item]:
    root = root or site_packages()
    rng = random.Random(seed)
    out = []
    for pkg in _packages(root):
        files = [f for f in sorted(pkg.rglob("*.py")) if 500 < f.stat().st_size < 200_000]
        rng.shuffle(files)
        for f in files[:per_package]:
            text = f.read_text(encoding="utf-8", errors="replace")
            out.append(Item(pkg.name, "code", text))
    return out


def readmes(root: Path | None = None) -> list[Item]:
    """Long descriptions from dist-info METADATA files (the packages' READMEs)."""
    root = root or site_packages()
    out = []
    for meta in sorted(root.glob("*.dist-info/METADATA")):
        msg = email.parser.Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
        body = msg.get_payload()
        if not isinstance(body, str) or len(body) < 300:
            continue
        name = (msg.get("Name") or meta.parent.name.split("-")[0]).lower().replace("-", "_")
        out.append(Item(name, "readme", body))
    return out


def paragraphs(text: str, *, min_len: int = 60) -> list[str]:
    parts = [p.strip() for p in text.replace("\r", "").split("\n\n")]
    return [p for p in parts if len(p) >= min_len]
