"""agent-runtime: an event-driven agent loop for models you run yourself.

```python
from agent import Agent, tool

@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b

result = Agent(tools=[add]).run_sync("What is 2 + 3?")
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import events
from .bus import Bus, Decision
from .errors import AgentError
from .events import Event
from .tool import FunctionTool, Tool, ToolBlocked, ToolError, tool
from .types import Effort, Message, ToolCallRequest, Usage

if TYPE_CHECKING:
    from .agent import Agent, EventStream, RunResult
    from .runlog import RunLog, read_events
    from .state import RunState

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "Bus",
    "Decision",
    "Effort",
    "Event",
    "EventStream",
    "FunctionTool",
    "Message",
    "RunLog",
    "RunResult",
    "RunState",
    "Tool",
    "ToolCallRequest",
    "ToolBlocked",
    "ToolError",
    "Usage",
    "events",
    "read_events",
    "tool",
]

# The events, the bus, the plain types and the tool protocol load with the
# package: they are what tools, memory and guards build on. (`tool` must be
# bound here: once the `agent.tool` module is imported, a lazy name would
# resolve to the module instead of the decorator.) The loop, the LLM layer
# and the run log load on first use, so `import agent` (and every `import
# tools`, `memory` or `guards`) stays cheap.
_LAZY = {
    "Agent": ".agent",
    "EventStream": ".agent",
    "RunResult": ".agent",
    "RunLog": ".runlog",
    "read_events": ".runlog",
    "RunState": ".state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
