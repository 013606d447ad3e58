"""Structured outputs of a chat reply that starts inside a think block (thinking mode): the reasoning is free and the
grammar applies from the token after ``</think>`` (vLLM's structured outputs with a reasoning parser); with thinking
off, or for plain prompts, it applies from the first token. The tiny model closes its think block after one token
when ``</think>`` gets a logit bias of 1.0 (found by scanning biases; the test checks that it did).
Code: python/qwen35_native/engine/core.py (Sequence.grammar_after), llm.py (add_requests(opened_think=...))."""

import json

import pytest

from qwen35_native import SamplingParams, StructuredOutputs

xgr = pytest.importorskip("xgrammar")

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "enum": [1, 2, 3]}},
          "required": ["ok", "n"], "additionalProperties": False}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


def _matcher(llm):
    from transformers import PreTrainedTokenizerFast

    info = xgr.TokenizerInfo.from_huggingface(PreTrainedTokenizerFast(tokenizer_object=llm.tokenizer.backend),
                                              vocab_size=llm.engine.vocab_size, stop_token_ids=llm.engine.eos_ids)
    return xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA)))


def _check_json(reply_text):
    value = json.loads(reply_text)
    assert set(value) == {"ok", "n"} and isinstance(value["ok"], bool) and value["n"] in (1, 2, 3), value


def test_the_grammar_waits_for_the_think_block_to_close(make_llm):
    llm = make_llm()
    think_end = llm.tokenizer.token_to_id("</think>")
    bias = {think_end: 1.0}
    free = llm.chat(USER, SamplingParams(temperature=0, max_tokens=12, logit_bias=bias)).outputs[0].token_ids
    k = free.index(think_end)
    assert k >= 1 and not _matcher(llm).accept_token(free[0])   # a reasoning token the grammar would refuse
    reply = llm.chat(USER, SamplingParams(temperature=0, max_tokens=60, logit_bias=bias,
                                          structured_outputs=StructuredOutputs(json=SCHEMA)))
    ids = reply.outputs[0].token_ids
    assert ids[:k + 1] == free[:k + 1]             # reasoning as without a grammar, up to and with </think>
    matcher = _matcher(llm)
    assert all(matcher.accept_token(t) for t in ids[k + 1:]) and matcher.is_terminated()
    assert reply.finish_reason == "stop" and reply.reasoning is not None
    _check_json(reply.text)


def test_with_thinking_off_the_grammar_applies_from_the_first_token(make_llm):
    llm = make_llm()
    reply = llm.chat(USER, SamplingParams(temperature=0, max_tokens=60, structured_outputs=StructuredOutputs(
        json=SCHEMA)), enable_thinking=False)
    matcher = _matcher(llm)
    assert all(matcher.accept_token(t) for t in reply.token_ids) and matcher.is_terminated()
    _check_json(reply.text)


def test_a_reply_that_never_closes_its_think_block_is_not_constrained(make_llm):
    """Until </think> the grammar does not apply at all: the tokens are those of the unconstrained reply (which here
    never closes the block within its budget), streamed the same way."""
    llm = make_llm()
    think_end = llm.tokenizer.token_to_id("</think>")
    free = llm.chat(USER, SamplingParams(temperature=0, max_tokens=12)).outputs[0].token_ids
    assert think_end not in free and not _matcher(llm).accept_token(free[0])
    params = SamplingParams(temperature=0, max_tokens=12, structured_outputs=StructuredOutputs(json=SCHEMA))
    assert llm.chat(USER, params).outputs[0].token_ids == free
    streamed = [t for d in llm.chat(USER, params, stream=True) for t in d.token_ids]
    assert streamed == free
