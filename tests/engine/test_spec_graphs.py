"""Speculative steps on static buffers (engine/spec_graphs.py, the CUDA-graph path of verification steps) give the
plain engine's tokens and logprobs, as the eager speculative path does.

On the CPU the static-buffer path runs without capture (``SpecGraphs(capture=False)``): padding rows (batch sizes
between the captured ones), the draft marks of the penalties, the roll-back, the further draft steps, and their
drafts equal to the eager path's. ``-m gpu``: captured graphs against the eager speculative engine."""

import json
import os

import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine.core import LLMEngine
from qwen35_native.engine.spec_graphs import SpecGraphs

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [100, 200, 300], [42] * 19, list(range(30, 53)), [280, 369, 307, 221, 19, 403]]


def _params(n=8):
    return [q35.SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, logprobs=2),
            q35.SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=1, max_tokens=n + 2, ignore_eos=True),
            q35.SamplingParams(temperature=0.8, min_p=0.05, seed=2, presence_penalty=1.0, repetition_penalty=1.2,
                               max_tokens=n + 1, ignore_eos=True),
            q35.SamplingParams(temperature=0, presence_penalty=2.0, max_tokens=n + 4, ignore_eos=True),
            q35.SamplingParams(temperature=0, frequency_penalty=1.0, max_tokens=n + 6, ignore_eos=True)]


@pytest.fixture(scope="module")
def setup(tiny_dir):
    with open(os.path.join(tiny_dir, "generation_config.json")) as f:
        generation_config = json.load(f)
    return q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True), generation_config


def _llm(setup, k, graphs=None, **kw):
    model, generation_config = setup
    llm = q35.LLM(model, tokenizer=False, generation_config=generation_config, max_num_seqs=4, block_size=8,
                  speculative_config={"method": "mtp", "num_speculative_tokens": k} if k else None, **kw)
    if graphs:
        runner = llm.engine.runner
        runner.spec_graphs = SpecGraphs(runner, graphs, capture=False)
    return llm


def _same(a, b):
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        if x.logprobs is not None:
            assert max(abs(p.logprob - q.logprob) for p, q in zip(x.logprobs, y.logprobs)) < 1e-4


@pytest.mark.parametrize("k", [1, 2, 3])
def test_static_speculative_steps_match_the_plain_engine(setup, k, monkeypatch):
    """Drafts right three times in four (the plain engine's tokens), so steps accept some and roll back others;
    graph sizes 1, 2, 4: a batch of 3 pads one row."""
    plain = _llm(setup, 0).generate(PROMPTS, _params())
    answers = {tuple(p): r.token_ids for p, r in zip(PROMPTS, plain)}
    real = LLMEngine._usable_draft

    def usable(self, seq, draft):
        i, out = len(seq.output_ids), answers[tuple(seq.prompt_ids)]
        guess = [out[i + j] if i + j < len(out) else 0 for j in range(len(draft))]
        return real(self, seq, [g if (i + j) % 4 != 3 else g + 1 for j, g in enumerate(guess)])

    monkeypatch.setattr(LLMEngine, "_usable_draft", usable)
    llm = _llm(setup, k, graphs=[1, 2, 4])
    _same(llm.generate(PROMPTS, _params()), plain)
    graphs, stats = llm.engine.runner.spec_graphs, llm.engine.spec_stats
    assert graphs.enabled and graphs.replays >= 2   # verification and draft graphs
    assert 0 < stats.num_accepted < stats.num_drafts
    assert {key[1] for key in graphs.graphs} >= {4}   # padded sizes ran
    # the last step's draft marks: position j of a sequence counts its j drafts before it, each once
    counts, valid = graphs.mark_counts.cpu(), graphs.mark_valid.cpu()
    marked = [r for r in range(counts.shape[0]) if valid[r].any()]
    assert marked and all(counts[r].tolist() == [1] * (r % (k + 1)) + [0] * (k - r % (k + 1)) for r in marked)


@pytest.mark.parametrize("k", [1, 2])
def test_static_drafts_equal_the_eager_paths(setup, k, monkeypatch):
    """The MTP head's own drafts: the static path proposes what the eager path proposes, step by step, so its head
    KV cache, first-draft rows and further draft steps are the same computation. The drafts fed back are the plain
    engine's tokens where (i + j) % 4 != 3 (else off by one), so that accepted and rejected drafts both occur."""
    plain = _llm(setup, 0).generate(PROMPTS[:3], _params()[:3])
    answers = {tuple(p): r.token_ids for p, r in zip(PROMPTS, plain)}
    seen = {"eager": [], "static": []}
    real = LLMEngine._usable_draft
    for mode, graphs in (("eager", None), ("static", [2, 4])):
        def record(self, seq, draft, mode=mode):
            i, out = len(seq.output_ids), answers[tuple(seq.prompt_ids)]
            seen[mode].append((tuple(seq.prompt_ids), i, list(draft)))
            guess = [out[i + j] if i + j < len(out) else 0 for j in range(len(draft))]
            return real(self, seq, [g if (i + j) % 4 != 3 else g + 1 for j, g in enumerate(guess)])

        monkeypatch.setattr(LLMEngine, "_usable_draft", record)
        llm = _llm(setup, k, graphs=graphs)
        _same(llm.generate(PROMPTS[:3], _params()[:3]), plain)
        assert llm.engine.spec_stats.num_accepted > 0
    assert sorted(seen["static"]) == sorted(seen["eager"]) and len(seen["eager"]) > 6


def test_graph_sizes_are_checked(setup):
    runner = _llm(setup, 1).engine.runner
    with pytest.raises(ValueError, match=r"CUDA graph batch sizes must be in \[1, max_num_seqs=4\]"):
        SpecGraphs(runner, [8], capture=False)


@pytest.mark.gpu
def test_captured_speculative_steps_match_eager(tmp_path):
    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path / "k"), "tiny-kernel", seed=3)
    outs = []
    for graphs in (False, True):
        llm = q35.LLM(path, device="cuda", dtype=torch.bfloat16, tokenizer=False, generation_config={},
                      max_num_seqs=4, cuda_graphs=graphs, speculative_config={"num_speculative_tokens": 2},
                      max_num_batched_tokens=256, num_blocks=64)   # not 90 % of the GPU: xdist workers share it
        outs.append(llm.generate(PROMPTS, _params()))
        if graphs:
            assert llm.engine.runner.spec_graphs.enabled and llm.engine.runner.spec_graphs.replays > 0
    _same(outs[1], outs[0])
