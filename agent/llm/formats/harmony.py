"""The harmony format of gpt-oss.

A turn is a run of messages, each a header and a body:

    <|start|>assistant<|channel|>analysis<|message|>Let me look it up.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>
    <|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>

The `analysis` channel is thinking, `final` (and `commentary` without a
recipient, the "preamble") is content, and a message with a recipient
(`to=functions.NAME`) is a tool call on whatever channel it is written.

The reader is forgiving about headers: the recipient may come before or
after the channel, `<|start|>assistant` may be missing (the prompt wrote it,
or the decoder dropped it), `<|constrain|>json` or a bare `json` may be
there or not, and end tokens may be gone (a generation loop that stops on
`<|call|>` or `<|return|>` drops them), so a new header also ends a body.
Text cut off at the end is read as far as it goes.

`HarmonyReader` works incrementally, so the same code serves the parser and
the stream splitter.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ...types import ToolCallRequest
from .base import ChatFormat, ParsedOutput, output
from .jsonfix import call_error, call_from_text

MARKERS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|call|>", "<|return|>")
_MARKER = re.compile(r"<\|(start|end|message|channel|constrain|call|return)\|>")
_RECIPIENT = re.compile(r"(?:^|\s)to=([^\s<]+)")
_ROLE_ONLY = re.compile(r"\s*(?:assistant)?\s*")
_NOT_RECIPIENTS = frozenset({"assistant", "user", "system", "developer", "all"})

#: A listener is told (kind, text, first) for each piece of body text as it
#: arrives: kind is "content" or "thinking", first is True on a message's first piece.
Listener = Callable[[str, str, bool], None]


def partial_marker_len(text: str, markers: tuple[str, ...] = MARKERS) -> int:
    """Length of the longest end of `text` that begins one of `markers`."""
    best = 0
    tail = text[-max(map(len, markers), default=0) :]
    for marker in markers:
        for n in range(min(len(marker) - 1, len(tail)), best, -1):
            if tail.endswith(marker[:n]):
                best = n
                break
    return best


#: How raw harmony output begins.
OPENERS = ("<|channel|>", "<|start|>", "<|message|>")


class _Header:
    __slots__ = ("parts",)

    def __init__(self, first: str = "") -> None:
        self.parts: list[list[str]] = [[first, ""]]  # [marker, text after it]

    def has(self, marker: str) -> bool:
        return any(p[0] == marker for p in self.parts)

    def add_text(self, text: str) -> None:
        self.parts[-1][1] += text

    def read(self) -> tuple[str, str, str, str]:
        """(role, channel, recipient, orphan text) of the header."""
        role = channel = recipient = orphan = ""
        for marker, text in self.parts:
            m = _RECIPIENT.search(text)
            if m and not recipient:
                recipient = m.group(1)
            words = [w for w in text.split() if not w.startswith("to=")]
            if marker == "start":
                role = words[0] if words else role
            elif marker == "channel":
                channel = words[0] if words else channel
            elif marker == "" and text.strip() and not m:
                if _ROLE_ONLY.fullmatch(text):
                    role = "assistant"
                else:  # plain text where a header should be: the model skipped the header
                    orphan = text
        return role, channel, recipient, orphan

    def is_empty(self) -> bool:
        return len(self.parts) == 1 and self.parts[0][0] == "" and not self.parts[0][1].strip()


class HarmonyReader:
    """Reads harmony text piece by piece into content, thinking and calls."""

    def __init__(self, listener: Listener | None = None) -> None:
        self.listener = listener
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.calls: list[ToolCallRequest] = []
        self.buffer = ""
        self.header: _Header | None = _Header()
        self.kind = ""  # of the open body: "content", "thinking", "call" or "ignore"
        self.name = ""
        self.body: list[str] = []

    # -- input

    def feed(self, text: str) -> None:
        buffer = self.buffer + text
        pos = 0
        for m in _MARKER.finditer(buffer):
            self._text(buffer[pos : m.start()])
            self._marker(m.group(1))
            pos = m.end()
        rest = buffer[pos:]
        keep = partial_marker_len(rest) if "<" in rest[-16:] else 0
        self._text(rest[: len(rest) - keep])
        self.buffer = rest[len(rest) - keep :]

    def finish(self) -> None:
        self._text(self.buffer)
        self.buffer = ""
        if self.header is not None:
            self._abandon_header(cut_off=True)
        else:
            self._close_body()
        self.header = _Header()

    def result(self) -> ParsedOutput:
        return output(_join(self.content), _join(self.thinking), self.calls, "harmony")

    # -- the state machine

    def _text(self, text: str) -> None:
        if not text:
            return
        if self.header is not None:
            self.header.add_text(text)
            return
        first = not self.body
        self.body.append(text)
        if self.listener is not None and self.kind in ("content", "thinking"):
            self.listener(self.kind, text, first)

    def _marker(self, marker: str) -> None:
        header = self.header
        if header is None:  # in a body
            if marker in ("message", "constrain"):  # not a boundary: keep it as text
                self._text(f"<|{marker}|>")
                return
            self._close_body()
            self.header = _Header("start" if marker == "start" else "channel" if marker == "channel" else "")
            return
        if marker == "message":
            self._open_body(header)
        elif marker == "start":
            self._abandon_header()
            self.header = _Header("start")
        elif marker == "channel":
            if header.has("channel"):
                self._abandon_header()
                self.header = _Header("channel")
            else:
                header.parts.append(["channel", ""])
        elif marker == "constrain":
            header.parts.append(["constrain", ""])
        else:  # end, call, return: a header that never got a message
            self._abandon_header()
            self.header = _Header()

    def _open_body(self, header: _Header) -> None:
        role, channel, recipient, orphan = header.read()
        if orphan:
            self._orphan(orphan)
        self.header = None
        self.body = []
        if role not in ("", "assistant"):
            self.kind = "ignore"  # e.g. a tool's reply the model wrote itself
        elif recipient and recipient not in _NOT_RECIPIENTS:
            self.kind = "call"
            self.name = recipient.removeprefix("functions.")
        elif channel == "analysis":
            self.kind = "thinking"
        else:
            self.kind = "content"
        if self.kind in ("content", "thinking"):
            (self.content if self.kind == "content" else self.thinking).append("")

    def _close_body(self) -> None:
        body = "".join(self.body)
        if self.kind == "call":
            self.calls.append(_call(self.name, body))
        elif self.kind == "content":
            self.content[-1] = body
        elif self.kind == "thinking":
            self.thinking[-1] = body
        self.body = []
        self.kind = ""

    def _abandon_header(self, cut_off: bool = False) -> None:
        """A header ended without `<|message|>`: keep stray text, report a lost call."""
        header = self.header
        self.header = None
        if header is None or header.is_empty():
            return
        role, _channel, recipient, orphan = header.read()
        if orphan:
            self._orphan(orphan)
        if recipient and recipient not in _NOT_RECIPIENTS and role in ("", "assistant"):
            name = recipient.removeprefix("functions.")
            why = "the output ended" if cut_off else "it has no <|message|> part"
            self.calls.append(call_error(name, "", f"the call to {name} has no arguments: {why}"))

    def _orphan(self, text: str) -> None:
        self.content.append(text)
        if self.listener is not None:
            self.listener("content", text, True)


def _join(parts: list[str]) -> str:
    return "\n".join(p for p in (part.strip() for part in parts) if p)


def _call(name: str, body: str) -> ToolCallRequest:
    if not name:
        return call_error("", body.strip(), "the tool call has no recipient name")
    return call_from_text(name, body.strip())


class HarmonyFormat(ChatFormat):
    name = "harmony"
    template_markers = ("<|channel|>",)

    def detect(self, source: object) -> bool:
        if isinstance(source, str):
            return self.detect_text(source)
        return self.detect_tokenizer(source)

    def detect_text(self, text: str) -> bool:
        return "<|channel|>" in text or "<|message|>" in text

    @staticmethod
    def opens(text: str) -> bool:
        """Whether `text` begins as raw harmony output does (a server that parses nothing)."""
        return text.lstrip().startswith(OPENERS)

    def parse(self, text: str) -> ParsedOutput:
        reader = HarmonyReader()
        reader.feed(text)
        reader.finish()
        return reader.result()
