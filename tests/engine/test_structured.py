"""Structured outputs (``SamplingParams(structured_outputs=StructuredOutputs(...))``, xgrammar): every output follows
its regex / choice / JSON schema / JSON object / EBNF grammar and ends with reason "stop"; an independent matcher
accepts every sampled token; greedy tokens are the argmax of full-forward logits over what the grammar allows;
speculative decoding and the static CUDA-graph path give the plain engine's tokens; bad grammars and combinations
are errors naming the field; the server maps OpenAI's ``response_format`` and vLLM's ``guided_*`` fields.
Code: python/qwen35_native/engine/structured.py, core.py (matchers), sampling.py (bitmask), serve/protocol.py."""

import json
import re

import pytest
import torch

import qwen35_native as q35
from qwen35_native import SamplingParams, StructuredOutputs

xgr = pytest.importorskip("xgrammar")

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "enum": [1, 2, 3]}},
          "required": ["ok", "n"], "additionalProperties": False}
CASES = [
    (StructuredOutputs(regex=r"[0-9]{3}-[a-c]"), lambda t: re.fullmatch(r"[0-9]{3}-[a-c]", t)),
    (StructuredOutputs(choice=["yes", "no", "maybe so"]), lambda t: t in ("yes", "no", "maybe so")),
    (StructuredOutputs(json=SCHEMA), lambda t: (lambda v: set(v) == {"ok", "n"} and isinstance(v["ok"], bool) and
                                                v["n"] in (1, 2, 3))(json.loads(t))),
    (StructuredOutputs(json_object=True), lambda t: isinstance(json.loads(t), dict)),
    (StructuredOutputs(grammar='root ::= "(" [a-z]+ ")"'), lambda t: re.fullmatch(r"\([a-z]+\)", t)),
]


def _independent_matcher(llm, spec):
    from transformers import PreTrainedTokenizerFast

    info = xgr.TokenizerInfo.from_huggingface(PreTrainedTokenizerFast(tokenizer_object=llm.tokenizer.backend),
                                              vocab_size=llm.engine.vocab_size, stop_token_ids=llm.engine.eos_ids)
    compiler = xgr.GrammarCompiler(info)
    if spec.regex is not None:
        return xgr.GrammarMatcher(compiler.compile_regex(spec.regex))
    if spec.choice is not None:
        return xgr.GrammarMatcher(compiler.compile_regex("|".join(re.escape(c) for c in spec.choice)))
    if spec.grammar is not None:
        return xgr.GrammarMatcher(compiler.compile_grammar(spec.grammar))
    return xgr.GrammarMatcher(compiler.compile_json_schema(json.dumps(spec.json or {"type": "object"})))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_outputs_follow_their_grammar(make_llm, case):
    """A finished output matches its grammar; one cut by max_tokens (random weights may wander inside a JSON string
    or a [a-z]+ run) is a prefix an independent matcher accepts."""
    spec, check = CASES[case]
    llm = make_llm()
    params = [SamplingParams(temperature=1.0, seed=s, n=2, max_tokens=60, structured_outputs=spec) for s in range(3)]
    params.append(SamplingParams(temperature=0, max_tokens=60, structured_outputs=spec))
    outs = llm.generate(["Answer:", "Q: what? A:", "x", "The answer is"], params)
    finished = 0
    for out in outs:
        for o in out.outputs:
            if o.finish_reason == "stop":
                finished += 1
                assert check(o.text), o.text
            else:
                matcher = _independent_matcher(llm, spec)
                assert o.finish_reason == "length" and all(matcher.accept_token(t) for t in o.token_ids)
    assert finished >= 2


def test_an_independent_matcher_accepts_every_token(make_llm):
    llm = make_llm()
    for spec in (CASES[0][0], CASES[2][0]):
        for out in llm.generate(["Answer:"], SamplingParams(temperature=1.2, seed=4, n=3, max_tokens=60,
                                                            structured_outputs=spec))[0].outputs:
            matcher = _independent_matcher(llm, spec)
            assert all(matcher.accept_token(t) for t in out.token_ids)
            assert matcher.is_terminated()   # the last token was an end-of-sequence id the grammar allowed


def test_greedy_tokens_are_the_argmax_over_what_the_grammar_allows(make_llm, tiny_model):
    from qwen35_native.engine.structured import bitmask_to_bool

    llm = make_llm()
    spec = CASES[0][0]
    prompt = llm.tokenizer.encode("Code:")
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=10, structured_outputs=spec))[0]
    matcher, ids = _independent_matcher(llm, spec), list(prompt)
    vocab = llm.engine.vocab_size
    with torch.no_grad():
        for token in out.token_ids:
            logits = tiny_model(torch.tensor([ids]))[0, -1].float()
            mask = xgr.allocate_token_bitmask(1, vocab)
            matcher.fill_next_token_bitmask(mask)
            allowed = bitmask_to_bool(mask, vocab)[0]
            assert token == int(logits.masked_fill(~allowed, float("-inf")).argmax())
            assert matcher.accept_token(token)
            ids.append(token)
    plain = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=10))[0]
    assert plain.token_ids != out.token_ids   # the grammar changed the greedy path


def test_bitmask_unpacking_matches_bit_positions():
    from qwen35_native.engine.structured import bitmask_to_bool

    words = torch.tensor([[-(1 << 31) + 1, 0, 1 << 5]], dtype=torch.int32)   # bits 0 and 31; 69: tokens 0, 31, 69
    assert bitmask_to_bool(words, 70)[0].nonzero().flatten().tolist() == [0, 31, 69]


def test_speculative_and_graph_paths_keep_the_plain_tokens(tiny_dir, tiny_tokenizer):
    from qwen35_native.engine.cuda_graphs import DecodeGraphs

    model = q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True)
    prompts = ["Answer:", "x y z"]
    params = [SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
              SamplingParams(temperature=0.9, seed=3, max_tokens=40, structured_outputs=CASES[2][0])]

    def run(**kw):
        llm = q35.LLM(model, tokenizer=tiny_tokenizer, max_num_seqs=4, block_size=8, **kw)
        return llm, [o.token_ids for o in llm.generate(prompts, params)]

    _, plain = run()
    from qwen35_native.engine import model_runner

    verified, real_build = [], model_runner.ModelRunner.build_batch

    def build(self, plan, *args, **kwargs):
        verified.extend(key[0] for key in plan.table_keys[:plan.num_verify])
        return real_build(self, plan, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_runner.ModelRunner, "build_batch", build)
        llm, spec = run(speculative_config={"method": "mtp", "num_speculative_tokens": 2})
    assert spec == plain and llm.engine.spec_stats.num_drafts > 0
    assert 0 in verified and 1 not in verified   # sequence 1 (the grammar's) never verifies drafts
    llm = q35.LLM(model, tokenizer=tiny_tokenizer, max_num_seqs=4, block_size=8)
    llm.engine.runner.graphs = DecodeGraphs(llm.engine.runner, [1, 2, 4], capture=False)
    assert [o.token_ids for o in llm.generate(prompts, params)] == plain


def test_a_complete_grammar_stops_even_with_ignore_eos(make_llm):
    out = make_llm().generate(["Pick:"], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True,
                                                        structured_outputs=CASES[1][0]))[0]
    assert out.finish_reason == "stop" and out.text in ("yes", "no", "maybe so")


@pytest.mark.gpu
def test_on_cuda_the_grammar_holds_and_matches_the_cpu_engine(tiny_dir, tiny_tokenizer):
    """The bitmask unpacked and applied on the device: the CPU engine's tokens, each accepted by a matcher."""
    kw = dict(tokenizer=tiny_tokenizer, max_num_seqs=4, max_num_batched_tokens=256, num_blocks=64)
    params = [SamplingParams(temperature=t, seed=2, max_tokens=40, structured_outputs=spec)
              for t in (0.0, 0.9) for spec, _ in CASES[:3]]
    prompts = ["Answer:", "x", "Q: what? A:"] * 2
    cpu = q35.LLM(tiny_dir, device="cpu", backend="reference", **kw).generate(prompts, params)
    llm = q35.LLM(tiny_dir, device="cuda", **kw)
    cuda = llm.generate(prompts, params)
    assert [o.token_ids for o in cuda] == [o.token_ids for o in cpu]
    for out, p in zip(cuda, params):
        matcher = _independent_matcher(llm, p.structured_outputs)
        assert all(matcher.accept_token(t) for t in out.token_ids)


def test_disable_any_whitespace_gives_compact_json(make_llm, served):
    """JSON allows any whitespace between tokens, and random weights wander in it until the length limit; with
    disable_any_whitespace (vLLM's option) the same greedy requests finish, in json.dumps' own layout."""
    from openai_client import post

    llm = make_llm()
    prompts = ["Answer:", "x", "The answer is"]
    for compact in (False, True):
        spec = StructuredOutputs(json=SCHEMA, disable_any_whitespace=compact)
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=60, structured_outputs=spec))
        if compact:
            for out in outs:
                assert out.finish_reason == "stop" and out.text == json.dumps(json.loads(out.text)), out.text
                assert CASES[2][1](out.text)
        else:   # some wander: cut by the length limit, or spaced out of json.dumps' layout
            assert sum(o.finish_reason == "length" or re.search(r"[\r\n\t]|  ", o.text) is not None
                       for o in outs) >= 2, [o.text for o in outs]
    server, _ = served
    status, out = post(server.url, "/v1/completions", {"prompt": prompts, "temperature": 0, "max_tokens": 60,
                                                         "structured_outputs": {"json": SCHEMA,
                                                                                "disable_any_whitespace": True}})
    assert status == 200 and all(c["finish_reason"] == "stop" and CASES[2][1](c["text"]) for c in out["choices"])


@pytest.mark.parametrize("kwargs,message", [
    ({}, "give exactly one of"), ({"regex": "a", "choice": ["b"]}, "give exactly one of"),
    ({"json": "{not json"}, "json must be a JSON schema"), ({"json": [1]}, "json must be a JSON schema object"),
    ({"choice": []}, "choice must be a non-empty list"), ({"choice": ["a", ""]}, "choice must be a non-empty list"),
    ({"regex": ""}, "regex must be a non-empty string"), ({"json_object": 1}, "json_object must be True"),
    ({"json_object": True, "disable_any_whitespace": "yes"}, "disable_any_whitespace must be True or False"),
])
def test_bad_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StructuredOutputs(**kwargs)


def test_engine_errors(make_llm, monkeypatch):
    llm = make_llm()
    with pytest.raises(ValueError, match="structured_outputs regex cannot be compiled"):
        llm.generate(["x"], SamplingParams(structured_outputs=StructuredOutputs(regex="(")))
    with pytest.raises(ValueError, match="cannot be combined with min_tokens"):
        SamplingParams(min_tokens=2, structured_outputs=CASES[0][0])
    with pytest.raises(ValueError, match="must be a qwen35_native.StructuredOutputs"):
        SamplingParams(structured_outputs={"regex": "a"})
    with pytest.raises(ValueError, match="needs the checkpoint's tokenizer"):
        make_llm(tokenizer=False).generate([[1, 2]], SamplingParams(structured_outputs=CASES[0][0]))
    no_eos = make_llm()
    no_eos.engine.eos_ids = []
    with pytest.raises(ValueError, match="needs an end-of-sequence token id"):
        no_eos.generate(["x"], SamplingParams(structured_outputs=CASES[0][0]))
    import sys

    monkeypatch.setitem(sys.modules, "xgrammar", None)   # not installed
    with pytest.raises(ValueError, match=r"pip install 'qwen35-native\[structured\]'"):
        make_llm().generate(["x"], SamplingParams(structured_outputs=CASES[0][0]))
    assert not llm.engine.has_unfinished()


def test_server_response_format_and_guided_fields(served):
    from openai_client import post

    server, _ = served
    chat = {"messages": [{"role": "user", "content": "Reply in JSON."}], "max_tokens": 60, "temperature": 0.8,
            "seed": 1, "chat_template_kwargs": {"enable_thinking": False}}
    status, out = post(server.url, "/v1/chat/completions", {**chat, "response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}})
    assert status == 200, out
    assert CASES[2][1](out["choices"][0]["message"]["content"])
    status, out = post(server.url, "/v1/chat/completions", {**chat, "response_format": {"type": "json_object"}})
    assert status == 200 and out["choices"][0]["message"]["content"].lstrip().startswith("{")  # may be cut short
    for field, value, check in (("guided_choice", ["yes", "no"], lambda t: t in ("yes", "no")),
                                ("guided_regex", "[0-9]{3}-[a-c]", CASES[0][1])):
        status, out = post(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 20, field: value})
        assert status == 200 and check(out["choices"][0]["text"]), out
    status, out = post(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 20,
                                                         "structured_outputs": {"choice": ["left", "right"]}})
    assert out["choices"][0]["text"] in ("left", "right")
    status, out = post(server.url, "/v1/completions", {"prompt": "x", "guided_regex": "("})
    assert status == 400 and "cannot be compiled" in out["error"]["message"]
