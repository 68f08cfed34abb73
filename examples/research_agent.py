"""A research agent: searches, reads pages with line numbers, cites them, and
keeps what it learns in vector memory for later runs.

    python examples/research_agent.py "What does the run log record?" --docs docs/ --memory notes.db

With `--docs` the search runs offline over a folder of documents (BM25);
without it, `web_search` uses DuckDuckGo (ddgs) and falls back to the next
backend when rate-limited. Answers cite page lines like `L12-L15`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent import Agent


class ResearchAgent(Agent):
    name = "research"
    system_prompt = (
        "You research questions. Search first, open the most relevant result, use find_in_page to locate "
        "the passage, and cite it as URL plus line range (e.g. L12-L15). Save durable facts with "
        "memory_save, and check memory_search before searching again. Answer in two or three sentences."
    )
    strategy = "plan-act-reflect"
    max_steps = 15


def make_agent(
    model: Any = None,
    *,
    docs_dir: str | None = None,
    memory_path: str | None = None,
    web_options: dict[str, Any] | None = None,
    embedder: Any = None,
    **kwargs: Any,
) -> ResearchAgent:
    from memory import VectorMemory
    from tools.web import make_tools as web_tools

    backends = ["local"] if docs_dir else None
    tools = web_tools(search_backends=backends, docs_dir=docs_dir, **(web_options or {}))
    memory = VectorMemory(memory_path or ".agent/research-notes.db", embedder)
    return ResearchAgent(model, tools=tools, memory=memory, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--docs", help="search this folder offline instead of the web")
    parser.add_argument("--memory", help="vector memory file (default .agent/research-notes.db)")
    args = parser.parse_args(argv)
    with make_agent(docs_dir=args.docs, memory_path=args.memory) as agent:
        result = agent.run_sync(args.question)
    print(result.answer if result.ok else f"{result.status}: {result.error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
