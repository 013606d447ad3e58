"""Prompt logprobs (engine/prompt_logprobs.py): every prompt token's raw logprob given the tokens before it, its rank
and the most likely tokens equal the log_softmax of one full forward over the prompt, whether the prompt is
prefilled at once or in chunks, preempted, next to a prefix cache, with speculative decoding or over two
tensor-parallel ranks; sampling is unchanged; bad values are refused."""

import pytest
import torch

import qwen35_native as q35

PROMPT = [(37 * i + 11) % 448 for i in range(29)]


def _llm(model, **kw):
    kw.setdefault("max_num_seqs", 4)
    return q35.LLM(model, tokenizer=False, generation_config={}, **kw)


def _expected(model, prompt):
    with torch.no_grad():
        logp = model(torch.tensor([prompt]))[0].float().log_softmax(-1)    # [L, vocab]
    return logp[:-1], torch.tensor(prompt[1:])


def _check(model, prompt, scored, num_top, atol=2e-5):
    logp, targets = _expected(model, prompt)
    assert scored[0] is None and len(scored) == len(prompt) and all(s is not None for s in scored[1:])
    got = torch.tensor([s.logprob for s in scored[1:]])
    want = logp.gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    assert [s.token_id for s in scored[1:]] == targets.tolist()
    assert [s.rank for s in scored[1:]] == ((logp > want[:, None]).sum(-1) + 1).tolist()
    top_lp, top_ids = logp.topk(num_top, dim=-1)
    assert [[i for i, _ in s.top] for s in scored[1:]] == top_ids.tolist()
    torch.testing.assert_close(torch.tensor([[lp for _, lp in s.top] for s in scored[1:]]).reshape(top_lp.shape),
                               top_lp, rtol=0, atol=atol)


@pytest.mark.parametrize("budget", [64, 8])
def test_prompt_logprobs_equal_one_full_forward(tiny_model, budget, monkeypatch):
    """At once, and in chunks of 8 (each chunk scores its own positions, the last chunk one fewer); the logits
    projected 5 rows at a time."""
    from qwen35_native.engine import prompt_logprobs

    monkeypatch.setattr(prompt_logprobs, "ROWS_PER_PASS", 5)
    params = q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, prompt_logprobs=4)
    out = _llm(tiny_model, max_num_batched_tokens=budget).generate([PROMPT, PROMPT[:9]], params)
    for prompt, r in zip((PROMPT, PROMPT[:9]), out):
        _check(tiny_model, prompt, r.prompt_logprobs, 4)
    plain = _llm(tiny_model).generate([PROMPT], q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert out[0].token_ids == plain[0].token_ids and plain[0].prompt_logprobs is None


def test_samples_preemption_and_zero_top(tiny_model):
    """n = 3 sampled: the prompt is scored once (by the first sample) and the samples are those of a request without
    prompt logprobs; a cache too small for all three preempts, and recomputed positions are scored again."""
    base = q35.SamplingParams(temperature=0.9, seed=3, n=3, max_tokens=12, ignore_eos=True)
    want = _llm(tiny_model).generate([PROMPT], base)[0]
    scored = q35.SamplingParams(temperature=0.9, seed=3, n=3, max_tokens=12, ignore_eos=True, prompt_logprobs=0)
    llm = _llm(tiny_model, num_blocks=5, block_size=16, max_num_batched_tokens=16)
    got = llm.generate([PROMPT], scored)[0]
    assert [c.token_ids for c in got.outputs] == [c.token_ids for c in want.outputs]
    assert llm.engine.scheduler.num_preemptions > 0
    _check(tiny_model, PROMPT, got.prompt_logprobs, 0)


def test_a_cached_prefix_is_scored_again(tiny_model):
    """The prefix cache would skip positions that need scores: a scoring request computes its whole prompt."""
    llm = _llm(tiny_model, enable_prefix_caching=True, block_size=8)
    params = q35.SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    llm.generate([PROMPT], params)
    hits = llm.engine.prefix_stats.num_hit_tokens
    out = llm.generate([PROMPT], q35.SamplingParams(temperature=0, max_tokens=2, ignore_eos=True, prompt_logprobs=2))
    assert llm.engine.prefix_stats.num_hit_tokens == hits
    _check(tiny_model, PROMPT, out[0].prompt_logprobs, 2)
    llm.generate([PROMPT], params)
    assert llm.engine.prefix_stats.num_hit_tokens > hits   # others still resume


def test_with_speculative_decoding(tiny_dir):
    model = q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True)
    params = q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, prompt_logprobs=3)
    llm = _llm(model, speculative_config={"method": "mtp", "num_speculative_tokens": 2}, max_num_batched_tokens=16)
    out = llm.generate([PROMPT], params)[0]
    _check(model, PROMPT, out.prompt_logprobs, 3)
    assert out.token_ids == _llm(model).generate([PROMPT], params)[0].token_ids


def test_over_two_tensor_parallel_ranks(tiny_dir, tiny_model):
    """Every rank projects the same rows (the vocabulary-parallel logits are gathered)."""
    torch.set_num_threads(1)
    params = q35.SamplingParams(temperature=0, max_tokens=2, ignore_eos=True, prompt_logprobs=2)
    with q35.LLM(tiny_dir, tensor_parallel_size=2, device="cpu", backend="reference", max_num_seqs=2,
                 tokenizer=False, max_num_batched_tokens=16) as llm:
        out = llm.generate([PROMPT], params)[0]
    _check(tiny_model, PROMPT, out.prompt_logprobs, 2, atol=1e-4)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_values(value):
    with pytest.raises(ValueError, match="prompt_logprobs must be an integer >= 0 or None"):
        q35.SamplingParams(prompt_logprobs=value)
