"""``logit_bias`` and ``allowed_token_ids`` (vLLM's semantics): the sampler adds the biases and masks what the
allow-list leaves out before the penalties; greedy steps equal the argmax of full-forward logits edited by hand;
sampled rows never leave the allow-list; speculative decoding and the static CUDA-graph path give the plain engine's
tokens (graph steps stand aside while a row edits); bad values are errors naming the field; the server converts
OpenAI's string keys.
Code: python/qwen35_native/engine/sampling.py (``_token_edits``, ``penalized_logits``), sampling_params.py, core.py,
cuda_graphs.py, spec_graphs.py, serve/protocol.py."""

import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine import SamplingParams, SamplingTensors, TokenPresence, sample
from qwen35_native.engine.cuda_graphs import DecodeGraphs


def _params(**kw):
    kw.setdefault("seed", 0)
    return SamplingParams(**kw).resolved()


def test_bias_and_allow_list_come_before_the_penalties():
    logits = torch.tensor([[2.0, -1.0, 0.0, 4.0, -3.0, 0.5], [1.0, 1.0, -2.0, 0.0, 3.0, -0.5]])
    params = [_params(temperature=0, logit_bias={0: 3.0, 4: -1.0}, repetition_penalty=2.0),
              _params(temperature=0, allowed_token_ids=[1, 2, 5], logit_bias={2: 10.0})]
    presence = TokenPresence(2, 6)
    presence.start(0, [0])
    presence.start(1, [3])
    tensors = SamplingTensors.build(params, [0, 0], 6)
    out = sample(logits, tensors, *presence.masks(torch.arange(2)))
    # row 0: (2 + 3) / 2 = 2.5 for token 0 (bias first, then the repetition penalty), token 3 stays 4.0 -> argmax 3
    # row 1: only 1, 2, 5 allowed; token 2 biased to 8.0 -> argmax 2 although token 4 has the largest raw logit
    assert out.token_ids.tolist() == [3, 2]
    from qwen35_native.engine import penalized_logits

    x = penalized_logits(logits, tensors, *presence.masks(torch.arange(2)))
    assert x[0].tolist() == [2.5, -1.0, 0.0, 4.0, -4.0, 0.5]
    assert x[1].tolist() == [float("-inf"), 1.0, 8.0, float("-inf"), float("-inf"), -0.5]


def test_sampled_rows_stay_in_the_allow_list_and_logprobs_stay_raw():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 50, generator=gen).repeat(200, 1)
    allowed = [3, 17, 40]
    params = [_params(temperature=1.5, seed=s, allowed_token_ids=allowed, logprobs=1) for s in range(200)]
    out = sample(logits, SamplingTensors.build(params, [0] * 200, 50))
    assert set(out.token_ids.tolist()) == set(allowed)   # all three drawn, nothing else
    raw = logits.log_softmax(-1)
    assert torch.allclose(out.logprobs, raw.gather(1, out.token_ids[:, None]).squeeze(1))


def test_packed_rows_cannot_carry_edits():
    params = [_params(logit_bias={1: 2.0})]
    host, flags = SamplingTensors.pack(params, [0], 8)
    assert flags.any_token_edits
    with pytest.raises(ValueError, match="only SamplingTensors.build carries"):
        sample(torch.zeros(1, 8), SamplingTensors.from_packed(host, flags, 8))
    with pytest.raises(ValueError, match=r"logit_bias token ids must be in \[0, 8\)"):
        SamplingTensors.build([_params(logit_bias={9: 1.0})], [0], 8)


@pytest.mark.parametrize("field,value", [("logit_bias", {1: 101}), ("logit_bias", {-1: 1.0}),
                                         ("logit_bias", {"5": 1.0}), ("logit_bias", [1, 2]),
                                         ("logit_bias", {1: float("nan")}), ("allowed_token_ids", []),
                                         ("allowed_token_ids", [1, -2]), ("allowed_token_ids", "12")])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SamplingParams: {field} "):
        SamplingParams(**{field: value})


def test_out_of_vocabulary_ids_are_refused_by_the_engine(make_llm):
    llm = make_llm(tokenizer=False)
    vocab = llm.engine.vocab_size
    for field, value in (("logit_bias", {vocab: 1.0}), ("allowed_token_ids", [0, vocab + 3])):
        with pytest.raises(ValueError, match=rf"{field} token ids must be in \[0, vocab_size={vocab}\)"):
            llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2, **{field: value}))
    assert not llm.engine.has_unfinished()


def test_greedy_tokens_equal_edited_full_forward_logits(make_llm, tiny_model):
    prompt = [296, 143, 109, 72, 214, 427, 146, 75]
    plain = make_llm(tokenizer=False).generate([prompt], SamplingParams(temperature=0, max_tokens=6,
                                                                        ignore_eos=True))[0].token_ids
    bias = {plain[0]: -100.0, plain[2]: -5.0, 7: 4.0}
    allowed = sorted(set(range(0, 480, 3)) | {7})
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logit_bias=bias,
                            allowed_token_ids=allowed, presence_penalty=0.5)
    out = make_llm(tokenizer=False).generate([prompt], params)[0]
    ids = list(prompt)
    with torch.no_grad():
        for token in out.token_ids:
            logits = tiny_model(torch.tensor([ids]))[0, -1].float()
            keep = torch.zeros_like(logits, dtype=torch.bool)
            keep[allowed] = True
            x = logits.masked_fill(~keep, float("-inf"))
            for t, v in bias.items():
                x[t] += v
            seen = torch.zeros_like(keep)
            seen[ids[len(prompt):]] = True
            x = x - 0.5 * seen
            assert token == int(x.argmax())
            ids.append(token)
    assert out.token_ids != plain and set(out.token_ids) <= set(allowed)


def test_static_graph_steps_stand_aside_while_a_row_edits(make_llm):
    prompts = [[5, 6, 7], [100, 200], [42] * 9]
    params = [SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
              SamplingParams(temperature=0.8, seed=1, max_tokens=8, ignore_eos=True, allowed_token_ids=[4, 9, 13]),
              SamplingParams(temperature=0, max_tokens=5, ignore_eos=True, logit_bias={13: 6.0})]
    plain = make_llm(tokenizer=False).generate(prompts, params)
    llm = make_llm(tokenizer=False, max_num_seqs=4)
    runner = llm.engine.runner
    runner.graphs = DecodeGraphs(runner, [1, 2, 4], capture=False)
    got = llm.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in plain]
    assert set(got[1].token_ids) <= {4, 9, 13}
    assert runner.graphs.replays > 0   # steps after the editing rows finished ran on the static path
    assert all(not flags.any_token_edits for _, flags in runner.graphs.graphs)


def test_speculative_decoding_gives_the_plain_engines_tokens(tiny_dir):
    import json
    import os

    with open(os.path.join(tiny_dir, "generation_config.json")) as f:
        generation_config = json.load(f)
    model = q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True)
    prompts = [[5, 6, 7, 8], [100, 200, 300]]
    params = [SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logit_bias={13: 5.0, 4: 2.0}),
              SamplingParams(temperature=0.9, seed=2, max_tokens=10, ignore_eos=True, allowed_token_ids=[4, 13, 21])]

    def run(k, graphs=False):
        from qwen35_native.engine.spec_graphs import SpecGraphs

        spec = {"method": "mtp", "num_speculative_tokens": k} if k else None
        llm = q35.LLM(model, tokenizer=False, generation_config=generation_config, speculative_config=spec,
                      max_num_seqs=4, block_size=8)
        if graphs:  # the static path (no capture on the CPU): it must stand aside while a row edits
            llm.engine.runner.spec_graphs = SpecGraphs(llm.engine.runner, [1, 2, 4], capture=False)
        return [o.token_ids for o in llm.generate(prompts, params)], llm

    plain, _ = run(0)
    got, llm = run(2)
    assert got == plain and llm.engine.spec_stats.num_drafts > 0
    got, llm = run(2, graphs=True)
    assert got == plain and not llm.engine.runner.spec_graphs.graphs


def test_server_takes_string_keys(served):
    from openai_client import post

    server, ref = served
    token = ref.tokenizer.encode(" the", add_special_tokens=False)[0]
    body = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0, "logit_bias": {str(token): 100}}
    status, out = post(server.url, "/v1/completions", body)
    assert status == 200, out
    want = ref.generate("Once upon a time", SamplingParams(max_tokens=4, temperature=0, logit_bias={token: 100}))
    assert out["choices"][0]["text"] == want[0].text
    status, out = post(server.url, "/v1/completions", {**body, "logit_bias": {"abc": 1}})
    assert status == 400 and out["error"]["param"] == "logit_bias"
    status, out = post(server.url, "/v1/completions", {**body, "logit_bias": {"10": 1}, "allowed_token_ids": []})
    assert status == 400 and out["error"]["param"] == "allowed_token_ids"
    status, out = post(server.url, "/v1/completions", {**body, "logit_bias": {str(10 ** 7): 1}})
    assert status == 400 and "vocab_size" in out["error"]["message"]
