"""Plain record types shared by the stores (no numpy, no database imports)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


class VectorMemoryError(RuntimeError):
    """The memory cannot do what was asked (wrong model, bad arguments, closed)."""


@dataclass
class Record:
    """One stored memory: its text, metadata, where it came from and when."""

    id: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] | None = None  # {"run_id": ..., "seq": ...}
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hit(Record):
    """A search result: a record and its cosine similarity to the query."""

    score: float = 0.0


SourceLike = dict[str, Any] | tuple[str, int] | str | None


def normalize_source(source: Any) -> tuple[str | None, int | None]:
    """`(run_id, seq)` from a dict, a `(run_id, seq)` pair, a `"run_id#seq"` string or an event."""
    try:
        return _source(source)
    except (TypeError, ValueError, KeyError) as e:
        raise VectorMemoryError(f"source {source!r} is not a run id and an event number ({e})") from None


def _source(source: Any) -> tuple[str | None, int | None]:
    if source is None:
        return None, None
    if isinstance(source, dict):
        seq = source.get("seq")
        return (str(source["run_id"]) if source.get("run_id") is not None else None), (
            int(seq) if seq is not None else None
        )
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return str(source[0]), (int(source[1]) if source[1] is not None else None)
    if isinstance(source, str):
        run, _, seq = source.partition("#")
        return run, int(seq) if seq.isdigit() else None
    run_id = getattr(source, "run_id", None)
    if run_id is not None:  # an agent event
        return str(run_id), int(getattr(source, "seq", 0)) or None
    raise VectorMemoryError(f"source must be a dict, (run_id, seq), 'run_id#seq' or an event, not {source!r}")


def source_dict(run_id: str | None, seq: int | None) -> dict[str, Any] | None:
    if run_id is None and seq is None:
        return None
    return {"run_id": run_id, "seq": seq}


def dump_metadata(metadata: dict[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise VectorMemoryError(f"metadata must be a dict, not {type(metadata).__name__}")
    if not all(isinstance(k, str) for k in metadata):
        bad = next(k for k in metadata if not isinstance(k, str))
        raise VectorMemoryError(f"metadata keys must be strings, not {type(bad).__name__} ({bad!r})")
    try:
        text = json.dumps(metadata, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise VectorMemoryError(f"metadata must be JSON-serialisable: {e}") from e
    if has_lone_surrogate(text):
        raise VectorMemoryError("metadata holds a lone surrogate, which cannot be stored as UTF-8")
    return text


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` cannot be stored as UTF-8 (bytes kept by `surrogateescape`, say)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_same_model(
    memory: str,
    recorded: tuple[str, int, str | None],
    name: str,
    dim: int,
    fingerprint: str | None,
) -> None:
    """Refuse to search or extend `memory` (as the error names it), which recorded the
    model `(name, dim, fingerprint)` in `recorded`, with another model.

    With fingerprints on both sides they decide (the name may differ: the same
    files under another path); a memory recorded before fingerprints compares names.
    """
    old_name, old_dim, old_print = recorded
    same = old_print == fingerprint if old_print and fingerprint else old_name == name
    if not same or old_dim != dim:
        raise VectorMemoryError(
            f"{memory} holds {old_dim}-dim embeddings of model {old_name!r}"
            f"{f' ({old_print})' if old_print else ''}; it cannot be searched or extended with "
            f"{name!r}{f' ({fingerprint})' if fingerprint else ''} ({dim} dims). Open it with that embedder."
        )
