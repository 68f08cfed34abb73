"""Memory as tools the model can call: `memory_search` and `memory_save`.

Every save is first put on the run's bus as a `MemoryWrite` event, so a guard
can refuse it (the model then gets the guard's feedback as the tool's error)
or rewrite it (the rewritten text and metadata are stored). Every search puts
a `MemoryRead` event with its hits on the bus; if a guard rewrites it, the
model sees only the rewritten hits, and if a guard blocks it, none.

```python
notes = VectorMemory("notes.db")
agent = Agent(model, tools=[*memory_tools(notes)])
```
"""

from __future__ import annotations

import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.events import MemoryRead, MemoryWrite
from agent.threads import run_blocking
from agent.tool import Tool, ToolBlocked, tool_context

from .vector import VectorMemory

REFUSED = ("block", "halt")


def _hit_dict(hit: Any) -> dict[str, Any]:
    data = hit.to_dict()
    data["score"] = round(float(data["score"]), 4)
    return data


MAX_NOTE = 4_000  # characters of one memory_save note: several times what the embedder reads of it


def format_hits(hits: list[dict[str, Any]]) -> str:
    """The text the model is shown for a list of hits."""
    if not hits:
        return "No matching memories."
    lines = []
    for n, h in enumerate(hits, 1):
        meta = h.get("metadata") or {}
        tags = meta.get("tags") or []
        if not isinstance(tags, (list, tuple)):  # a record added by hand with one tag, or a number
            tags = [tags]
        bits = [f"id {h.get('id')}"]
        if h.get("score") is not None:
            bits.append(f"score {float(h['score']):.2f}")
        if tags:
            bits.append("tags: " + ", ".join(map(str, tags)))
        when = h.get("time")
        if isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when) and when:
            try:
                bits.append(time.strftime("%Y-%m-%d", time.localtime(when)))
            except (OverflowError, OSError, ValueError):  # a time far outside the calendar
                pass
        lines.append(f"{n}. [{'; '.join(bits)}] {h.get('text', '')}")
    return "\n".join(lines)


class MemorySearch(Tool):
    """Search the memory by meaning."""

    name = "memory_search"
    description = (
        "Search long-term memory for notes related to a query (by meaning, not exact words). "
        "Returns the best matches with their similarity scores."
    )
    effects = frozenset({"reads"})

    class Args(BaseModel):
        model_config = ConfigDict(extra="forbid")  # an argument the tool ignores must not pass silently

        query: str = Field(min_length=1, description="What to look for, in plain words.")
        k: int = Field(5, ge=1, le=20, description="How many results to return.")

    def __init__(
        self,
        memory: VectorMemory,
        *,
        name: str | None = None,
        where: dict[str, Any] | None = None,
        min_score: float | None = None,
    ) -> None:
        self.memory = memory
        self.where = where
        self.min_score = min_score
        if name:
            self.name = name

    async def run(self, args: Args) -> str:
        hits = await run_blocking(self.memory.search, args.query, args.k, self.where, self.min_score)
        shown = [_hit_dict(h) for h in hits]
        ctx = tool_context()
        if ctx is not None:
            event = MemoryRead(memory=self.memory.name, query=args.query, hits=shown, step=ctx.step)
            decision = await ctx.emit(event)
            if decision.action in REFUSED:
                raise ToolBlocked(f"Memory search refused: {decision.feedback or 'blocked by a guard'}")
            if decision.action == "rewrite" and isinstance(decision.event, MemoryRead):
                shown = list(decision.event.hits)
        return format_hits(shown)


class MemorySave(Tool):
    """Save a note to the memory."""

    name = "memory_save"
    description = (
        "Save a short fact or note to long-term memory so it can be found in later runs. "
        "Add a few tags to make it easy to filter."
    )
    effects = frozenset({"writes"})
    safe_to_rerun = False

    class Args(BaseModel):
        model_config = ConfigDict(extra="forbid")

        text: str = Field(
            min_length=1,
            max_length=MAX_NOTE,
            description="The note to remember, self-contained (a few sentences; long texts are "
            "searched by their start only).",
        )
        tags: list[str] = Field(
            default_factory=list, description="Short labels, e.g. ['project-x', 'decision']."
        )

    def __init__(
        self, memory: VectorMemory, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self.memory = memory
        self.extra = dict(metadata or {})
        if name:
            self.name = name

    async def run(self, args: Args) -> str:
        text = args.text
        metadata: dict[str, Any] = {**self.extra, "tags": list(args.tags)}
        source: Any = None
        ctx = tool_context()
        if ctx is not None:
            event = MemoryWrite(memory=self.memory.name, text=text, metadata=metadata, step=ctx.step)
            decision = await ctx.emit(event)
            if decision.action in REFUSED:
                raise ToolBlocked(f"Memory write refused: {decision.feedback or 'blocked by a guard'}")
            if decision.action == "rewrite" and isinstance(decision.event, MemoryWrite):
                event = decision.event
                text, metadata = event.text, dict(event.metadata)
            source = {"run_id": event.run_id or ctx.run_id, "seq": event.seq or None}
        record_id = await run_blocking(self.memory.add, text, metadata, source)
        return f"Saved to memory as id {record_id}."


def memory_tools(
    memory: VectorMemory, *, prefix: str = "memory", where: dict[str, Any] | None = None
) -> list[Tool]:
    """`memory_search` and `memory_save` bound to `memory` (names `<prefix>_search`, `<prefix>_save`);
    `where` limits what the search finds (a metadata filter)."""
    return [
        MemorySearch(memory, name=f"{prefix}_search", where=where),
        MemorySave(memory, name=f"{prefix}_save"),
    ]
