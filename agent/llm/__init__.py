"""LLM backends and the protocol they share.

Backends with heavy dependencies load on first use, so importing this
package stays cheap: `TransformersLLM` pulls in torch only when touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import LLM, LLMError, LLMRequest, complete
from .parse import ParsedOutput, parse_output
from .scripted import ScriptedLLM, ScriptExhausted

if TYPE_CHECKING:
    from .openai_compat import OpenAICompatLLM
    from .transformers import TransformersLLM

__all__ = [
    "LLM",
    "LLMError",
    "LLMRequest",
    "OpenAICompatLLM",
    "ParsedOutput",
    "ScriptExhausted",
    "ScriptedLLM",
    "TransformersLLM",
    "complete",
    "parse_output",
]

_LAZY = {"OpenAICompatLLM": ".openai_compat", "TransformersLLM": ".transformers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'agent.llm' has no attribute {name!r}")
