"""Vector and episodic memory and the context budget; they import only `agent` protocols.

`import memory` is light: numpy, torch, faiss and database drivers load when
a memory is first created or used.

```python
from memory import VectorMemory, EpisodicMemory, memory_tools

notes = VectorMemory("notes.db")
agent = Agent(model, tools=[*memory_tools(notes)])
```
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import ApproxCounter, ContextBudget, ContextOverflowError, TemplateCounter
    from .embedders import (
        Embedder,
        HashingEmbedder,
        OpenAIEmbedder,
        TransformersEmbedder,
        default_embedder,
    )
    from .episodic import Episode, EpisodicMemory, ScoredEpisode
    from .records import Hit, Record, VectorMemoryError
    from .store_pg import PgVectorStore
    from .tools import MemorySave, MemorySearch, memory_tools
    from .vector import VectorMemory

_LAZY = {
    "ContextBudget": "context",
    "ContextOverflowError": "context",
    "TemplateCounter": "context",
    "ApproxCounter": "context",
    "VectorMemory": "vector",
    "Hit": "records",
    "Record": "records",
    "VectorMemoryError": "records",
    "EpisodicMemory": "episodic",
    "Episode": "episodic",
    "ScoredEpisode": "episodic",
    "Embedder": "embedders",
    "TransformersEmbedder": "embedders",
    "OpenAIEmbedder": "embedders",
    "HashingEmbedder": "embedders",
    "default_embedder": "embedders",
    "PgVectorStore": "store_pg",
    "memory_tools": "tools",
    "MemorySearch": "tools",
    "MemorySave": "tools",
}

__all__ = [
    "ApproxCounter",
    "ContextBudget",
    "ContextOverflowError",
    "Embedder",
    "Episode",
    "EpisodicMemory",
    "HashingEmbedder",
    "Hit",
    "MemorySave",
    "MemorySearch",
    "OpenAIEmbedder",
    "PgVectorStore",
    "Record",
    "ScoredEpisode",
    "TemplateCounter",
    "TransformersEmbedder",
    "VectorMemory",
    "VectorMemoryError",
    "default_embedder",
    "memory_tools",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memory' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
