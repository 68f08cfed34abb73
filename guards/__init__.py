"""Safeguards for every step of a run: rules, a local classifier, a policy model.

```python
from agent import Agent
from guards import GuardPipeline, default_pipeline

agent = Agent(model, tools=[...], guards=[default_pipeline()])
agent = Agent(model, guards=[GuardPipeline.from_policy("policy.toml", llm=safeguard_model)])
```

Importing `guards` is light: numpy loads with the classifier's weights, on
the first check that needs them, and transformers only for `HFClassifierGuard`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.guard import Guard, Stage, Verdict, stage_of

if TYPE_CHECKING:
    from .approval import batch_approver, rich_approver, terminal_approver
    from .classifier import ClassifierGuard
    from .pipeline import GuardPipeline, Outcome, default_pipeline
    from .policy import HFClassifierGuard, PolicyLLMGuard
    from .policy_file import Policy, load_policy
    from .rules import (
        DangerousCodeGuard,
        InjectionMarkerGuard,
        NetworkPolicyGuard,
        PathPolicyGuard,
        PIIRedactor,
        RuleGuard,
        SecretRedactor,
    )

_LAZY = {
    "GuardPipeline": ".pipeline",
    "Outcome": ".pipeline",
    "default_pipeline": ".pipeline",
    "RuleGuard": ".rules",
    "SecretRedactor": ".rules",
    "PIIRedactor": ".rules",
    "DangerousCodeGuard": ".rules",
    "PathPolicyGuard": ".rules",
    "NetworkPolicyGuard": ".rules",
    "InjectionMarkerGuard": ".rules",
    "ClassifierGuard": ".classifier",
    "PolicyLLMGuard": ".policy",
    "HFClassifierGuard": ".policy",
    "Policy": ".policy_file",
    "load_policy": ".policy_file",
    "terminal_approver": ".approval",
    "rich_approver": ".approval",
    "batch_approver": ".approval",
}

__all__ = [
    "Guard",
    "Stage",
    "Verdict",
    "stage_of",
    "GuardPipeline",
    "Outcome",
    "default_pipeline",
    "RuleGuard",
    "SecretRedactor",
    "PIIRedactor",
    "DangerousCodeGuard",
    "PathPolicyGuard",
    "NetworkPolicyGuard",
    "InjectionMarkerGuard",
    "ClassifierGuard",
    "PolicyLLMGuard",
    "HFClassifierGuard",
    "Policy",
    "load_policy",
    "terminal_approver",
    "rich_approver",
    "batch_approver",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'guards' has no attribute {name!r}")
