"""Reasoning split and Qwen XML tool-call parsing on crafted outputs, and the round trip parsed reply -> template ->
parsed reply. Code: python/qwen35_native/chat/{reasoning,tool_calls,output}.py."""

import json

import pytest

from qwen35_native.chat import (
    ToolCall,
    parse_chat_output,
    parse_tool_calls,
    prompt_opens_think,
    split_reasoning,
)

CALL = "<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


def _param(name, value):
    return f"<parameter={name}>\n{value}\n</parameter>\n"


@pytest.mark.parametrize("text,opened,expected", [
    ("Let me think.\n</think>\n\nThe answer is 4.", True, ("Let me think.", "The answer is 4.")),
    ("<think>\nhmm\n</think>\n\nAnswer", False, ("hmm", "Answer")),  # model opened the block itself
    ("  <think>\nhmm\n</think>\n\nAnswer", True, ("hmm", "Answer")),
    ("still thinking when the length limit hit", True, ("still thinking when the length limit hit", "")),
    ("<think>\nnever closed", False, ("never closed", "")),
    ("Plain answer, no thinking.", False, (None, "Plain answer, no thinking.")),
    ("\n</think>\n\nEmpty think", True, ("", "Empty think")),
    ("a</think>b</think>c", True, ("a", "b</think>c")),  # split on the first closing tag
])
def test_split_reasoning(text, opened, expected):
    assert split_reasoning(text, prompt_opened_think=opened) == expected


def test_prompt_opens_think():
    assert prompt_opens_think("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_think("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_think("<|im_start|>user\nhi<|im_end|>\n")
    assert prompt_opens_think("<think>\nold\n</think>\n\nx<|im_end|>\n<|im_start|>assistant\n<think>\n")


def test_single_call_with_typed_values():
    text = "Let me check.\n\n" + CALL.format(name="get_weather", params=_param("city", "Paris") + _param("days", "3")
                                            + _param("detail", "true") + _param("opts", '{"unit": "C", "n": [1, 2]}')
                                            + _param("note", "not json: {x}"))
    remaining, calls = parse_tool_calls(text)
    assert remaining == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 3, "detail": True, "opts": {"unit": "C", "n": [1, 2]},
                         "note": "not json: {x}"})]


def test_schema_types_decide_decoding():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {
        "code": {"type": "string"}, "flag": {"type": "boolean"}, "count": {"type": ["integer", "null"]}}}}}]
    text = CALL.format(name="f", params=_param("code", "123") + _param("flag", "True") + _param("count", "7")
                       + _param("other", "[1]"))
    _, calls = parse_tool_calls(text, tools)
    assert calls[0].arguments == {"code": "123", "flag": True, "count": 7, "other": [1]}
    _, calls = parse_tool_calls(text)  # without schemas: JSON-looking values are decoded
    assert calls[0].arguments["code"] == 123 and calls[0].arguments["flag"] == "True"


def test_several_calls_multiline_values_and_missing_parameter_close():
    multiline = "line one\n\n  indented line\nlast"
    text = (CALL.format(name="write", params=_param("path", "a.py") + _param("content", multiline)) + "\n"
            + "<tool_call>\n<function=read>\n<parameter=path>\nb.py\n<parameter=lines>\n10\n</function>\n</tool_call>")
    remaining, calls = parse_tool_calls(text)
    assert remaining == ""
    assert [(c.name, c.arguments) for c in calls] == [("write", {"path": "a.py", "content": multiline}),
                                                      ("read", {"path": "b.py", "lines": 10})]
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")


@pytest.mark.parametrize("bad", [
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",  # JSON format, not XML
    "<tool_call>\n<function=f>\nstray text\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>",
    "<tool_call>\n<function=>\n</function>\n</tool_call>",
    "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n",  # never closed (length limit)
])
def test_malformed_calls_stay_in_text(bad):
    good = CALL.format(name="ok", params=_param("x", "1"))
    remaining, calls = parse_tool_calls("before " + bad + "\n" + good)
    assert [c.name for c in calls] == ["ok"] and bad.strip() in remaining and remaining.startswith("before")
    assert parse_tool_calls(bad) == (bad, [])


def test_parse_chat_output_combines_reasoning_and_calls():
    inner_call = CALL.format(name="draft", params=_param("x", "1"))
    text = ("I should call it. " + inner_call + "\n</think>\n\nCalling now.\n\n"
            + CALL.format(name="get_weather", params=_param("city", "Oslo")))
    out = parse_chat_output(text, prompt_opened_think=True)
    assert out.reasoning.startswith("I should call it.") and inner_call in out.reasoning  # not executed
    assert out.text == "Calling now." and [c.name for c in out.tool_calls] == ["get_weather"]
    openai = out.tool_calls[0].to_openai()
    assert openai["type"] == "function" and json.loads(openai["function"]["arguments"]) == {"city": "Oslo"}
    message = out.to_message()
    assert message["role"] == "assistant" and message["reasoning_content"] == out.reasoning
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    plain = parse_chat_output("Just text", prompt_opened_think=False)
    assert (plain.reasoning, plain.text, plain.tool_calls) == (None, "Just text", [])
    assert "reasoning_content" not in plain.to_message()


def test_round_trip_through_the_template(tokenizer):
    """A parsed reply, sent back as history, renders the same call markup the parser reads."""
    calls = [ToolCall("search", {"query": "a\nb", "limit": 5, "exact": False, "filters": {"lang": "en"}}),
             ToolCall("get_weather", {"city": "Paris"})]
    message = {"role": "assistant", "content": "Working on it.", "reasoning_content": "plan",
               "tool_calls": [c.to_message() for c in calls]}
    text = tokenizer.apply_chat_template([{"role": "user", "content": "go"}, message])
    reply = text.split("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")
    out = parse_chat_output(reply, prompt_opened_think=False)
    assert out.reasoning == "plan" and out.text == "Working on it."
    assert [(c.name, c.arguments) for c in out.tool_calls] == [(c.name, c.arguments) for c in calls]
