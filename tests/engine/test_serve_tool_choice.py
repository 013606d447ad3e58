"""Forced tool calls in the OpenAI server: ``tool_choice`` {"type": "function", "function": {"name": ...}} and
"required" constrain the answer to JSON (vLLM's way) and come back as parsed ``tool_calls``, streamed or not; with
thinking on, the reasoning stays free and the grammar applies after ``</think>``; bad choices are 400s naming
``tool_choice``. The tools have enum-only parameters, so the tiny model's constrained answers end within the budget.
Code: python/qwen35_native/serve/tool_choice.py, protocol.py (_tools), api.py."""

import json

import pytest

from openai_client import post, stream

pytest.importorskip("xgrammar")

PATH = "/v1/chat/completions"
USER = [{"role": "user", "content": "Turn the lamp on, please."}]
MODE = {"type": "function", "function": {"name": "set_mode", "description": "Switch the lamp", "parameters": {
    "type": "object", "properties": {"mode": {"type": "string", "enum": ["on", "off"]}},
    "required": ["mode"], "additionalProperties": False}}}
LEVEL = {"type": "function", "function": {"name": "set_level", "parameters": {
    "type": "object", "properties": {"level": {"type": "integer", "enum": [1, 2, 3]}},
    "required": ["level"], "additionalProperties": False}}}
NAMED = {"type": "function", "function": {"name": "set_mode"}}
NO_THINK = {"enable_thinking": False}


def _valid(call):
    args = json.loads(call["function"]["arguments"])
    if call["function"]["name"] == "set_mode":
        return set(args) == {"mode"} and args["mode"] in ("on", "off")
    return call["function"]["name"] == "set_level" and set(args) == {"level"} and args["level"] in (1, 2, 3)


def test_a_named_choice_returns_that_call(served):
    server, _ = served
    body = {"messages": USER, "tools": [MODE, LEVEL], "tool_choice": NAMED, "temperature": 1.0, "seed": 0,
            "max_tokens": 60, "chat_template_kwargs": NO_THINK}
    status, out = post(server.url, PATH, body)
    assert status == 200, out
    choice = out["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "set_mode" and _valid(calls[0]), calls
    assert choice["message"]["content"] is None and choice["finish_reason"] == "stop"   # OpenAI's, for a named call
    status, events = stream(server.url, PATH, body)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [c for e in events[:-1] for c in e["choices"]]
    assert not any(c["delta"].get("content") for c in chunks)   # the JSON answer is not sent as text
    last = chunks[-1]
    assert last["finish_reason"] == "stop"
    assert [c["function"] for c in last["delta"]["tool_calls"]] == [c["function"] for c in calls]


def test_required_returns_one_or_more_calls_of_the_tools(served):
    server, _ = served
    finished = 0
    for seed in range(6):   # random weights wander in JSON whitespace: seed 2 ends its list within 60 tokens
        body = {"messages": USER, "tools": [MODE, LEVEL], "tool_choice": "required", "temperature": 1.0,
                "seed": seed, "max_tokens": 60, "chat_template_kwargs": NO_THINK}
        status, out = post(server.url, PATH, body)
        assert status == 200, out
        choice = out["choices"][0]
        if choice["finish_reason"] == "tool_calls":
            finished += 1
            calls = choice["message"]["tool_calls"]
            assert calls and all(_valid(c) for c in calls), calls
        else:  # the budget ran out inside the JSON list: no calls, the partial answer as text
            assert choice["finish_reason"] == "length" and "tool_calls" not in choice["message"]
            assert choice["message"]["content"].lstrip().startswith("[")
    assert finished >= 1


def test_with_thinking_the_reasoning_is_free_and_the_call_follows(served):
    server, _ = served
    think_end = server.http.api.tokenizer.token_to_id("</think>")
    body = {"messages": USER, "tools": [MODE], "tool_choice": NAMED, "temperature": 0, "max_tokens": 60,
            "logit_bias": {str(think_end): 1.0}}   # the tiny model then closes its think block after one token
    status, out = post(server.url, PATH, body)
    assert status == 200, out
    message = out["choices"][0]["message"]
    assert message["reasoning_content"] is not None
    assert len(message["tool_calls"]) == 1 and _valid(message["tool_calls"][0]), message


@pytest.mark.parametrize("body,message", [
    ({"messages": USER, "tool_choice": "required"}, "needs 'tools'"),
    ({"messages": USER, "tool_choice": NAMED, "tools": [LEVEL]}, "names the function 'set_mode', which is not in"),
    ({"messages": USER, "tool_choice": {"type": "function", "function": {}}, "tools": [MODE]}, "must be \"auto\""),
    ({"messages": USER, "tool_choice": "sometimes", "tools": [MODE]}, "must be \"auto\""),
    ({"messages": USER, "tool_choice": NAMED, "tools": [MODE], "response_format": {"type": "json_object"}},
     "leave out 'response_format'"),
])
def test_bad_tool_choices(served, body, message):
    server, _ = served
    status, out = post(server.url, PATH, body)
    assert status == 400 and out["error"]["param"] == "tool_choice" and message in out["error"]["message"], out
