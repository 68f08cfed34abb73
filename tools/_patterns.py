"""Regular expressions a model writes, matched within a time budget.

`re` holds the GIL for the whole of a match, so one pattern that backtracks
without end (`(a|aa)+$` on a line of a's) froze the process: the event loop,
Ctrl-C, every timeout and budget. The `regex` engine releases the GIL while it
matches (`concurrent=True`), avoids much of that backtracking, and stops at a
deadline. `VERSION0` keeps `re`'s syntax and behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from agent.tool import ToolError


class Pattern:
    """A compiled pattern whose matching, all calls together, may take `budget` seconds
    (only the time spent matching counts, not what the caller does between calls)."""

    def __init__(
        self, source: str, *, ignore_case: bool = False, multiline: bool = False, budget: float, shown: str = ""
    ) -> None:
        import regex  # 8 ms to import: only when a pattern is used, not with the tools

        flags = regex.VERSION0 | (regex.IGNORECASE if ignore_case else 0) | (regex.MULTILINE if multiline else 0)
        try:
            self._rx = regex.compile(source, flags)
        except (regex.error, OverflowError, RecursionError) as e:
            raise ToolError(f"Invalid regular expression {source!r}: {e}.") from None
        self.budget = budget
        self._left = budget
        self.shown = shown or source  # the pattern as the model wrote it, for the error

    def search(self, text: str) -> Any:
        """The first match in `text`; a ToolError (`too_slow`) once the budget is spent."""
        if self._left <= 0:
            raise self.too_slow()
        started = time.perf_counter()
        try:
            return self._rx.search(text, timeout=self._left, concurrent=True)
        except TimeoutError:
            raise self.too_slow() from None
        finally:
            self._left -= time.perf_counter() - started

    def finditer(self, text: str) -> Iterator[Any]:
        """The matches in `text`, one at a time; the time spent finding each counts."""
        if self._left <= 0:
            raise self.too_slow()
        matches = self._rx.finditer(text, timeout=self._left, concurrent=True)
        while True:
            if self._left <= 0:
                raise self.too_slow()
            started = time.perf_counter()
            try:
                match = next(matches)
            except StopIteration:
                return
            except TimeoutError:
                raise self.too_slow() from None
            finally:
                self._left -= time.perf_counter() - started
            yield match

    def too_slow(self) -> ToolError:
        """What the model is told when the budget ran out."""
        return ToolError(
            f"The pattern {self.shown!r} took over {self.budget:g} s to match and was stopped; it backtracks "
            "too much (nested repeats such as (a|aa)+ or (x+)+). Simplify it, or search for plain text."
        )


def escape(text: str) -> str:
    import regex

    return regex.escape(text)
