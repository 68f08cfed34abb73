"""Property tests of the output-parser ladder: it never raises, whatever the text.

Random text, text made of the formats' markers, and every corpus output cut
at a random point go through `parse_output` with every family; the stream
splitters and `loads_lenient` get the same treatment.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_parse_ladder import CALL, CH, CON, CORPUS, END, RET, M, S  # noqa: E402

from agent.llm.formats import loads_lenient, parse_output, stream_splitter  # noqa: E402

PIECES = [
    S, CH, M, END, CALL, RET, CON, "assistant", "analysis", "final", "commentary", " to=functions.f", " json",
    "<think>", "</think>", "[THINK]", "[/THINK]", "<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]",
    "[ARGS]", "[CALL_ID]", "<function=f>", "<parameter=x>", "</parameter>", "</function>", "```json\n", "```",
    '{"name": "f", "arguments": ', '{"name": "f", "parameters": ', "{", "}", "[", "]", '"', "'", ",", ":", ";",
    "True", "None", "1", "x", " ", "\n", "\\", "<|eot_id|>", "</s>", "<|im_end|>",
]  # fmt: skip
FAMILIES = [None, "harmony", "hermes", "llama3", "mistral", "json"]
marked_text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=40).map("".join)


def _check(parsed):
    assert isinstance(parsed.content, str) and isinstance(parsed.thinking, str)
    for call in parsed.tool_calls:
        assert isinstance(call.name, str)
        assert (call.arguments is None) == (call.parse_error is not None)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=marked_text, family=st.sampled_from(FAMILIES))
def test_the_ladder_never_raises_on_marked_up_noise(text, family):
    _check(parse_output(text, family))


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text(max_size=200), family=st.sampled_from(FAMILIES))
def test_the_ladder_never_raises_on_random_text(text, family):
    _check(parse_output(text, family))


@settings(max_examples=300, deadline=None, database=None)
@given(entry=st.sampled_from(CORPUS), cut=st.floats(0, 1), family=st.sampled_from(FAMILIES))
def test_the_ladder_never_raises_on_truncated_outputs(entry, cut, family):
    text = entry["text"][: int(len(entry["text"]) * cut)]
    _check(parse_output(text, family))


@settings(max_examples=200, deadline=None, database=None)
@given(text=marked_text, size=st.integers(1, 9), harmony=st.booleans())
def test_the_stream_splitters_never_raise(text, size, harmony):
    splitter = stream_splitter("harmony" if harmony else None)
    for i in range(0, len(text), size):
        splitter.feed(text[i : i + size])
    splitter.finish()


@settings(max_examples=300, deadline=None, database=None)
@given(text=marked_text)
def test_loads_lenient_only_raises_decode_errors(text):
    try:
        loads_lenient(text)
    except json.JSONDecodeError:
        pass
