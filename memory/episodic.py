"""Episodic memory: what happened in past runs, recalled when a similar task comes up.

`record(events)` turns a finished run's events into an `Episode`: the task,
the plan, the key steps, the tools used, the outcome, the errors, a short
reflection (what worked, what to do differently) and an importance score.
The reflection is derived from the events by rules; pass `reflect=` (a
callable, e.g. `llm_reflector(llm)`) to have a model write it instead.

`recall(query)` ranks episodes like the memory stream of Generative Agents
(Park et al., 2023): a weighted sum of recency (exponential decay with a
half-life), importance and relevance (cosine similarity of the query to the
episode's task), each min-max normalised over the candidates. `lessons(query)`
gives one short line per recalled episode, ready for a plan prompt.

```python
episodes = EpisodicMemory("episodes.db")
episodes.record(result.events)
for line in episodes.lessons("Summarise the sales CSV", k=3):
    print(line)
```
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import time as _time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .records import Record
from .vector import VectorMemory

DAY = 86_400.0
Reflector = Callable[["Episode"], "str | Awaitable[str]"]


@dataclass
class Step:
    """One tool call of the run, shortened."""

    tool: str
    arguments: str = ""
    ok: bool = True
    result: str = ""
    error_kind: str | None = None

    def line(self) -> str:
        mark = "ok" if self.ok else f"failed ({self.error_kind})"
        return f"{self.tool}({self.arguments}) -> {mark}: {self.result}"


@dataclass
class Episode:
    """A finished run, condensed."""

    task: str
    run_id: str = ""
    status: str = "completed"
    answer: str = ""
    plan: str = ""
    tools: list[str] = field(default_factory=list)
    tool_calls: int = 0
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    worked: list[str] = field(default_factory=list)
    avoid: list[str] = field(default_factory=list)
    reflection: str = ""
    importance: float = 0.3
    started: float = 0.0
    ended: float = 0.0
    model_steps: int = 0
    tokens: int = 0
    seq: int = 0  # of the run's last event: with run_id, where the episode came from
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        data = dict(data)
        data["steps"] = [Step(**s) for s in data.get("steps", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def embed_text(self) -> str:
        """What relevance is measured against: the task, and the tools it needed."""
        return self.task + (f" (tools: {', '.join(self.tools)})" if self.tools else "")

    def summary(self) -> str:
        """A readable account of the episode (also the prompt of an LLM reflector)."""
        lines = [f"Task: {self.task}", f"Outcome: {self.status} after {self.model_steps} steps"]
        if self.plan:
            lines.append(f"Plan: {_clip(self.plan, 400)}")
        if self.steps:
            lines.append("Key steps:")
            lines.extend(f"- {s.line()}" for s in self.steps)
        if self.errors:
            lines.append("Errors:")
            lines.extend(f"- {e}" for e in self.errors)
        if self.answer:
            lines.append(f"Answer: {_clip(self.answer, 300)}")
        return "\n".join(lines)

    def lesson(self, now: float | None = None) -> str:
        """One line for a plan prompt: when, the task, how it ended, and the reflection."""
        now = _time.time() if now is None else now
        how = "done" if self.status == "completed" else self.status
        head = f'{_ago(now - self.ended)}, "{_clip(self.task, 90)}" ({how})'
        return _clip(f"{head}: {self.reflection}" if self.reflection else head, 420)


@dataclass
class ScoredEpisode:
    episode: Episode
    score: float
    relevance: float
    recency: float
    importance: float

    def to_hit(self, now: float | None = None) -> dict[str, Any]:
        """The shape of one hit in a `MemoryRead` event: `text` is the lesson line."""
        ep = self.episode
        return {
            "id": ep.id,
            "text": ep.lesson(now),
            "score": round(self.score, 4),
            "relevance": round(self.relevance, 4),
            "recency": round(self.recency, 4),
            "importance": round(self.importance, 4),
            "task": ep.task,
            "status": ep.status,
            "run_id": ep.run_id,
            "time": ep.ended,
        }


# -- turning events into an episode ----------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return "just now" if seconds < 120 else f"{int(seconds // 60)} min ago"
    if seconds < DAY:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // DAY)
    return "1 day ago" if days == 1 else f"{days} days ago"


_RAISED = re.compile(r"^Tool '[^']*' raised ")


def _first_line(text: str, limit: int = 160) -> str:
    text = _RAISED.sub("", str(text).strip())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.lower().startswith(("invalid arguments for tool", "error:")):
            return _clip(line.lstrip("- "), limit)
        if line.lower().startswith("error:") and len(line) > 7:
            return _clip(line[6:].strip(), limit)
    return _clip(text, limit)


def _args_text(arguments: dict[str, Any] | None, limit: int = 80) -> str:
    if not arguments:
        return ""
    parts = [f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in arguments.items()]
    return _clip(", ".join(parts), limit)


def _as_events(events: Sequence[Any]) -> list[Any]:
    out = []
    for e in events:
        if isinstance(e, (dict, str, bytes)):
            from agent.events import parse_event

            e = parse_event(e)
        out.append(e)
    return out


def summarize(events: Sequence[Any]) -> Episode:
    """Build an episode from a run's events by rules (no model involved)."""
    events = _as_events(events)
    ep = Episode(task="")
    calls: dict[str, Any] = {}
    results: list[tuple[Any, Any]] = []  # (ToolCall or None, ToolResult)
    reflections: list[str] = []
    loops = 0
    blocked: list[str] = []
    available: list[str] = []
    tool_order: list[str] = []
    for e in events:
        kind = getattr(e, "type", "")
        if kind == "run_started":
            if not ep.task:
                ep.task = e.task
                ep.started = e.time
            ep.run_id = ep.run_id or e.run_id
            available = list(e.tools)
        elif kind == "user_message" and not ep.task:
            ep.task = e.content
        elif kind == "plan" and not ep.plan:
            ep.plan = _clip(e.content, 600)
        elif kind == "tool_call":
            calls[e.call_id] = e
            if e.name not in tool_order:
                tool_order.append(e.name)
        elif kind == "tool_result":
            if e.name == "final_answer":
                continue
            results.append((calls.get(e.call_id), e))
        elif kind == "reflection":
            reflections.append(e.content)
        elif kind == "feedback" and e.reason == "loop":
            loops += 1
        elif kind == "guard_verdict" and e.action in ("block", "halt"):
            blocked.append(f"{e.target_type or 'event'}: {e.rationale or e.category or e.guard}")
        elif kind == "final_answer":
            ep.answer = _clip(e.content, 500)
        elif kind == "run_finished":
            ep.seq = e.seq
            ep.status = e.status
            ep.ended = e.time
            ep.model_steps = e.steps
            ep.tokens = e.usage.total_tokens
            if e.error and e.status != "completed":
                ep.errors.append(_clip(f"run {e.status}: {e.error}", 200))
        elif kind == "error":
            ep.errors.append(_clip(f"{e.kind}: {e.message}", 200))
        ep.run_id = ep.run_id or getattr(e, "run_id", "")
    if not ep.ended and events:
        ep.ended = events[-1].time
        ep.status = "running" if ep.status == "completed" and not ep.answer else ep.status
    if not ep.started and events:
        ep.started = events[0].time
    ep.tools = tool_order
    ep.tool_calls = sum(1 for call, _ in results if call is not None)

    # Steps, errors and what fixed them.
    steps: list[Step] = []
    failed_before: dict[str, tuple[Any, Any]] = {}
    fixes: list[str] = []
    avoid: list[str] = []
    seen_avoid: set[tuple[str, str]] = set()
    for call, result in results:
        ok = not result.is_error
        step = Step(
            tool=result.name,
            arguments=_args_text(call.arguments if call is not None else None),
            ok=ok,
            result=_first_line(result.content, 120),
            error_kind=result.error_kind,
        )
        steps.append(step)
        if not ok:
            message = _first_line(result.content)
            ep.errors.append(_clip(f"{result.name} {result.error_kind}: {message}", 200))
            key = (result.name, result.error_kind or "")
            if key not in seen_avoid:
                seen_avoid.add(key)
                avoid.append(_advice(result.name, result.error_kind, message, available))
            failed_before.setdefault(result.name, (call, result))
        elif result.name in failed_before:
            bad_call, bad = failed_before.pop(result.name)
            fixes.append(_fix(result.name, bad_call, call, bad.error_kind))
    ep.steps = _key_steps(steps)

    worked: list[str] = []
    if ep.status == "completed":
        used = f"using {', '.join(tool_order)}" if tool_order else "without tools"
        worked.append(f"finished in {ep.model_steps} steps {used}")
    worked.extend(fixes)
    if loops:
        avoid.append("repeated the same call without progress; change approach sooner")
    for b in blocked:
        avoid.append(_clip(f"a guard blocked {b}", 160))
    ending = {
        "max_steps": f"ran out of steps ({ep.model_steps}); plan fewer, more decisive steps",
        "max_tokens": "ran out of tokens; keep tool outputs and answers short",
        "timeout": "ran out of time; avoid slow tools or split the work",
        "failed": "the run failed" + (f": {_first_line(ep.errors[-1], 120)}" if ep.errors else ""),
        "halted": "a guard halted the run; stay within policy",
    }.get(ep.status)
    if ending:
        avoid.append(ending)
    for r in reflections[-2:]:
        avoid.append("own reflection: " + _clip(r, 160))
    ep.worked = worked[:4]
    ep.avoid = avoid[:5]
    ep.reflection = _reflection_text(ep.worked, ep.avoid)
    ep.errors = ep.errors[:8]
    ep.importance = importance(
        ep, recovered=bool(fixes), reflections=len(reflections), blocked=len(blocked), loops=loops
    )
    return ep


def _advice(tool: str, kind: str | None, message: str, available: list[str]) -> str:
    if kind == "unknown_tool":
        names = ", ".join(n for n in available if n != "final_answer")
        return _clip(f"called a tool that does not exist; available: {names}", 160)
    if kind == "invalid_json":
        return "write tool calls as valid JSON"
    if kind == "invalid_arguments":
        return _clip(f"check {tool}'s arguments first ({message})", 160)
    if kind == "timeout":
        return f"{tool} timed out; use smaller inputs or another way"
    if kind == "blocked":
        return _clip(f"{tool} was blocked ({message}); do not rely on it", 160)
    if kind == "refused":
        return f"the user refused {tool}; find another way"
    if kind == "interrupted":
        return f"{tool} was interrupted; check its effect before repeating it"
    return _clip(f"{tool} failed: {message}", 160)


def _fix(tool: str, bad_call: Any, good_call: Any, kind: str | None) -> str:
    before = (bad_call.arguments if bad_call is not None else None) or {}
    after = (good_call.arguments if good_call is not None else None) or {}
    changed = [k for k in after if before.get(k) != after.get(k)]
    if changed:
        parts = [f"{k}={json.dumps(after[k], ensure_ascii=False, default=str)}" for k in changed[:3]]
        return _clip(f"{tool} worked after its {kind or 'error'} once called with {', '.join(parts)}", 160)
    return _clip(f"{tool} worked on retry after {kind or 'an error'}", 160)


def _key_steps(steps: list[Step], limit: int = 6) -> list[Step]:
    """Failures, the step after each failure, and the last step, in order."""
    if len(steps) <= limit:
        return steps
    keep = {len(steps) - 1, 0}
    for i, s in enumerate(steps):
        if not s.ok:
            keep.update({i, min(i + 1, len(steps) - 1)})
    return [steps[i] for i in sorted(keep)][:limit]


def _reflection_text(worked: list[str], avoid: list[str]) -> str:
    parts = []
    if worked:
        parts.append("Worked: " + "; ".join(worked) + ".")
    if avoid:
        parts.append("Next time: " + "; ".join(avoid) + ".")
    return " ".join(parts)


def importance(
    ep: Episode, *, recovered: bool = False, reflections: int = 0, blocked: int = 0, loops: int = 0
) -> float:
    """0..1 by rules: failures, errors, recoveries, guard blocks and long runs teach more."""
    score = 0.2
    if ep.status in ("failed", "max_steps", "max_tokens", "timeout", "halted"):
        score += 0.3
    tool_errors = sum(1 for s in ep.steps if not s.ok)
    score += min(0.2, 0.05 * tool_errors)
    if recovered:
        score += 0.1
    if reflections:
        score += 0.05
    if blocked:
        score += 0.15
    if loops:
        score += 0.05
    score += min(0.1, 0.01 * ep.tool_calls)
    return round(min(1.0, max(0.0, score)), 3)


# -- the memory -------------------------------------------------------------------


class EpisodicMemory:
    """Episodes of past runs in a `VectorMemory`, recalled by recency x importance x relevance."""

    def __init__(
        self,
        path: str | Path | VectorMemory,
        embedder: Any = None,
        *,
        weights: tuple[float, float, float] = (0.25, 0.25, 1.0),
        half_life: float = 7 * DAY,
        min_relevance: float = 0.2,
        reflect: Reflector | None = None,
        name: str = "episodes",
    ) -> None:
        """`weights` are (recency, importance, relevance); `half_life` is in seconds.

        The default weights let relevance lead and recency and importance
        settle near ties; on benchmarks/episodic_eval.py they beat both
        relevance alone and the equal weights of Generative Agents.
        """
        self.memory = path if isinstance(path, VectorMemory) else VectorMemory(path, embedder, name=name)
        self.name = name
        self.weights = weights
        self.half_life = half_life
        self.min_relevance = min_relevance
        self.reflect = reflect

    def __repr__(self) -> str:
        return f"EpisodicMemory({self.memory!r})"

    # -- writing -------------------------------------------------------------------

    def record(
        self,
        events: Sequence[Any],
        *,
        reflect: Reflector | None = None,
        importance: float | None = None,
        turn: int = 0,
    ) -> Episode:
        """Condense a finished run's events into an episode and store it (once per run id, and
        per `turn`: a session's later message, by its seq, is an episode of its own)."""
        ep = summarize(events)
        reflect = reflect or self.reflect
        if reflect is not None:
            text = reflect(ep)
            if inspect.isawaitable(text):
                text = _run_sync(text)
            ep.reflection = _clip(str(text), 600)
        return self._store(ep, importance, turn)

    async def arecord(
        self,
        events: Sequence[Any],
        *,
        reflect: Reflector | None = None,
        importance: float | None = None,
        turn: int = 0,
    ) -> Episode:
        """`record` from async code; `reflect` may be async (e.g. `llm_reflector`)."""
        from agent.threads import run_blocking

        ep = summarize(events)
        reflect = reflect or self.reflect
        if reflect is not None:
            text = reflect(ep)
            if inspect.isawaitable(text):
                text = await text
            ep.reflection = _clip(str(text), 600)
        return await run_blocking(self._store, ep, importance, turn)

    def add(self, episode: Episode) -> Episode:
        """Store an episode built by hand (or by `summarize`)."""
        return self._store(episode, None)

    def _store(self, ep: Episode, importance: float | None, turn: int = 0) -> Episode:
        if importance is not None:
            ep.importance = max(0.0, min(1.0, float(importance)))
        if not ep.task:
            raise ValueError("cannot record an episode without a task (no run_started event)")
        data = ep.to_dict()
        data.pop("id", None)
        metadata = {
            "kind": "episode",
            "run_id": ep.run_id,
            "status": ep.status,
            "importance": ep.importance,
            "turn": turn,
            "episode": data,
        }
        # This run's (and turn's) episode, not a note of the same run in a memory shared with notes.
        existing = self.memory.ids({"run_id": ep.run_id, **_EPISODES}) if ep.run_id else []
        existing = [r.id for r in self.memory.records(existing) if r.metadata.get("turn", 0) == turn]
        if existing:  # a resumed run recorded again: replace it
            ep.id = existing[0]
            self.memory.update(ep.id, text=ep.embed_text(), metadata=metadata)
        else:
            ep.id = self.memory.add(
                ep.embed_text(),
                metadata,
                source={"run_id": ep.run_id, "seq": ep.seq or None} if ep.run_id else None,
                time=ep.ended or None,
            )
        return ep

    # -- reading -------------------------------------------------------------------

    def get(self, id: int) -> Episode | None:
        record = self.memory.get(id)
        return _episode(record) if record is not None else None

    def count(self) -> int:
        """How many episodes are stored (a shared memory's other records not counted)."""
        return len(self.memory.ids(_EPISODES))

    def recall(
        self,
        query: str,
        k: int = 3,
        now: float | None = None,
        *,
        weights: tuple[float, float, float] | None = None,
        min_relevance: float | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[ScoredEpisode]:
        """The k episodes that best combine recency, importance and relevance to `query`."""
        now = _time.time() if now is None else now
        w_rec, w_imp, w_rel = weights or self.weights
        floor = self.min_relevance if min_relevance is None else min_relevance
        total = self.memory.count()
        if total == 0 or k <= 0:
            return []
        pool = total if total <= 1000 else max(200, 20 * k)
        # Only what record() stored: a memory shared with notes holds other records too.
        hits = self.memory.search(query, pool, where={**(where or {}), **_EPISODES})
        read = [(e, h) for h in hits if (e := _episode(h)) is not None]  # a damaged record is passed over
        if not read:
            return []
        episodes = [e for e, _ in read]
        hits = [h for _, h in read]
        rel = [h.score for h in hits]
        rec = [
            0.5 ** (max(0.0, now - (e.ended or h.time)) / self.half_life)
            for e, h in zip(episodes, hits, strict=True)
        ]
        imp = [e.importance for e in episodes]
        # Normalised over the whole pool (not only the relevant few), and with a
        # minimum span, so that tiny differences are not stretched to 0..1.
        n_rel, n_rec, n_imp = _minmax(rel), _minmax(rec), _minmax(imp)
        scored = [
            ScoredEpisode(e, w_rec * a + w_imp * b + w_rel * c, relevance=r, recency=t, importance=i)
            for e, a, b, c, r, t, i in zip(episodes, n_rec, n_imp, n_rel, rel, rec, imp, strict=True)
            if r >= floor
        ]
        scored.sort(key=lambda s: (-s.score, -s.relevance))
        return scored[:k]

    def lessons(self, query: str, k: int = 3, now: float | None = None) -> list[str]:
        """Short lines about the most useful past episodes, for a plan prompt."""
        return [s.episode.lesson(now) for s in self.recall(query, k, now)]

    def close(self) -> None:
        self.memory.close()

    def __enter__(self) -> EpisodicMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EPISODES = {"kind": "episode"}  # the records record() stores


def _minmax(values: list[float], min_span: float = 0.2) -> list[float]:
    """Min-max scaling to 0..1, but a spread narrower than `min_span` stays narrow."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    return [(v - lo) / span for v in values]


def _episode(record: Record) -> Episode | None:
    """The episode a record holds; None when its fields cannot be read (edited or damaged)."""
    data = record.metadata.get("episode") or {"task": record.text}
    try:
        ep = Episode.from_dict(data)
        ep.id = record.id
        if not ep.ended:
            ep.ended = record.time
        ep.importance = float(record.metadata.get("importance", ep.importance))
        ep.ended = float(ep.ended)
    except (TypeError, ValueError, AttributeError):
        return None
    if not isinstance(ep.task, str) or not math.isfinite(ep.importance) or not math.isfinite(ep.ended):
        return None
    return ep


def _run_sync(awaitable: Awaitable[Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def wait() -> Any:
            return await awaitable

        return asyncio.run(wait())
    raise RuntimeError("an async reflector needs `await memory.arecord(...)` inside an event loop")


# -- reflection by a model -----------------------------------------------------------

REFLECT_PROMPT = (
    "Here is an account of a finished agent run.\n\n{summary}\n\n"
    "In at most three short sentences: what worked, and what should be done differently next time "
    "on a similar task? Be concrete (tools, arguments, order of steps). No preamble."
)


def llm_reflector(llm: Any, prompt: str = REFLECT_PROMPT) -> Reflector:
    """A reflector that asks `llm` (any `agent.llm` backend) to write the reflection."""

    async def reflect(ep: Episode) -> str:
        from agent.llm.base import LLMRequest, complete
        from agent.types import Message

        request = LLMRequest(
            messages=[Message(role="user", content=prompt.format(summary=ep.summary()))],
            tool_choice="none",
            purpose="reflect",
            effort="low",
        )
        response = await complete(llm, request)
        return response.content.strip() or ep.reflection

    return reflect


# -- wiring into a run ------------------------------------------------------------------

LESSONS_HEADER = "Lessons from similar past runs (use them if they apply):"


def format_lessons(lines: Sequence[str]) -> str:
    """The block to add to a plan prompt or system prompt ('' when there is none)."""
    if not lines:
        return ""
    return LESSONS_HEADER + "\n" + "\n".join(f"- {line}" for line in lines)


async def recall_for_run(
    memory: EpisodicMemory,
    task: str,
    emit: Callable[[Any], Awaitable[Any]],
    *,
    k: int = 3,
    step: int = 0,
) -> list[str]:
    """Recall episodes for `task`, announce them as a `MemoryRead` event, return the allowed lessons.

    `emit` is the run's `bus.emit`. A guard may block the event (no lessons)
    or rewrite its hits (only the rewritten hits' `text` is returned).
    """
    from agent.events import MemoryRead
    from agent.threads import run_blocking

    now = _time.time()
    scored = await run_blocking(memory.recall, task, k, now)
    if not scored:
        return []
    event = MemoryRead(memory=memory.name, query=task, hits=[s.to_hit(now) for s in scored], step=step)
    decision = await emit(event)
    action = getattr(decision, "action", "allow")
    if action in ("block", "halt"):
        return []
    if action == "rewrite" and isinstance(getattr(decision, "event", None), MemoryRead):
        event = decision.event
    return [str(h.get("text", "")) for h in event.hits if h.get("text")]


async def record_run(memory: EpisodicMemory, events: Sequence[Any], *, turn: int = 0) -> Episode | None:
    """Record a finished run; None when the events hold no task (nothing to learn from).
    `turn`: a later message of a session (its user message's seq), an episode of its own."""
    if not any(getattr(e, "type", None) == "run_started" for e in events):
        return None
    return await memory.arecord(list(events), turn=turn)
