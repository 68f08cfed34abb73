"""LLM backends and the protocol they share.

Backends with heavy dependencies load on first use, so importing this
package stays cheap: `TransformersLLM` pulls in torch only when touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import LLM, LLMError, LLMRequest, complete

if TYPE_CHECKING:
    from .openai_compat import OpenAICompatLLM
    from .parse import ParsedOutput, parse_output
    from .scripted import ScriptedLLM, ScriptExhausted
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

# The parsers (a dozen regular expressions per format) load with the first
# backend that reads model text, not with `from agent import Agent`.
_LAZY = {
    "OpenAICompatLLM": ".openai_compat",
    "TransformersLLM": ".transformers",
    "ParsedOutput": ".parse",
    "parse_output": ".parse",
    "ScriptedLLM": ".scripted",
    "ScriptExhausted": ".scripted",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'agent.llm' has no attribute {name!r}")
