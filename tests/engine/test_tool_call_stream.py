"""The incremental tool-call parser (chat/tool_call_stream.py) against the whole-text one (chat/tool_calls.py): fed
a reply in pieces of every size, each call's deltas add up to the parsed name and ``json.dumps`` of the parsed
arguments; nothing is sent for a call before ``<function=...>`` is complete, or for a parameter before its value
is; headers and fragments of one feed merge per call."""

import json

import pytest

from qwen35_native.chat.tool_call_stream import ToolCallStream
from qwen35_native.chat.tool_calls import parse_tool_calls

TOOLS = [{"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "nights": {"type": "integer"}, "pets": {"type": "boolean"},
    "tags": {"type": "array"}, "note": {"type": "string"}}}}}]
REPLIES = [
    "<tool_call>\n<function=book>\n<parameter=city>\nParis\n</parameter>\n<parameter=nights>\n3\n</parameter>\n"
    "<parameter=pets>\nTrue\n</parameter>\n</function>\n</tool_call>",
    # a string value that looks like JSON stays a string; a list is decoded; a missing </parameter>
    "<tool_call>\n<function=book>\n<parameter=note>\n{\"a\": 1}\n</parameter>\n<parameter=tags>\n[\"x\", 2]\n"
    "<parameter=city>\nRome\n</function>\n</tool_call>",
    # two calls, one without parameters, a function the tools do not describe (values: JSON when they parse)
    "<tool_call>\n<function=now>\n</function>\n</tool_call>\n<tool_call>\n<function=other>\n<parameter=x>\n"
    "2.5\n</parameter>\n<parameter=y>\nplain text\nwith lines\n</parameter>\n</function>\n</tool_call>",
]


def run(reply: str, size: int):
    stream, deltas = ToolCallStream(TOOLS), []
    for i in range(0, len(reply), size):
        deltas.append(stream.feed(reply[i:i + size]))
    calls: dict[int, dict] = {}
    for feed in deltas:
        assert len({d["index"] for d in feed}) == len(feed)   # one entry per call and feed
        for d in feed:
            if d["index"] not in calls:
                assert d["type"] == "function" and d["id"].startswith("call_")
                calls[d["index"]] = {"id": d["id"], "name": d["function"]["name"], "arguments": ""}
            else:
                assert "name" not in d["function"] and "id" not in d
            calls[d["index"]]["arguments"] += d["function"]["arguments"]
    return calls, deltas


@pytest.mark.parametrize("size", [1, 2, 5, 17, 10_000])
@pytest.mark.parametrize("reply", range(len(REPLIES)))
def test_deltas_add_up_to_the_parsed_calls(reply, size):
    text = REPLIES[reply]
    calls, _ = run(text, size)
    _, parsed = parse_tool_calls(text, TOOLS)
    assert [c["name"] for c in calls.values()] == [p.name for p in parsed]
    for c, p in zip(calls.values(), parsed):
        assert c["arguments"] == json.dumps(p.arguments, ensure_ascii=False)
        assert json.loads(c["arguments"]) == p.arguments


def test_nothing_is_sent_early():
    stream = ToolCallStream(TOOLS)
    assert stream.feed("<tool_call>\n<function=bo") == []                     # the name may still grow
    (head,) = stream.feed("ok>\n<parameter=city>\nPar")
    assert head["function"] == {"name": "book", "arguments": ""}
    assert stream.feed("is") == []                                            # the value may still grow
    assert stream.feed("\n</parameter>") == [{"index": 0, "function": {"arguments": '{"city": "Paris"'}}]
    assert stream.feed("\n<parameter=nights>\n4\n</para") == []
    assert stream.feed("meter>\n</function>") == [{"index": 0, "function": {"arguments": ', "nights": 4}'}}]
    assert stream.feed("\n</tool_call>") == []
