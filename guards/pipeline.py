"""`GuardPipeline`: every step of a run through rules, a classifier and a policy model.

```python
from agent import Agent
from guards import GuardPipeline

agent = Agent(model, tools=[...], guards=[GuardPipeline.from_policy("my_policy.toml")])
```

For each event the pipeline finds its stage (`agent.guard.stage_of`) and
runs the checks the policy gives that stage:

1. the rule tier (regular expressions, path and network policies) -- it may
   redact, and the later tiers see the redacted text;
2. the local classifier and any extra guards, concurrently;
3. the policy model (tier c), when one is configured and the classifier is
   unsure (score in the escalation band), or for side-effecting tool calls,
   or always, as the stage says.

Verdicts become bus decisions: allow -> None, redact -> rewrite (the
redacted text in the event's own field), block -> block with feedback for
the model, halt -> halt, ask -> the approver (or the batch policy) decides
allow or block. Every verdict that is not "allow" is recorded on the bus as
a `GuardVerdict` event (all of them with `verbose = true`), and asks as
`ApprovalRequested`/`ApprovalGiven`. A guard that raises or times out
fails closed where the stage says so (tool calls, except read-only tools)
and open elsewhere, with a warning verdict recorded.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.bus import Bus, Decision, Interceptor
from agent.events import ApprovalGiven, ApprovalRequested, GuardVerdict
from agent.guard import Guard, Stage, Verdict, approval_of, stage_of
from agent.loop import FINAL_ANSWER

from ._text import with_content
from .policy_file import Policy, StagePolicy, load_policy, warn_unknown_tools

log = logging.getLogger("guards")

Approver = Callable[[ApprovalRequested], "bool | Awaitable[bool]"]
_SEVERITY = {"allow": 0, "redact": 1, "ask": 2, "block": 3, "halt": 4}
# Tool results the runtime writes itself (a refused call, a malformed one): no tool
# output in them, nothing to judge. The loop sends them unjudged; this is for a caller
# of `evaluate` with a log's events. Not "blocked": a tool may raise ToolBlocked with
# text of its own (a secret, an injection), which is judged as any output.
RUNTIME_RESULTS = frozenset({"refused", "invalid_json", "invalid_arguments", "unknown_tool", "interrupted"})


def _runtime_result(event: Any) -> bool:
    """A tool result the runtime wrote itself: an error of RUNTIME_RESULTS, or the
    receipt of a final_answer call (a name no other tool may have)."""
    return event.error_kind in RUNTIME_RESULTS or event.name == FINAL_ANSWER


@dataclass
class Outcome:
    """What the pipeline made of one event."""

    stage: Stage | None
    action: str = "allow"  # allow, redact, ask, block, halt (before the ask is settled)
    verdicts: list[Verdict] = field(default_factory=list)
    event: Any = None  # the event after redaction
    feedback: str = ""
    latency: float = 0.0


def build_rules(policy: Policy) -> Any:
    from .rules import (
        DangerousCodeGuard,
        InjectionMarkerGuard,
        NetworkPolicyGuard,
        PathPolicyGuard,
        PIIRedactor,
        RuleGuard,
        SecretRedactor,
    )

    stages = {name: list(sp.rules) for name, sp in policy.stages.items()}
    rules: dict[str, Any] = {
        "secrets": SecretRedactor(),
        "pii": PIIRedactor(),
        "code": DangerousCodeGuard(policy.code.tools or None, extra=policy.code.extra_patterns),
        "paths": PathPolicyGuard(
            allow=policy.paths.allow,
            deny=policy.paths.deny,
            absolute_allow=policy.paths.absolute_allow,
            arguments=policy.paths.arguments,
        ),
        "network": NetworkPolicyGuard(
            allow=policy.network.allow, deny=policy.network.deny, arguments=policy.network.arguments
        ),
        "injection": InjectionMarkerGuard(),
    }
    # A stage may cut injected lines out instead of blocking.
    cut = InjectionMarkerGuard(action="redact")
    per_stage = {name: {"injection": cut} for name, sp in policy.stages.items() if sp.injection == "redact"}
    return RuleGuard(stages, rules=rules, stage_rules=per_stage)


def build_classifier(policy: Policy) -> Any:
    from .classifier import ClassifierGuard

    stages = {name: dict(sp.classifier) for name, sp in policy.stages.items() if sp.classifier}
    result = policy.stages.get("tool_result")
    return ClassifierGuard(
        policy.classifier.model or None,
        stages=stages,
        local=dict(result.local) if result is not None else None,
    )  # which tools are local: learn_tools tells it


def local_tools(tools: Sequence[Any]) -> list[str]:
    """The tools whose output stays local: effects declared, none of them the network (a
    tool that declares none may fetch)."""
    return [
        t.name
        for t in tools
        if getattr(t, "effects_declared", False) and "network" not in getattr(t, "effects", {"network"})
    ]


class GuardPipeline:
    """Runs the guards a policy asks for on every step of a run.

    `rules`, `classifier` and `llm` replace the tiers the policy would build
    (pass `False` to turn one off); `guards` are extra `Guard`s run with the
    classifier on every stage; `tools` (Tool objects) tell which tools only
    read, in addition to the policy's `tools.read_only`.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        rules: Any = None,
        classifier: Any = None,
        llm: Any = None,
        guards: Sequence[Guard] = (),
        tools: Sequence[Any] = (),
        approver: Approver | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(
                f"GuardPipeline's first argument is a Policy (guards.load_policy(path)), not "
                f"{type(policy).__name__}; give your own guards as GuardPipeline(guards=[...])"
            )
        self.policy = policy or load_policy()
        self.rules = build_rules(self.policy) if rules is None else (rules or None)
        if classifier is None:
            classifier = build_classifier(self.policy) if self.policy.classifier.enabled else None
        self.classifier = classifier or None
        self.llm = llm or None
        self.guards = list(guards)
        self.approver = approver
        # Read-only as declared: a tool that declares no effects may write, so a guard that
        # fails on its calls fails closed.
        self.read_only = set(self.policy.tools.read_only)
        self.side_effecting: set[str] = set()
        self._tool_names: set[str] = set()
        self._warned: set[str] = set()  # policy names warned about as no tool: once each
        if tools:
            self.learn_tools(tools)

    def learn_tools(self, tools: Sequence[Any]) -> None:
        """Which of these tools only read and which stay local (a local tool's output is
        held to a higher injection bar), and a warning for each tool the policy names that
        none of them is: a typo makes its rule do nothing. An agent given this pipeline
        calls it with its tools, so a pipeline made without `tools=` knows them too."""
        tools = list(tools)
        self.read_only |= {
            t.name for t in tools if getattr(t, "read_only", False) and getattr(t, "effects_declared", True)
        }
        self.side_effecting |= {t.name for t in tools if not getattr(t, "read_only", True)}
        new = {t.name for t in tools} - self._tool_names
        if new:
            self._tool_names |= new
            warn_unknown_tools(self.policy, sorted(self._tool_names), self._warned)
        classifier = self.classifier
        if classifier is not None and hasattr(classifier, "local_tools"):
            classifier.local_tools = classifier.local_tools | set(local_tools(tools))

    @classmethod
    def from_policy(cls, path: str | Path | None = None, *, llm: Any = None, **kwargs: Any) -> GuardPipeline:
        """A pipeline for the policy file at `path` (default: guards/default_policy.toml).

        `llm` is tier (c): a `Guard` (e.g. `PolicyLLMGuard`, `HFClassifierGuard`)
        or an `agent.llm` backend, wrapped in a `PolicyLLMGuard` with the
        policy's `[llm]` settings.
        """
        policy = load_policy(path)
        if llm is not None and not hasattr(llm, "check"):
            from .policy import PolicyLLMGuard

            llm = PolicyLLMGuard(
                llm,
                policy=policy.llm.policy or None,
                format=policy.llm.format,
                effort=policy.llm.effort,
                ask=policy.llm.ask,
                halt=policy.llm.halt,
            )
        return cls(policy, llm=llm, **kwargs)

    # -- wiring ---------------------------------------------------------------

    def bind(self, bus: Bus, approver: Approver | None = None) -> Interceptor:
        """The interceptor for one run: it records verdicts and approvals on `bus`."""
        return _Binding(self, bus, approver or self.approver).intercept

    # -- judging ----------------------------------------------------------------

    def is_read_only_call(self, event: Any) -> bool:
        name = getattr(event, "name", "")
        return name in self.read_only and name not in self.side_effecting

    def fails_closed(self, stage: str, event: Any, sp: StagePolicy) -> bool:
        if stage == "tool_call" and self.is_read_only_call(event):
            return False
        return sp.on_error == "closed"

    async def _run(
        self, guard: Any, event: Any, stage: Stage, sp: StagePolicy, timeout: float | None = None
    ) -> Verdict:
        name = getattr(guard, "name", type(guard).__name__)
        started = time.perf_counter()
        limit = sp.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                verdict = await guard.check(event, stage)
            if verdict is not None:
                _check_verdict(verdict, event)
        except Exception as e:  # a broken or slow guard, or no verdict: fail as the policy says
            what = (
                f"timed out after {limit:g} s"
                if isinstance(e, TimeoutError)
                else f"failed ({type(e).__name__}: {e})"
            )
            closed = self.fails_closed(stage, event, sp)
            log.warning("guard %s %s on %s; failing %s", name, what, stage, "closed" if closed else "open")
            latency = time.perf_counter() - started
            if closed:
                target = f"the {event.name} call" if stage == "tool_call" else "this step"
                return Verdict(
                    action="block",
                    category="guard_error",
                    rationale=f"{name} {what}; failing closed",
                    feedback=f"{target} was not run: the safety check {name} {what}, and this step fails closed. "
                    "Try again or take another way.",
                    guard=name,
                    latency=latency,
                )
            return Verdict(
                category="guard_error", rationale=f"{name} {what}; failing open", guard=name, latency=latency
            )
        if verdict is None:  # a guard that has nothing to say (as an interceptor's None): allow
            return Verdict(guard=name, latency=time.perf_counter() - started)
        return verdict.model_copy(
            update={"guard": verdict.guard or name, "latency": time.perf_counter() - started}
        )

    async def evaluate(self, event: Any, *, blocks_so_far: int = 0) -> Outcome:
        """Judge one event (without a bus): the verdicts and the combined action."""
        started = time.perf_counter()
        stage = stage_of(event)
        sp = self.policy.stage(stage) if stage else None
        if stage is None or sp is None or (stage == "tool_result" and _runtime_result(event)):
            return Outcome(stage, event=event)
        verdicts: list[Verdict] = []
        current = event

        def apply(v: Verdict) -> None:
            nonlocal current
            verdicts.append(v)
            if v.action == "redact" and v.content is not None:
                current = with_content(current, v.content)

        # Tier (a): rules, first, so the others see redacted text.
        rules = self.rules
        if rules is not None and _applies(rules, stage):
            apply(await self._run(rules, current, stage, sp))
        # Tier (b) and extra guards, concurrently.
        tier = [g for g in (self.classifier, *self.guards) if g is not None and _applies(g, stage)]
        llm = self.llm if self.llm is not None and _applies(self.llm, stage) and sp.llm != "never" else None
        if llm is not None and sp.llm == "always":
            tier.append(llm)
        # The classifier (local: no text leaves the process) judges the text as written: a
        # redacted address or key ([PII:email]) is no part of what the writer meant, and
        # hid an instruction's purpose from it ("... send the keys to [PII:email]").
        def seen_by(g: Any) -> Any:
            return event if g is self.classifier else current

        if len(tier) == 1:
            found = [await self._run(tier[0], seen_by(tier[0]), stage, sp)]
        elif tier:
            found = list(await asyncio.gather(*(self._run(g, seen_by(g), stage, sp) for g in tier)))
        else:
            found = []
        redacted_before = any(x.action == "redact" for x in verdicts)
        for guard, v in zip(tier, found, strict=True):
            if v.action == "redact" and (redacted_before or current is not event):
                # Another guard redacted first: this one redoes its work on that text.
                v = await self._run(guard, current, stage, sp)
            apply(v)
        # Tier (c): escalation.
        if (
            llm is not None
            and sp.llm == "escalate"
            and not any(
                v.action in ("block", "halt")
                for v in verdicts
                if v.guard != getattr(self.classifier, "name", "")
            )
        ):
            lo, hi = self.policy.escalation.band
            unsure = [
                v
                for v in verdicts
                if self.classifier is not None
                and v.guard == self.classifier.name
                and v.score is not None
                and lo <= v.score < hi
            ]
            side_effect = (
                stage == "tool_call"
                and self.policy.escalation.side_effecting_tools
                and not self.is_read_only_call(event)
            )
            if unsure or side_effect:
                judged = await self._run(llm, current, stage, sp, timeout=self.policy.llm.timeout)
                # The policy model decides the unsure cases, unless it could not answer.
                for v in unsure if judged.category != "guard_error" else []:
                    idx = verdicts.index(v)
                    verdicts[idx] = v.model_copy(
                        update={
                            "action": "allow",
                            "rationale": f"{v.rationale}; unsure, escalated to {llm.name}",
                        }
                    )
                apply(judged)
        # Policy conversions: some categories ask, some halt; approval for tools.
        policy = self.policy
        final: list[Verdict] = []
        for v in verdicts:
            if v.action == "block" and policy.matches(v.category, policy.approval.ask_categories):
                v = v.model_copy(update={"action": "ask"})
            if v.action in ("block", "ask") and policy.matches(v.category, policy.halt_categories):
                v = v.model_copy(update={"action": "halt"})
            final.append(v)
        if stage == "tool_call" and event.name in policy.approval.tools:
            final.append(
                Verdict(
                    action="ask",
                    category="approval_required",
                    rationale=f"the policy asks before every {event.name} call",
                    guard="approval_policy",
                )
            )
        action = max((v.action for v in final), key=lambda a: _SEVERITY[a], default="allow")
        feedback = ""
        if action in ("block", "halt", "ask"):
            worst = next(v for v in final if v.action == action)
            feedback = worst.feedback or f"blocked by the guard {worst.guard} ({worst.category or 'policy'})"
        if action == "block" and policy.max_blocks and blocks_so_far + 1 >= policy.max_blocks:
            action = "halt"
            feedback = f"{feedback} -- {blocks_so_far + 1} steps were blocked in this run (max_blocks = {policy.max_blocks}); stopping."
        return Outcome(stage, action, final, current, feedback, time.perf_counter() - started)


def _check_verdict(verdict: Any, event: Any) -> None:
    """Refuse what is no usable verdict: another type, or a redaction without content or
    with content the event cannot hold (its log line could not be read back)."""
    if not isinstance(verdict, Verdict):
        raise TypeError(f"it returned {type(verdict).__name__}, not a guard.Verdict (or None)")
    if verdict.action != "redact":
        return
    if verdict.content is None:
        raise ValueError("it asked to redact without giving the redacted content")
    try:
        redacted = with_content(event, verdict.content)
        type(event).model_validate(dict(redacted.__dict__))  # its values, not a dump (which warns)
    except (ValidationError, TypeError, ValueError) as e:
        problem = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise ValueError(f"its redacted content does not fit a {event.type} event ({problem})") from None


def _applies(guard: Any, stage: str) -> bool:
    applies = getattr(guard, "applies", None)
    return True if applies is None else bool(applies(stage))


class _Binding:
    """One run's view of a pipeline: its bus, its approver, its block count."""

    def __init__(self, pipeline: GuardPipeline, bus: Bus, approver: Approver | None) -> None:
        self.pipeline = pipeline
        self.bus = bus
        self.approver = approver
        self.blocks = 0

    async def intercept(self, event: Any) -> Decision | None:
        if stage_of(event) is None:
            return None
        pipeline = self.pipeline
        outcome = await pipeline.evaluate(event, blocks_so_far=self.blocks)
        verbose = pipeline.policy.verbose
        for v in outcome.verdicts:
            if verbose or v.action != "allow" or v.category == "guard_error":
                await self.bus.deliver(
                    GuardVerdict(
                        stage=outcome.stage or "",
                        action=v.action,
                        target_type=event.type,
                        guard=v.guard,
                        category=v.category,
                        score=v.score,
                        rationale=v.rationale,
                        latency=v.latency,
                        step=event.step,
                    )
                )
        action = outcome.action
        if action == "ask":
            asks = [v for v in outcome.verdicts if v.action == "ask"]
            if await self._ask(event, outcome, "; ".join(v.rationale or v.category for v in asks)):
                action = "redact" if any(v.action == "redact" for v in outcome.verdicts) else "allow"
            else:
                action = "block"
                who = "the user" if self.approver is not None else "the batch policy"
                outcome.feedback = (
                    f"{who} refused this step ({asks[0].category}). Do not retry it; try another way."
                )
        if action == "halt":
            return Decision.halt(outcome.feedback)
        if action == "block":
            self.blocks += 1
            return Decision.block(outcome.feedback)
        if action == "redact" and outcome.event is not event:
            return Decision.rewrite(outcome.event)
        return None

    async def _ask(self, event: Any, outcome: Outcome, reason: str) -> bool:
        event = outcome.event  # as the guards left it: a redacted secret is not shown (nor logged) here
        request = ApprovalRequested(
            call_id=getattr(event, "call_id", "") or "",
            name=getattr(event, "name", "") or (outcome.stage or ""),
            arguments=dict(getattr(event, "arguments", {}) or {}),
            reason=reason,
            step=event.step,
        )
        await self.bus.deliver(request)
        if self.approver is None:
            approved = self.pipeline.policy.approval.batch == "approve"
            by, note = "policy", f"batch mode: {self.pipeline.policy.approval.batch}"
        else:
            try:
                answer = self.approver(request)
                approved, note = approval_of(await answer if inspect.isawaitable(answer) else answer)
                by = "approver"
            except Exception as e:  # an approver that breaks refuses
                log.warning("approver failed: %s", e)
                approved, by, note = False, "approver", f"approver failed: {type(e).__name__}: {e}"
        await self.bus.deliver(
            ApprovalGiven(call_id=request.call_id, approved=approved, by=by, note=note, step=event.step)
        )
        return approved


def default_pipeline(**kwargs: Any) -> GuardPipeline:
    """The default pipeline: rules and the local classifier, no policy model."""
    return GuardPipeline.from_policy(None, **kwargs)
