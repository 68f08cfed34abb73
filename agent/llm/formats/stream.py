"""Stream splitters: route generated text into content and thinking deltas
while it streams, holding back tool calls (the final response carries them
parsed), so the deltas add up to the parsed content and thinking."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ...events import ModelDelta
from .base import THINK_CLOSE, THINK_TAGS, without_cut_close
from .deepseek import CALLS_BEGIN
from .harmony import OPENERS as HARMONY_OPENERS
from .harmony import HarmonyFormat, HarmonyReader, partial_marker_len
from .hermes import CALL_CLOSE, CALL_OPEN, PHI_CALL_CLOSE, PHI_CALL_OPEN
from .llama import PYTHON_TAG
from .mistral import TOOL_CALLS

#: Call markers and what closes them (None: the call runs to the end of the turn).
HIDDEN_TAGS: tuple[tuple[str, str | None], ...] = (
    (CALL_OPEN, CALL_CLOSE),
    (PHI_CALL_OPEN, PHI_CALL_CLOSE),
    (TOOL_CALLS, None),
    (PYTHON_TAG, None),
    (CALLS_BEGIN, None),
)
# A reply that may be calls as a whole: a list of JSON objects, or of Python-style calls
# (Llama 3.2 / 4); and the start of one that may still become the latter.
_LIST_OF_OBJECTS = re.compile(r"\[\s*(?:\{|[A-Za-z_][\w.]*\()")
_MAYBE_CALL_LIST = re.compile(r"\[\s*[A-Za-z_][\w.]*")


class _Trimmed:
    """Emits text without its leading and trailing whitespace, like `.strip()`
    on the concatenation, holding trailing whitespace until more text comes."""

    def __init__(self) -> None:
        self.started = False
        self.pending = ""

    def push(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        text = self.pending + text
        kept = text.rstrip()
        self.pending = text[len(kept) :]
        return kept


def _in_json_string(text: str) -> bool:
    """Whether `text`, the start of a JSON object, ends inside one of its strings."""
    start = text.find("{")
    if start < 0 or text[:start].strip():
        return False
    inside = escaped = False
    for ch in text[start:]:
        if escaped:
            escaped = False
        elif ch == "\\" and inside:
            escaped = True
        elif ch == '"':
            inside = not inside
    return inside


class TagStreamSplitter:
    """Splits text that marks thinking and calls with tags (`<think>`,
    `<tool_call>`, `[TOOL_CALLS]`, `<|python_tag|>`...).

    With `hold_json`, a reply whose content starts with `{` is held back to
    the end (it may be a bare JSON call) and then parsed with `parse_output`.
    """

    def __init__(
        self,
        *,
        in_thinking: bool = False,
        think_tags: Sequence[tuple[str, str]] = THINK_TAGS,
        hidden_tags: Sequence[tuple[str, str | None]] = HIDDEN_TAGS,
        hold_json: bool = True,
    ) -> None:
        self.opens: dict[str, tuple[str, str | None]] = {o: ("thinking", c) for o, c in think_tags}
        self.opens.update({o: ("call", c) for o, c in hidden_tags})
        self.state = "thinking" if in_thinking else "content"
        self.close: str | None = THINK_CLOSE if in_thinking else None
        self.hold_json = hold_json
        self.fed = ""  # everything fed, when JSON may be held: the whole reply decides its content
        self.shown = ""  # the content emitted so far
        self.held = ""
        self.buffer = ""
        self.content = _Trimmed()
        self.thinking = _Trimmed()
        self.thinking_blocks = 0
        self.call = ""  # the held call so far: a close tag inside its JSON strings is its text

    def _tags(self) -> tuple[str, ...]:
        if self.state == "content":
            return tuple(self.opens)
        return (self.close,) if self.close else ()

    def _emit(self, text: str, out: list[ModelDelta]) -> None:
        if not text:
            return
        if self.state == "call":
            self.call += text
        elif self.state == "content":
            piece = self.content.push(text)
            if piece:
                self.shown += piece
                out.append(ModelDelta(content=piece))
        elif self.state == "thinking":
            starting = not self.thinking.started
            piece = self.thinking.push(text)
            if piece:
                if starting and self.thinking_blocks:
                    piece = "\n" + piece
                out.append(ModelDelta(thinking=piece))

    def feed(self, text: str) -> list[ModelDelta]:
        out: list[ModelDelta] = []
        if self.hold_json:
            self.fed += text
        if self.state == "held":
            self.held += text
            return out
        self.buffer += text
        while True:
            if self.state == "content" and self.hold_json:
                if not self.content.started:
                    head = self.buffer.lstrip()
                    if head.startswith("{") or _LIST_OF_OBJECTS.match(head):
                        self.state, self.held, self.buffer = "held", head, ""
                        return out
                    if _MAYBE_CALL_LIST.fullmatch(head):  # "[get_wea": wait for what follows the name
                        return out
            tags = self._tags()
            hits = [(i, t) for t in tags if (i := self.buffer.find(t)) >= 0]
            if self.state == "content" and self.hold_json:
                # A line that opens a JSON object after some text may be a bare call (Llama 3 style).
                line = self.buffer.find("\n{")
                if line >= 0 and (not hits or line < min(hits)[0]):
                    self._emit(self.buffer[:line], out)
                    self.state, self.held, self.buffer = "held", self.buffer[line + 1 :], ""
                    return out
            if not hits:
                keep = partial_marker_len(self.buffer, tags) if tags else 0
                if self.hold_json and self.state == "content" and self.buffer.endswith("\n"):
                    keep = max(keep, 1)  # the next piece may open a JSON line
                self._emit(self.buffer[: len(self.buffer) - keep], out)
                self.buffer = self.buffer[len(self.buffer) - keep :]
                return out
            index, tag = min(hits)
            self._emit(self.buffer[:index], out)
            self.buffer = self.buffer[index + len(tag) :]
            if self.state == "call" and _in_json_string(self.call):  # `"s = '</tool_call>'"`
                self.call += tag
                continue
            if self.state == "content":
                self.state, self.close = self.opens[tag]
                self.call = ""
            else:
                if self.state == "thinking" and self.thinking.started:
                    self.thinking_blocks += 1
                    self.thinking = _Trimmed()
                self.state, self.close = "content", None

    def finish(self) -> list[ModelDelta]:
        out: list[ModelDelta] = []
        if self.state == "call" and self.close and self.close in self.call:
            # A close tag taken for text inside the call's JSON, whose string then never ended (a
            # broken call): the call ended there after all, and what followed is the reply's.
            rest = self.call[self.call.index(self.close) + len(self.close) :] + self.buffer
            self.state, self.close, self.call, self.buffer = "content", None, "", ""
            out.extend(self.feed(rest))
        if self.state == "held":
            from . import parse_output

            parsed = parse_output(self.held)
            self.state = "content"
            if self.content.started:  # text came before: the whole reply says what its content is
                whole = parse_output(self.fed).content
                shown = self.shown
                rest = whole[len(shown) :] if whole.startswith(shown) else "\n" + parsed.content
                self.content.pending = ""  # `rest` carries the white space between
                self._emit(rest, out)
            else:
                self._emit(parsed.content, out)
            if parsed.thinking:
                self.state = "thinking"
                if self.thinking.started:
                    self.thinking_blocks += 1
                    self.thinking = _Trimmed()
                self._emit(parsed.thinking, out)
            self.held = ""
            return out
        if self.state == "thinking" and self.close:  # a close tag cut while it was written
            self.buffer = without_cut_close(self.buffer, self.close)
        self._emit(self.buffer, out)
        self.buffer = ""
        return out


class HarmonyStreamSplitter:
    """Splits harmony text: `analysis` bodies are thinking, `final` and
    preamble bodies are content, calls are held back."""

    def __init__(self, *, in_thinking: bool = False) -> None:
        self.reader = HarmonyReader(self._piece)
        self.out: list[ModelDelta] = []
        self.trimmed = {"content": _Trimmed(), "thinking": _Trimmed()}
        self.any = {"content": False, "thinking": False}

    def _piece(self, kind: str, text: str, first: bool) -> None:
        if first:
            self.trimmed[kind] = _Trimmed()
        trimmed = self.trimmed[kind]
        starting = not trimmed.started
        piece = trimmed.push(text)
        if piece:
            if starting and self.any[kind]:
                piece = "\n" + piece
            self.any[kind] = True
            self.out.append(ModelDelta(**{kind: piece}))

    def _take(self) -> list[ModelDelta]:
        out, self.out = self.out, []
        return out

    def feed(self, text: str) -> list[ModelDelta]:
        self.reader.feed(text)
        return self._take()

    def finish(self) -> list[ModelDelta]:
        self.reader.finish()
        return self._take()


class AutoStreamSplitter:
    """For text whose format is not known beforehand (a server that parses nothing):
    harmony when the reply opens with harmony markup, the tag splitter otherwise. The
    first characters are held only while they may still become that markup."""

    def __init__(self, **tag_options: Any) -> None:
        self.tag_options = tag_options
        self.inner: TagStreamSplitter | HarmonyStreamSplitter | None = None
        self.head = ""

    @property
    def content(self) -> _Trimmed | None:
        """The content the inner splitter holds back (see `_Trimmed`), once it is chosen."""
        return getattr(self.inner, "content", None)

    def _choose(self) -> list[ModelDelta]:
        """Pick the splitter by the text held so far, and feed it that text."""
        head, self.head = self.head, ""
        options: dict[str, Any] = self.tag_options
        self.inner = HarmonyStreamSplitter() if HarmonyFormat.opens(head) else TagStreamSplitter(**options)
        return self.inner.feed(head)

    def feed(self, text: str) -> list[ModelDelta]:
        if self.inner is not None:
            return self.inner.feed(text)
        self.head += text
        start = self.head.lstrip()
        if not start or any(opener.startswith(start) for opener in HARMONY_OPENERS):
            return []  # "", "<", "<|cha": wait for what it becomes
        return self._choose()

    def finish(self) -> list[ModelDelta]:
        out = self._choose() if self.inner is None else []
        return out + self.inner.finish()  # type: ignore[union-attr]
