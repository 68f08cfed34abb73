"""Built-in tools (python sandbox, workspace files, search and browse) land here.

They import only the small protocol modules of `agent` (`agent.tool`,
`agent.events`), never the loop.
"""

# Public classes, imported on first use so `import tools` stays light (no httpx, no ddgs).
_LAZY: dict[str, str] = {
    "Workspace": "tools.files",
    "FileTools": "tools.files",
    "WebTools": "tools.web",
    "WebSearch": "tools.web",
    "Fetcher": "tools.web",
    "Page": "tools.web",
    "SearchBackend": "tools.web",
    "SearchResult": "tools.web",
    "SearchOutcome": "tools.web",
    "SearchCache": "tools.web",
    "SearchError": "tools.web",
    "RateLimitError": "tools.web",
    "RateLimiter": "tools.web",
    "DDGSBackend": "tools.web",
    "SearxngBackend": "tools.web",
    "LocalDocsBackend": "tools.web",
    "BM25": "tools.web",
    "PythonTool": "tools.python_tool",
    "Limits": "tools.sandbox",
    "KernelPool": "tools.sandbox",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tools' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
