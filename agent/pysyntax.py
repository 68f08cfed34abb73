"""Python syntax trees, read again when CPython's thread race on them failed the read.

CPython before 3.11.8 and 3.12.2 (gh-106905) keeps one depth counter for every thread
that builds syntax trees: two threads at it at once (a model's first generation imports
much of torch on its worker while the loop reads a reply) can fail one with a
`SystemError`, though nothing is wrong with its code. Reading again succeeds.
"""

from __future__ import annotations

import ast
from typing import Literal

_RACE = "AST constructor recursion depth mismatch"


def is_ast_race(error: BaseException) -> bool:
    """Whether `error` is that race's failure, not the code's or the program's."""
    return isinstance(error, SystemError) and _RACE in str(error)


def parse(
    source: str, mode: Literal["exec", "eval", "single"] = "exec"
) -> ast.Module | ast.Expression | ast.Interactive:
    """`ast.parse`, read once more when the race failed it."""
    try:
        return ast.parse(source, mode=mode)
    except SystemError as e:
        if not is_ast_race(e):
            raise
        return ast.parse(source, mode=mode)
