"""Lenient JSON for tool calls: repair, scanning, and building calls.

Small models get JSON slightly wrong: code fences around it, trailing commas,
single quotes, Python's `True`/`None`, a missing closing brace or two, keys
without quotes. `loads_lenient` forgives those (and nothing that loses data: an
unterminated string stays an error). The scanners find where a JSON value
ends without decoding it, so a parser can cut a message into calls and text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ...types import ToolCallRequest

_FENCE = re.compile(r"^```[\w-]*[ \t]*\n?|\s*```$")
_NAME = re.compile(r"""["']name["']\s*:\s*["']([^"'\\]+)["']""")
_PY_WORDS = {"True": "true", "False": "false", "None": "null"}
_WORD = re.compile(r"(?:[^\W\d]|\$)[\w$.-]*")
_ESCAPES = frozenset('"\\/bfnrtu')
_CLOSERS_ONLY = re.compile(r"[\s}\]);,]*")

# Keys that say "this object is a tool call".
NAME_KEY = re.compile(r"""["']name["']\s*:""")
ARGS_KEY = re.compile(r"""["'](?:arguments|parameters)["']\s*:""")


def unfence(text: str) -> str:
    """The text stripped, without a Markdown code fence around it."""
    text = text.strip()
    if text.startswith("```") or text.endswith("```"):
        return _FENCE.sub("", text)
    return text


def repair_json(text: str) -> tuple[str, str] | None:
    """Rewrite almost-JSON into JSON: (repaired first value, text after it).

    Converts single-quoted strings, Python literals and bare keys, drops
    trailing commas and // or /* */ comments, and closes brackets left open
    at the end. Returns None
    when a string is left unterminated (the text was cut off mid-value).
    """
    i, n = skip_space(text, 0), len(text)
    if i >= n or text[i] not in "{[":
        return None
    out: list[str] = []
    stack: list[str] = []
    while i < n:
        ch = text[i]
        if ch == '"' or ch == "'":
            j = i + 1
            buf: list[str] = []
            while j < n:
                c = text[j]
                if c == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    if nxt == "'":  # \' is no JSON escape
                        buf.append("'")
                    elif nxt in _ESCAPES:
                        buf.append(c + nxt)
                    else:  # a lone backslash, as in a Windows path
                        buf.append("\\\\" + nxt)
                    j += 2
                    continue
                if c == ch:
                    break
                buf.append('\\"' if (ch == "'" and c == '"') else c)
                j += 1
            if j >= n:
                return None
            out.append('"' + "".join(buf) + '"')
            i = j + 1
        elif ch == "/" and text.startswith(("//", "/*"), i):  # a comment (outside strings)
            end = text.find("\n", i) if text[i + 1] == "/" else text.find("*/", i + 2)
            i = n if end < 0 else end + (0 if text[i + 1] == "/" else 2)
        elif ch == "{" or ch == "[":
            stack.append("}" if ch == "{" else "]")
            out.append(ch)
            i += 1
        elif ch == "}" or ch == "]":
            while out and (out[-1] == "," or out[-1].isspace()):
                out.pop()
            if stack[-1] != ch:  # "}" where "]" was due (or the reverse): close the inner one
                out.append(stack.pop())
                if not stack:
                    return "".join(out), text[i:]
                continue
            stack.pop()
            out.append(ch)
            i += 1
            if not stack:
                return "".join(out), text[i:]
        elif (m := _WORD.match(text, i)) is not None:
            word = m.group(0)
            j = m.end()
            while j < n and text[j] in " \t\r\n":
                j += 1
            if word in _PY_WORDS:
                out.append(_PY_WORDS[word])
            elif word in ("true", "false", "null"):
                out.append(word)
            elif stack and stack[-1] == "}" and j < n and text[j] == ":":
                out.append(json.dumps(word))  # a bare key
            else:
                out.append(word)
            i = m.end()
        else:
            out.append(ch)
            i += 1
    while out and (out[-1] == "," or out[-1].isspace()):
        out.pop()
    out.extend(reversed(stack))
    return "".join(out), ""


_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def loads_lenient(text: str) -> Any:
    """`json.loads` that forgives code fences, trailing commas, single quotes,
    Python literals, bare keys and missing closing brackets at the end.

    Raises the `json.JSONDecodeError` of the plain parse when nothing helps.
    """
    text = unfence(text)
    try:
        return _loads(text)
    except json.JSONDecodeError as first_error:
        error = first_error
    try:
        return _loads(text, strict=False)  # raw newlines or tabs inside strings
    except json.JSONDecodeError:
        pass
    repaired = repair_json(text)
    if repaired is not None:
        value, after = repaired
        after = _COMMENTS.sub("", after)  # a comment after the value is no extra data
        if not after.strip() or _CLOSERS_ONLY.fullmatch(after):
            try:
                return _loads(value, strict=False)
            except json.JSONDecodeError:
                pass
    raise error


def _loads(text: str, *, strict: bool = True) -> Any:
    """`json.loads`, with a value nested past the interpreter's recursion limit (a model
    that writes a thousand "[") as a decoding error like any other."""
    try:
        return json.loads(text, strict=strict)
    except RecursionError:
        raise json.JSONDecodeError("the value is nested too deeply to read", text, 0) from None


# --------------------------------------------------------------------------- scanning


def value_end(text: str, start: int) -> int:
    """Index just past the JSON-ish object or array opening at `start`
    (balanced brackets, strings in either quote), or len(text) if it never closes."""
    depth = 0
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if ch == '"' or ch == "'":
            i += 1
            while i < n and text[i] != ch:
                i += 2 if text[i] == "\\" else 1
        elif ch == "{" or ch == "[":
            depth += 1
        elif ch == "}" or ch == "]":
            depth -= 1
            if depth <= 0:
                return i + 1
        i += 1
    return n


def skip_space(text: str, pos: int, extra: str = "") -> int:
    n = len(text)
    while pos < n and (text[pos].isspace() or text[pos] in extra):
        pos += 1
    return pos


# --------------------------------------------------------------------------- calls


def call_error(name: str, raw: str, error: str) -> ToolCallRequest:
    return ToolCallRequest(name=name, raw_arguments=raw, parse_error=error)


def call_from_parts(name: str, args: Any, raw: str = "") -> ToolCallRequest:
    """A call from a name and decoded (or still encoded) arguments."""
    if isinstance(args, str):  # some models double-encode the arguments
        if not args.strip():
            args = {}
        else:
            try:
                args = loads_lenient(args)
            except json.JSONDecodeError as e:
                return call_error(name, args, f"the arguments are not valid JSON ({e.msg})")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return call_error(name, raw or json.dumps(args), '"arguments" must be a JSON object')
    return ToolCallRequest(name=name, arguments=args)


def json_problem(e: json.JSONDecodeError) -> str:
    """What is wrong with some JSON and where: "Expecting ',' delimiter at character 12"
    (a message that ends in "at", such as "Unterminated string starting at", is not given another)."""
    at = "" if e.msg.endswith(" at") else " at"
    return f"{e.msg}{at} character {e.pos}"


def call_from_text(name: str, raw: str) -> ToolCallRequest:
    """A call from a name and the text of its arguments (blank: no arguments)."""
    if not raw.strip():
        return call_from_parts(name, {}, raw)
    try:
        args = loads_lenient(raw)
    except json.JSONDecodeError as e:
        return call_error(name, raw, f"the arguments are not valid JSON ({json_problem(e)})")
    return call_from_parts(name, args, raw)


def call_from_obj(obj: Any, raw: str) -> ToolCallRequest:
    """A call from a decoded `{"name": ..., "arguments": {...}}` object
    (`parameters` for `arguments`, and the OpenAI `{"function": {...}}` shape, work too)."""
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict) and "name" not in obj:
        obj = obj["function"]
    elif isinstance(obj, dict) and isinstance(obj.get("function"), str) and "name" not in obj:
        obj = {**obj, "name": obj["function"]}  # {"function": "add", "arguments": {...}}, as Llama 3 writes
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
        return call_error(
            "",
            raw.strip(),
            'a tool call must be a JSON object with a "name" string and an "arguments" object',
        )
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters", {})
    return call_from_parts(obj["name"].strip(), args, raw)


def call_from_json(text: str) -> ToolCallRequest:
    """Build a call from `{"name": ..., "arguments": {...}}` text."""
    try:
        obj = loads_lenient(text)
    except json.JSONDecodeError as e:
        m = _NAME.search(text)
        return call_error(
            m.group(1) if m else "",
            text.strip(),
            f"the tool call is not valid JSON ({json_problem(e)})",
        )
    return call_from_obj(obj, text)


def calls_from_json_text(text: str) -> list[ToolCallRequest]:
    """Every call in a block of JSON text: one object, a list of objects, or
    several objects one after another (separated by space, `,` or `;`)."""
    stripped = unfence(text)
    try:
        obj = loads_lenient(stripped)
    except json.JSONDecodeError:
        obj = None
    else:
        if isinstance(obj, list):
            return [call_from_obj(item, json.dumps(item)) for item in obj] if obj else []
        return [call_from_obj(obj, stripped)]
    calls, rest = call_sequence(stripped)
    if len(calls) > 1 and not rest.strip():
        return calls
    return [call_from_json(stripped)]


def call_sequence(text: str) -> tuple[list[ToolCallRequest], str]:
    """Read JSON call objects (or one list of them) from the start of `text`,
    separated by space, `;` or `,`. Returns (calls, the text after them)."""
    calls: list[ToolCallRequest] = []
    pos = skip_space(text, 0)
    n = len(text)
    if pos < n and text[pos] == "[":
        end = value_end(text, pos)
        segment = text[pos:end]
        try:
            items = loads_lenient(segment)
        except json.JSONDecodeError as e:
            m = _NAME.search(segment)
            return [
                call_error(
                    m.group(1) if m else "",
                    segment.strip(),
                    f"the tool calls are not valid JSON ({json_problem(e)})",
                )
            ], text[end:]
        if isinstance(items, list):
            return [call_from_obj(item, json.dumps(item)) for item in items], text[end:]
        return [call_from_obj(items, segment)], text[end:]
    while pos < n and text[pos] == "{":
        end = value_end(text, pos)
        calls.append(call_from_json(text[pos:end]))
        pos = skip_space(text, end, ";,")
    return calls, text[pos:]
