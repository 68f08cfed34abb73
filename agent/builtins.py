"""Built-in tools by name: `Agent(tools=["python", "files", "web"])`.

Each name maps to a factory in the `tools` package, imported only when asked
for, so an agent that uses no built-in tool never loads their dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import AgentError

# name -> "module:factory"; the factory takes the agent's options and returns tools.
REGISTRY: dict[str, str] = {
    "python": "tools.python_tool:make_tools",
    "files": "tools.files:make_tools",
    "web": "tools.web:make_tools",
}


# The tools each name makes (a test checks this against the factories): how a run's
# recorded tool names map back to the names that make them, for `agent resume`.
TOOL_NAMES: dict[str, tuple[str, ...]] = {
    "python": ("python",),
    "files": ("read_file", "write_file", "edit_file", "list_files", "search_files"),
    "web": ("web_search", "open_url", "find_in_page"),
}


def builtins_for(tool_names: list[str]) -> list[str]:
    """The built-in names that made these tools (a run's `run_started.tools`): those
    all of whose tools are there. A script's own `read_file` does not bring in the
    `files` group with `write_file` and `edit_file`."""
    return [name for name, made in TOOL_NAMES.items() if set(made) <= set(tool_names)]


# The options each built-in takes through `Agent(tool_options=...)` (a test checks this
# against the factories). One dict serves them all; a key that none takes is a mistake.
OPTIONS: dict[str, frozenset[str]] = {
    "python": frozenset(
        {"workspace", "allow_network", "timeout", "isolation", "limits", "run_as", "max_output",
         "interrupt_grace", "pool", "prefetch"}
    ),  # fmt: skip
    "files": frozenset({"workspace", "needs_approval_for_writes", "max_read_bytes", "max_write_bytes"}),
    "web": frozenset(
        {"search_backends", "cache_dir", "allow_private", "docs_dir", "searxng_url", "allowed_hosts", "cache",
         "cache_ttl", "window", "max_page_bytes", "max_redirects", "timeout", "retries", "backoff"}
    ),  # fmt: skip
}


def builtin_tools(names: list[str], **options: Any) -> list[Any]:
    taken = frozenset().union(*OPTIONS.values())
    unknown = sorted(set(options) - taken)
    if unknown:
        raise AgentError(
            f"tool_options {unknown} mean nothing to the built-in tools; they take one flat dict of: "
            f"{', '.join(sorted(taken))}"
        )
    tools: list[Any] = []
    for name in names:
        target = REGISTRY.get(name)
        if target is None:
            available = ", ".join(sorted(REGISTRY)) or "none yet"
            raise AgentError(f"unknown built-in tool {name!r} (available: {available})")
        module, _, factory = target.partition(":")
        tools.extend(getattr(importlib.import_module(module), factory)(**options))
    return tools
