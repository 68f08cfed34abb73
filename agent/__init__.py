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

from . import events
from .agent import Agent, RunResult
from .bus import Bus, Decision
from .errors import AgentError
from .events import Event
from .runlog import RunLog, read_events
from .state import RunState
from .tool import FunctionTool, Tool, ToolError, tool
from .types import Effort, Message, ToolCallRequest, Usage

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "Bus",
    "Decision",
    "Effort",
    "Event",
    "FunctionTool",
    "Message",
    "RunLog",
    "RunResult",
    "RunState",
    "Tool",
    "ToolCallRequest",
    "ToolError",
    "Usage",
    "events",
    "read_events",
    "tool",
]
