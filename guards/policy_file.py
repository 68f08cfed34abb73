"""Guard policies as data: a TOML file says what each stage checks and what follows.

`load_policy(path=None)` reads `guards/default_policy.toml`, then the file at
`path` on top of it (tables merge, lists and values replace), and validates
the result. Relative paths inside a policy file (the classifier model, the
written policy for the LLM tier) are taken from the file's own directory.
"""

from __future__ import annotations

import copy
import difflib
import functools
import logging
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.guard import STAGES

log = logging.getLogger("guards")
DEFAULT_POLICY_FILE = Path(__file__).resolve().parent / "default_policy.toml"

RuleName = Literal["secrets", "pii", "code", "paths", "network", "injection"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class StagePolicy(_Model):
    rules: list[RuleName] = Field(default_factory=list)
    # A threshold is a probability: above 1 a head never fires.
    classifier: dict[Literal["injection", "harm"], Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict
    )
    # The thresholds for what tools that declare effects and no network give (tool_result):
    # a workspace's own files and code output are scored too, but must be plainly an attack.
    local: dict[Literal["injection", "harm"], Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    llm: Literal["never", "escalate", "always"] = "escalate"
    on_error: Literal["open", "closed"] = "open"
    timeout: float = Field(5.0, gt=0)
    injection: Literal["block", "redact"] = "block"


class ClassifierPolicy(_Model):
    enabled: bool = True
    model: str = ""  # empty: guards/data/classifier.npz


class EscalationPolicy(_Model):
    band: tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]] = (0.2, 0.8)
    side_effecting_tools: bool = True


class LLMPolicy(_Model):
    format: Literal["gpt-oss-safeguard", "llama-guard-3"] = "gpt-oss-safeguard"
    effort: Literal["low", "medium", "high"] = "low"
    policy: str = ""  # a markdown file; empty: guards/policies/default.md
    timeout: float = Field(30.0, gt=0)
    ask: list[str] = Field(default_factory=list)
    halt: list[str] = Field(default_factory=list)


class ApprovalPolicy(_Model):
    tools: list[str] = Field(default_factory=list)
    batch: Literal["approve", "refuse"] = "refuse"
    ask_categories: list[str] = Field(default_factory=list)


class ToolsPolicy(_Model):
    read_only: list[str] = Field(default_factory=list)


class CodePolicy(_Model):
    tools: dict[str, list[str]] = Field(default_factory=dict)
    extra_patterns: dict[str, str] = Field(default_factory=dict)

    @field_validator("extra_patterns")
    @classmethod
    def _compiles(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(
                    f"the pattern {name} = {pattern!r} is not a regular expression: {e}"
                ) from None
        return patterns


class PathsPolicy(_Model):
    allow: list[str] = Field(default_factory=lambda: ["**"])
    absolute_allow: list[str] = Field(default_factory=lambda: ["/tmp/**"])
    deny: list[str] = Field(default_factory=list)
    arguments: list[str] = Field(default_factory=lambda: ["path"])


_HOST_PORT = re.compile(r"[^:\[\]]+:\d+|\[[^\]]*\]:\d+")  # docs.python.org:443, [::1]:8080 (IPv6 has colons)


class NetworkPolicy(_Model):
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    arguments: list[str] = Field(default_factory=lambda: ["url"])

    @field_validator("allow", "deny")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            # A URL or a port matches no host: an allow list of them blocks every call.
            if "/" in host or _HOST_PORT.fullmatch(host):
                raise ValueError(
                    f"{host!r} is not a host name: give hosts such as docs.python.org or *.python.org"
                )
        return hosts


class Policy(_Model):
    version: Literal[1] = 1
    verbose: bool = False
    max_blocks: int = Field(0, ge=0)  # 0: no limit
    halt_categories: list[str] = Field(default_factory=list)
    classifier: ClassifierPolicy = Field(default_factory=ClassifierPolicy)
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    llm: LLMPolicy = Field(default_factory=LLMPolicy)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    tools: ToolsPolicy = Field(default_factory=ToolsPolicy)
    code: CodePolicy = Field(default_factory=CodePolicy)
    paths: PathsPolicy = Field(default_factory=PathsPolicy)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    stages: dict[str, StagePolicy] = Field(default_factory=dict)
    source: str = ""  # the file it was read from (set by load_policy)

    @model_validator(mode="after")
    def _known_stages(self) -> Policy:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
        lo, hi = self.escalation.band
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(
                f"escalation.band must be two numbers 0 <= low <= high <= 1, not {self.escalation.band}"
            )
        return self

    def stage(self, name: str) -> StagePolicy | None:
        return self.stages.get(name)

    def matches(self, category: str, names: list[str]) -> bool:
        """Whether `category` is one of `names` or below one (`dangerous_code` covers `dangerous_code.x`)."""
        return any(category == n or category.startswith(n + ".") for n in names)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "extra_patterns":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(value: str, base: Path) -> str:
    if not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


@functools.lru_cache(maxsize=1)
def _default_policy_data() -> dict[str, Any]:
    # Read once per process: every guarded Agent starts from it.
    with DEFAULT_POLICY_FILE.open("rb") as f:
        return tomllib.load(f)


def load_policy(path: str | Path | None = None, *, replace: bool = False) -> Policy:
    """The default policy, with the file at `path` merged on top (or instead, with `replace=True`)."""
    data = copy.deepcopy(_default_policy_data())
    base_dir = DEFAULT_POLICY_FILE.parent
    if path is not None:
        path = Path(path)
        with path.open("rb") as f:
            try:
                user = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"invalid guard policy {path}: not valid TOML ({e})") from None
        data = user if replace else _merge(data, user)
        base_dir = path.resolve().parent
        for section in ("classifier", "llm"):
            key = "model" if section == "classifier" else "policy"
            value = user[section].get(key) if isinstance(user.get(section), dict) else None
            if not isinstance(value, str) or not value or "\n" in value:  # a multi-line policy is its text
                continue
            resolved = _resolve(value, base_dir)
            if not Path(
                resolved
            ).is_file():  # a mistyped path would be read as the policy's text, or fail later
                raise ValueError(f"invalid guard policy {path}: [{section}] {key} = {value!r}: no such file")
            data[section][key] = resolved
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"invalid guard policy {path or DEFAULT_POLICY_FILE}: {e}") from None
    policy.source = str(path or DEFAULT_POLICY_FILE)
    _warn_unknown_categories(policy)
    return policy


# The categories the built-in guards give ("dangerous_code" and "llama_guard" have parts after a dot).
KNOWN_CATEGORIES = (
    "secret",
    "pii",
    "dangerous_code",
    "path_policy",
    "network_policy",
    "prompt_injection",
    "harm",
    "guard_error",
    "approval_required",
    "policy_violation",
    "llama_guard",
    # the written policy's (guards/policies/default.md), given by the policy model
    "exfiltration",
    "dangerous_action",
    "unrequested_action",
    "harmful_content",
)


def _warn_unknown_categories(policy: Policy) -> None:
    """A category no built-in guard gives is most likely a typo; it may be a custom guard's."""
    for where, names in (
        ("halt_categories", policy.halt_categories),
        ("approval.ask_categories", policy.approval.ask_categories),
    ):
        for name in names:
            if name.split(".")[0] in KNOWN_CATEGORIES:
                continue
            close = difflib.get_close_matches(name.replace("-", "_"), KNOWN_CATEGORIES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (unless a guard of your own gives it)"
            log.warning(
                "guard policy %s: %s names %r, a category no built-in guard gives%s",
                policy.source,
                where,
                name,
                hint,
            )


def warn_unknown_tools(policy: Policy, tools: list[str], warned: set[str] | None = None) -> None:
    """Tool names in the policy that the agent does not have: a typo makes the rule do nothing.
    `warned`: names said before, not said again (added to as it warns)."""
    named = [
        ("approval.tools", policy.approval.tools),
        ("tools.read_only", policy.tools.read_only),
        ("code.tools", list(policy.code.tools)),
    ]
    defaults = _default_policy_data()  # the default policy names tools an agent may not have
    shipped = {*defaults["approval"]["tools"], *defaults["tools"]["read_only"], *defaults["code"]["tools"]}
    for where, names in named:
        for name in names:
            if name not in tools and name not in shipped and (warned is None or name not in warned):
                if warned is not None:
                    warned.add(name)
                close = difflib.get_close_matches(name, tools, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                log.warning(
                    "guard policy %s: %s names %r, which is no tool of this agent%s",
                    policy.source,
                    where,
                    name,
                    hint,
                )
