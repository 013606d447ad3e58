"""Speculative decoding with the MTP head over two tensor-parallel ranks on the CPU (gloo): every rank loads its
shard of the head (its attention and experts split like any decoder layer's), runs the same verification, roll-back
and drafts on the plan rank 0 sends, and rank 0 emits the tokens of the single-process plain engine.
Code: engine/spec_decode.py, parallel/engine.py (the worker's arguments), parallel/shard.py."""

import pytest
import torch

import qwen35_native as q35

PARAMS = [q35.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
          q35.SamplingParams(temperature=0.8, top_p=0.9, max_tokens=7, seed=3, ignore_eos=True, logprobs=2),
          q35.SamplingParams(temperature=0, presence_penalty=1.5, max_tokens=9, ignore_eos=True)]
PROMPTS = [[5, 17, 99, 230, 4], list(range(40, 61)), [7, 7, 8]]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from qwen35_native.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("spec_tp") / "tiny-moe"), "tiny-moe", seed=2)


@pytest.mark.parametrize("moe_parallel", ["tp", "ep"])
def test_speculative_decoding_over_two_ranks(tiny_path, moe_parallel):
    torch.set_num_threads(1)
    one = q35.LLM(tiny_path, device="cpu", backend="reference", max_num_seqs=4, tokenizer=False)
    want = [o.token_ids for o in one.generate(PROMPTS, PARAMS)]
    with q35.LLM(tiny_path, tensor_parallel_size=2, device="cpu", backend="reference", moe_parallel=moe_parallel,
                 max_num_seqs=4, tokenizer=False, max_num_batched_tokens=16,
                 speculative_config={"method": "mtp", "num_speculative_tokens": 2}) as llm:
        assert llm.model.mtp is not None
        got = [o.token_ids for o in llm.generate(PROMPTS, PARAMS)]
        stats = llm.engine.spec_stats
    assert got == want
    assert stats.num_verify_steps > 0 and stats.num_drafts > 0


def test_prefix_caching_over_two_ranks(tiny_path):
    """Every rank restores and saves the same GDN snapshots (the plan carries them): resumed prompts, with drafts,
    give the single-process plain tokens."""
    torch.set_num_threads(1)
    prompts = [PROMPTS[1], PROMPTS[1] + [3, 1, 4, 1, 5], PROMPTS[1]]
    one = q35.LLM(tiny_path, device="cpu", backend="reference", max_num_seqs=4, tokenizer=False)
    want = [one.generate([p], s)[0].token_ids for p, s in zip(prompts, PARAMS)]
    with q35.LLM(tiny_path, tensor_parallel_size=2, device="cpu", backend="reference", max_num_seqs=4,
                 tokenizer=False, block_size=8, enable_prefix_caching=True,
                 speculative_config={"method": "mtp", "num_speculative_tokens": 1}) as llm:
        got = [llm.generate([p], s)[0].token_ids for p, s in zip(prompts, PARAMS)]
        hits = llm.engine.prefix_stats.num_hit_tokens
    assert got == want and hits == 16 + 16
