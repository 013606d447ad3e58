"""``LLM.chat``: the prompt is the checkpoint's chat template (thinking on/off, tools, history without earlier
reasoning), the reply is parsed like ``parse_chat_output``, streaming splits reasoning from the answer.
Code: python/qwen35_native/engine/{llm,chat_stream}.py, chat/reasoning.py (ReasoningStream)."""

import random

import pytest

import qwen35_native as q35
from qwen35_native.chat import ReasoningStream, parse_chat_output, prompt_opens_think, split_reasoning

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
PARAMS = q35.SamplingParams(temperature=0.7, seed=2, max_tokens=12)


@pytest.mark.parametrize("thinking", [True, False])
def test_chat_prompt_and_parsed_reply(make_llm, tiny_tokenizer, thinking):
    llm = make_llm()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
    reply = llm.chat(messages, PARAMS, enable_thinking=thinking, tools=[WEATHER])
    expected = tiny_tokenizer.apply_chat_template(messages, tools=[WEATHER], add_generation_prompt=True,
                                                  enable_thinking=thinking)
    assert reply.prompt == expected and "# Tools" in expected
    assert reply.prompt_token_ids == tiny_tokenizer.encode(expected, add_special_tokens=False)
    assert prompt_opens_think(expected) == thinking
    raw = reply.outputs[0].raw_text
    assert raw == tiny_tokenizer.decode(reply.token_ids)
    parsed = parse_chat_output(raw, thinking, [WEATHER])
    assert (reply.text, reply.reasoning, reply.tool_calls) == (parsed.text, parsed.reasoning, parsed.tool_calls)
    if thinking:
        assert reply.reasoning is not None   # the prompt opened the think block


def test_chat_history_drops_earlier_reasoning(make_llm):
    llm = make_llm()
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello!", "reasoning_content": "SECRET-PLAN"},
               {"role": "user", "content": "Again"}]
    reply = llm.chat(history, PARAMS)
    assert "SECRET-PLAN" not in reply.prompt and "Hello!" in reply.prompt
    message = reply.to_message()
    assert message["role"] == "assistant" and message["content"] == reply.text


def test_chat_many_conversations_and_samples(make_llm):
    llm = make_llm()
    convs = [[{"role": "user", "content": "One"}], [{"role": "user", "content": "Two"}]]
    replies = llm.chat(convs, q35.SamplingParams(temperature=1.0, seed=4, n=2, max_tokens=6))
    assert isinstance(replies, list) and len(replies) == 2 and all(len(r.outputs) == 2 for r in replies)
    alone = llm.chat(convs[1], q35.SamplingParams(temperature=1.0, seed=4, n=2, max_tokens=6))
    assert [o.token_ids for o in alone.outputs] == [o.token_ids for o in replies[1].outputs]


def test_chat_stream_matches_the_reply(make_llm):
    llm = make_llm()
    messages = [{"role": "user", "content": "Tell me a story"}]
    reply = llm.chat(messages, PARAMS, enable_thinking=False)
    reasoning, text, tokens, final = "", "", [], None
    for d in llm.chat(messages, PARAMS, enable_thinking=False, stream=True):
        reasoning, text, tokens = reasoning + d.reasoning, text + d.text, tokens + d.token_ids
        if d.finished:
            final = d.response
    assert tokens == reply.token_ids and final.raw_text == reply.outputs[0].raw_text
    assert (final.text, final.reasoning) == (reply.text, reply.reasoning)
    assert text == reply.text and reasoning == ""  # thinking off: no think block in the reply


REPLIES = [
    ("thinking...\nstep two</think>\n\nThe answer is 4.", True),
    ("<think>\nplan</think>\n\nDone <tool_call>x</tool_call>", False),
    ("  <think>a < b </thi", False),
    ("Plain answer with a < sign and </thin", False),
    ("never closed reasoning", True),
    ("\n\n", False),
]


@pytest.mark.parametrize("text,opened", REPLIES)
def test_reasoning_stream_agrees_with_split_reasoning(text, opened):
    rng = random.Random(0)
    for _ in range(20):
        stream, reasoning, answer, i = ReasoningStream(opened), "", "", 0
        while i < len(text):
            j = min(len(text), i + rng.randint(1, 4))
            r, a = stream.feed(text[i:j])
            reasoning, answer, i = reasoning + r, answer + a, j
        r, a = stream.feed("", final=True)
        reasoning, answer = reasoning + r, answer + a
        want_reasoning, want_answer = split_reasoning(text, opened)
        assert answer == want_answer
        assert reasoning.strip() == (want_reasoning or "")


def test_continue_final_message(make_llm, tiny_tokenizer, served):
    """continue_final_message (vLLM's and transformers' meaning): the prompt is the chat rendered without a
    generation prompt and cut right after the last message's text (no end of turn); the reply continues it, and the
    server does the same (also /tokenize). Both flags at once, or a template that does not show the text, are
    errors."""
    from openai_client import post

    llm = make_llm()
    greedy = q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    messages = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "My answer: blue"}]
    reply = llm.chat(messages, greedy, add_generation_prompt=False, continue_final_message=True)
    whole = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    assert reply.prompt.endswith("My answer: blue") and whole.startswith(reply.prompt) and len(whole) > len(
        reply.prompt)
    assert reply.token_ids == llm.generate([reply.prompt], greedy)[0].token_ids
    plain = llm.chat(messages[:1], greedy, add_generation_prompt=False)   # the flag reaches the template, once
    assert plain.prompt == tiny_tokenizer.apply_chat_template(messages[:1], add_generation_prompt=False)
    with pytest.raises(ValueError, match="needs add_generation_prompt=False"):
        llm.chat(messages, greedy, continue_final_message=True)
    with pytest.raises(ValueError, match="does not appear in the rendered chat"):
        llm.chat(messages, greedy, add_generation_prompt=False, continue_final_message=True,
                 chat_template="{% for m in messages %}<{{ m.role }}>{% endfor %}")
    server, ref = served
    body = {"messages": messages, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
            "add_generation_prompt": False, "continue_final_message": True}
    status, out = post(server.url, "/v1/chat/completions", body)
    want = ref.chat(messages, greedy, add_generation_prompt=False, continue_final_message=True)
    assert status == 200 and out["choices"][0]["message"]["content"] == want.text, out
    status, out = post(server.url, "/tokenize", {"messages": messages, "add_generation_prompt": False,
                                                 "continue_final_message": True})
    assert status == 200 and out["tokens"] == want.prompt_token_ids
    status, out = post(server.url, "/v1/chat/completions", {**body, "add_generation_prompt": True})
    assert status == 400 and out["error"]["param"] == "continue_final_message"
