"""The OpenAI-compatible server's chat endpoint over real HTTP on a tiny model: the same reply as ``LLM.chat``
(reasoning, answer, logprobs, usage), streamed or not, with thinking off, tools, tool-call history given the OpenAI
way (arguments as JSON strings) and images as data URLs; the streamed tool-call hold-back and the tool-call
message form, on fed events; refused requests.
Code: python/qwen35_native/serve/ (api.py, protocol.py, responses.py)."""

import queue
from types import SimpleNamespace

import pytest

import qwen35_native as q35
from openai_client import finish_reasons, png_data_url, post, stream, stream_texts
from qwen35_native.chat import ToolCall
from qwen35_native.engine.outputs import ChatCompletion, GenerationDelta
from qwen35_native.serve.api import AnswerStream, OpenAIServing
from qwen35_native.serve.responses import chat_message

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
PATH = "/v1/chat/completions"


def test_chat_equals_llm_chat_with_logprobs_and_samples(served):
    server, ref = served
    body = {"model": "tiny", "messages": USER, "max_tokens": 10, "temperature": 0.8, "seed": 4, "n": 2,
            "logprobs": True, "top_logprobs": 2}
    status, out = post(server.url, PATH, body)
    assert status == 200, out
    want = ref.chat(USER, q35.SamplingParams(max_tokens=10, temperature=0.8, seed=4, n=2, logprobs=2))
    texts = server.http.api.texts
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    for choice, reply in zip(out["choices"], want.outputs):
        assert choice["message"]["content"] == reply.text
        assert choice["message"]["reasoning_content"] == reply.reasoning
        assert choice["finish_reason"] == reply.finish_reason and "tool_calls" not in choice["message"]
        content = choice["logprobs"]["content"]
        assert [c["token"] for c in content] == [texts(e.token_id) for e in reply.logprobs]
        assert [c["logprob"] for c in content] == [e.logprob for e in reply.logprobs]
        assert [[t["token"] for t in c["top_logprobs"]] for c in content] == \
            [[texts(t) for t, _ in e.top] for e in reply.logprobs]
        assert all(bytes(c["bytes"]).decode() == c["token"] for c in content)
    assert out["usage"]["prompt_tokens"] == len(want.prompt_token_ids)
    assert out["usage"]["completion_tokens"] == sum(len(o.token_ids) for o in want.outputs)


def test_thinking_off_tools_and_tool_history(served):
    server, ref = served
    history = USER + [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    body = {"messages": history, "tools": [WEATHER], "max_tokens": 8, "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False}}
    status, out = post(server.url, PATH, body)
    assert status == 200, out
    as_dicts = [dict(m) for m in history]
    as_dicts[1] = {**history[1], "tool_calls": [{**history[1]["tool_calls"][0], "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}
    want = ref.chat(as_dicts, q35.SamplingParams(max_tokens=8, temperature=0), enable_thinking=False, tools=[WEATHER])
    assert out["choices"][0]["message"]["content"] == want.text
    assert out["usage"]["prompt_tokens"] == len(want.prompt_token_ids)
    assert "<tool_response>" in ref.tokenizer.decode(want.prompt_token_ids, skip_special_tokens=False)
    # tool_choice "none" keeps the tools out of the prompt, as vLLM does
    status, out = post(server.url, PATH, {**body, "messages": USER, "tool_choice": "none"})
    plain = ref.chat(USER, q35.SamplingParams(max_tokens=8, temperature=0), enable_thinking=False)
    assert out["usage"]["prompt_tokens"] == len(plain.prompt_token_ids)


def test_streamed_chat_equals_llm_chat_stream(served):
    server, ref = served
    body = {"messages": USER, "max_tokens": 12, "temperature": 0.7, "seed": 2, "n": 2,
            "stream_options": {"include_usage": True}}
    status, events = stream(server.url, PATH, body)
    assert status == 200 and events[-1] == "[DONE]"
    params = q35.SamplingParams(max_tokens=12, temperature=0.7, seed=2, n=2)
    reasoning, text, finish = {}, {}, {}
    for d in ref.chat(USER, params, stream=True):
        reasoning[d.sample_index] = reasoning.get(d.sample_index, "") + d.reasoning
        text[d.sample_index] = text.get(d.sample_index, "") + d.text
        if d.finished:
            finish[d.sample_index] = d.finish_reason
    assert {k: v for k, v in stream_texts(events, "reasoning_content").items()} == reasoning
    assert stream_texts(events, "content") == text
    assert finish_reasons(events) == finish
    first = {}
    for e in events[:-2]:
        for c in e["choices"]:
            first.setdefault(c["index"], c["delta"])
    assert all(d == {"role": "assistant", "content": ""} for d in first.values()) and len(first) == 2
    assert events[-2]["usage"]["completion_tokens"] == sum(
        len(o.token_ids) for o in ref.chat(USER, params).outputs)


def test_an_image_as_a_data_url(served):
    server, ref = served
    url = png_data_url()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "What is in the picture?"}]}]
    status, out = post(server.url, PATH, {"messages": messages, "max_tokens": 6, "temperature": 0})
    assert status == 200, out
    want = ref.chat(messages, q35.SamplingParams(max_tokens=6, temperature=0))
    assert out["choices"][0]["message"]["reasoning_content"] == want.reasoning
    assert out["choices"][0]["message"]["content"] == want.text
    assert out["usage"]["prompt_tokens"] == len(want.prompt_token_ids) > 40  # the image's vision tokens


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "data:x"}}]}]},
     "messages"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}]},
     "messages"),
    ({"messages": USER, "tool_choice": {"type": "function"}, "tools": [WEATHER]}, "tool_choice"),
    ({"messages": USER, "tools": [{"type": "function"}]}, "tools"),
    ({"messages": USER, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format"),
    ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": USER, "logprobs": True, "top_logprobs": 30}, "top_logprobs"),
    ({"messages": USER, "max_completion_tokens": 0}, "max_tokens"),
    ({"messages": USER, "chat_template_kwargs": {"tools": []}}, "chat_template_kwargs"),
    ({"messages": USER, "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"messages": [{"role": "system", "content": "Only a system message."}]}, None),   # the template refuses it
])
def test_refused_chat_requests(served, body, param):
    server, _ = served
    status, out = post(server.url, PATH, body)
    assert status == 400, out
    assert out["error"]["param"] == param and out["error"]["message"]


def test_answer_stream_holds_tool_calls_back():
    s = AnswerStream(hold_tool_calls=True)
    assert s.feed("Let me check.<tool") == "Let me check."  # a possible partial tag waits
    assert s.feed("_call>\n<function=get_weather>") == ""
    assert s.feed("</tool_call>", final=True) == ""
    assert s.held == "<tool_call>\n<function=get_weather></tool_call>"   # what the tool-call stream parses
    assert s.remainder("Let me check.") == ""
    s = AnswerStream(hold_tool_calls=True)
    assert s.feed("a <to") == "a " and s.feed("day", final=False) == "<today"
    assert s.remainder("a <today is") == " is"
    plain = AnswerStream(hold_tool_calls=False)
    assert plain.feed("x <tool_call>y") == "x <tool_call>y"


def test_tool_call_message_form():
    call = ToolCall("get_weather", {"city": "Paris"}, id="call_7")
    reply = ChatCompletion(0, "", None, [call], [1, 2], "stop", "<tool_call>...</tool_call>")
    message = chat_message(reply)
    assert message["content"] is None and message["tool_calls"] == [
        {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]


class FedLoop:
    """An engine loop whose job replays given events (the model cannot be made to write tool calls)."""

    def __init__(self, events):
        self.events = events

    def submit(self, prepare):
        llm = SimpleNamespace(prepare_chat=lambda messages, tools=None, **kw: ("prompt", False))
        prepare(llm)
        job = SimpleNamespace(events=queue.Queue())
        for e in self.events:
            job.events.put(e)
        return job

    def cancel(self, job):
        raise AssertionError("not cancelled")

    def next_event(self, job):
        return job.events.get_nowait()


def test_streamed_tool_calls_come_as_they_are_written(tiny_tokenizer):
    """Fed in 7-character pieces: the answer text before the first <tool_call>, then each call's id and name as soon
    as <function=...> is complete and its arguments' JSON parameter by parameter; per call the fragments add up to
    the whole-text parser's arguments (schema types applied)."""
    reply = "I will look it up. <tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n" \
            "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n" \
            "</function>\n</tool_call>"
    pieces = [reply[i:i + 7] for i in range(0, len(reply), 7)]
    checker = SimpleNamespace(finish_reason="stop", stop_reason=None, text=reply)
    seq = SimpleNamespace(sample_index=0, output_ids=list(range(len(pieces))), checker=checker, logprobs=None)
    request = SimpleNamespace(seqs=[seq], prompt_ids=[5, 6])
    events = [("started", [request])] + [
        ("delta", GenerationDelta(0, 0, [k + 1], p, "stop" if k == len(pieces) - 1 else None))
        for k, p in enumerate(pieces)] + [("done", None)]
    days = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}}}}
    api = OpenAIServing(FedLoop(events), "tiny", tiny_tokenizer, 64)
    chunks = list(api.chat({"messages": USER, "tools": [days], "stream": True}))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == "I will look it up. "
    calls: dict[int, dict] = {}
    chunks_with_calls = 0
    for d in deltas:
        chunks_with_calls += "tool_calls" in d
        for t in d.get("tool_calls", []):
            if t["index"] not in calls:   # the first delta of a call names it
                assert t["id"].startswith("call_") and t["type"] == "function" and t["function"]["name"], t
                calls[t["index"]] = {"name": t["function"]["name"], "arguments": ""}
            calls[t["index"]]["arguments"] += t["function"]["arguments"]
    assert calls == {0: {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'},
                     1: {"name": "get_time", "arguments": "{}"}}
    assert chunks_with_calls >= 4   # name, city, days + close, second call: not all in the last chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_stream_closed_before_its_first_chunk_cancels_its_request():
    from qwen35_native.serve.api import StreamResponse

    cancelled = []

    def chunks():
        yield {"a": 1}
        yield {"b": 2}

    StreamResponse(chunks(), lambda: cancelled.append("unstarted")).close()   # e.g. the headers failed to go out
    stream = StreamResponse(chunks(), lambda: cancelled.append("midway"))
    next(iter(stream))
    stream.close()
    whole = StreamResponse(chunks(), lambda: cancelled.append("whole"))
    assert list(whole) == [{"a": 1}, {"b": 2}]
    whole.close()
    assert cancelled == ["unstarted", "midway"]
