"""``SamplingParams.min_tokens``: the first N tokens are never a stop token or an eos id (their logits are -inf,
so the next most likely token is taken) and no stop string ends the output before N tokens; checked against a
greedy loop over full forwards, with sampling, with speculative decoding, on the static CUDA-graph path (steps
with a ban run eagerly) and through the stop checker; bad values are refused."""

import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine import SamplingParams, StopChecker
from qwen35_native.engine.cuda_graphs import DecodeGraphs

PROMPT = [(29 * i + 5) % 448 for i in range(11)]


def greedy_reference(model, prompt, max_tokens, min_tokens, banned, stop_ids):
    """Greedy decoding from full forwards: ``banned`` ids at -inf for the first ``min_tokens`` positions."""
    ids, out = list(prompt), []
    with torch.no_grad():
        for i in range(max_tokens):
            logits = model(torch.tensor([ids]))[0, -1].float()
            if i < min_tokens:
                logits[banned] = float("-inf")
            token = int(logits.argmax())
            out.append(token)
            ids.append(token)
            if i + 1 >= min_tokens and token in stop_ids:
                break
    return out


def _first_tokens(make_llm, n):
    params = q35.SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    return make_llm(tokenizer=False).generate([PROMPT], params)[0].token_ids


def test_greedy_tokens_skip_the_banned_ids_until_min_tokens(make_llm, tiny_model):
    """The plain greedy output's own tokens are made stop tokens: without min_tokens the output stops at once;
    with it, the first 4 positions take the best other token, and a stop token ends it afterwards."""
    first = _first_tokens(make_llm, 6)
    stop = sorted(set(first))
    llm = make_llm(tokenizer=False)
    eos = llm.engine.eos_ids
    assert llm.generate([PROMPT], q35.SamplingParams(temperature=0, max_tokens=12, stop_token_ids=stop))[
        0].token_ids == first[:1]
    params = q35.SamplingParams(temperature=0, max_tokens=12, stop_token_ids=stop, min_tokens=4)
    got = llm.generate([PROMPT], params)[0]
    want = greedy_reference(tiny_model, PROMPT, 12, 4, stop + eos, set(stop + eos))
    assert got.token_ids == want and len(want) >= 4
    assert not set(want[:4]) & set(stop + eos)


def test_eos_ids_are_banned_unless_ignore_eos(make_llm, tiny_model):
    """The checkpoint's eos id (here the greedy first token) is banned like a stop token; with ignore_eos it is not
    (it does not stop the output either)."""
    first = _first_tokens(make_llm, 6)
    llm = q35.LLM(tiny_model, tokenizer=False, generation_config={"eos_token_id": first[0]})
    greedy = q35.SamplingParams(temperature=0, max_tokens=6)
    assert llm.generate([PROMPT], greedy)[0].token_ids == first[:1]
    got = llm.generate([PROMPT], q35.SamplingParams(temperature=0, max_tokens=6, min_tokens=3))[0].token_ids
    assert got == greedy_reference(tiny_model, PROMPT, 6, 3, [first[0]], {first[0]}) and got[0] != first[0]
    assert llm.generate([PROMPT], q35.SamplingParams(temperature=0, max_tokens=6, min_tokens=3, ignore_eos=True))[
        0].token_ids == first


def test_the_ban_ends_at_min_tokens():
    from qwen35_native.engine.sampling import min_tokens_bans

    rules = [(3, [5, 9]), None, (1, [2])]
    assert min_tokens_bans(rules, [2, 0, 0]) == [[5, 9], [], [2]]
    assert min_tokens_bans(rules, [3, 0, 0]) == [[], [], [2]]
    assert min_tokens_bans(rules, [3, 0, 1]) is None and min_tokens_bans(None, [0]) is None


def test_ignore_eos_bans_only_the_stop_tokens(make_llm, tiny_model):
    llm = make_llm(tokenizer=False)
    stop = _first_tokens(make_llm, 2)[1:]
    params = q35.SamplingParams(temperature=0, max_tokens=8, stop_token_ids=stop, min_tokens=3, ignore_eos=True)
    assert llm.generate([PROMPT], params)[0].token_ids == greedy_reference(tiny_model, PROMPT, 8, 3, stop, set(stop))


def test_sampled_tokens_avoid_the_banned_ids(make_llm):
    """Sampling rows: the banned ids (here the 40 most likely first tokens) never come before min_tokens."""
    llm = make_llm(tokenizer=False)
    with torch.no_grad():
        top = llm.model(torch.tensor([PROMPT]))[0, -1].topk(40).indices.tolist()
    params = q35.SamplingParams(temperature=1.0, seed=3, n=6, max_tokens=8, stop_token_ids=top, min_tokens=5)
    for c in llm.generate([PROMPT], params)[0].outputs:
        assert len(c.token_ids) >= 5 and not set(c.token_ids[:5]) & set(top)
        assert c.finish_reason == "length" or c.token_ids[-1] in top


def test_with_speculative_decoding_and_on_the_static_graph_path(tiny_dir, make_llm):
    """Verified positions j ban while output + j < min_tokens; steps with a ban do not use the graphs, later ones
    do: the same tokens as the eager plain engine."""
    first = _first_tokens(make_llm, 5)
    params = q35.SamplingParams(temperature=0, max_tokens=10, stop_token_ids=sorted(set(first)), min_tokens=5)
    want = make_llm(tokenizer=False).generate([PROMPT], params)[0].token_ids
    assert len(want) >= 5
    mtp = q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True)
    spec = q35.LLM(mtp, tokenizer=False, generation_config=make_llm().generation_config,
                   speculative_config={"method": "mtp", "num_speculative_tokens": 2})
    assert spec.generate([PROMPT], params)[0].token_ids == want
    llm = make_llm(tokenizer=False, max_num_seqs=2)
    runner = llm.engine.runner
    runner.graphs = DecodeGraphs(runner, [1, 2], strict=True, capture=False)
    assert llm.generate([PROMPT], params)[0].token_ids == want
    assert 0 < runner.graphs.replays < len(want) - 4   # only the steps past min_tokens


def test_the_checker_ignores_stop_tokens_before_min_tokens():
    checker = StopChecker(SamplingParams(stop_token_ids=[4], max_tokens=9, min_tokens=2), eos_ids=[6])
    assert not checker.append(4) and not checker.finished
    assert checker.append(6) and checker.finish_reason == "stop" and checker.token_ids == [4, 6]


def test_stop_strings_wait_for_min_tokens(tokenizer):
    ids = tokenizer.encode("ab cd ab cd")
    early = StopChecker(SamplingParams(stop=["ab"], max_tokens=50), tokenizer=tokenizer)
    late = StopChecker(SamplingParams(stop=["ab"], max_tokens=50, min_tokens=3), tokenizer=tokenizer)
    for t in ids:
        if not early.finished:
            early.append(t)
        if not late.finished:
            late.append(t)
    assert early.text == "" and len(early.token_ids) == len(tokenizer.encode("ab"))
    assert late.finished and late.text == "ab cd " and len(late.token_ids) > 3


@pytest.mark.parametrize("kwargs,message", [({"min_tokens": -1}, "min_tokens must be an integer >= 0"),
                                            ({"min_tokens": 1.5}, "min_tokens must be an integer >= 0"),
                                            ({"min_tokens": 5, "max_tokens": 4}, "min_tokens must be <= max_tokens=4")])
def test_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        q35.SamplingParams(**kwargs)



def test_banned_ids_out_of_the_vocabulary_are_refused():
    from qwen35_native.engine.sampling import SamplingTensors

    params = [q35.SamplingParams(temperature=0).resolved()]
    with pytest.raises(ValueError, match=r"banned token ids must be in \[0, 10\), got \[10\]"):
        SamplingTensors.build(params, [0], 10, banned=[[10]])
