"""Decode steps on static buffers (the CUDA-graph path) give the eager path's tokens and logprobs.

On the CPU the static-buffer path runs without capture (``DecodeGraphs(capture=False)``): padding rows, block-table
and sampler-row staging, per-key graphs. ``-m gpu``: the CUDA engine against the CPU engine, and captured graphs
against eager decode. Code: python/qwen35_native/engine/{cuda_graphs,model_runner}.py."""

import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine.cuda_graphs import DecodeGraphs, describe_failure, raised_where
from qwen35_native.engine.model_runner import default_graph_sizes

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [100, 200, 300], [42] * 19, [7], list(range(30, 53))]


def mixed_params(max_tokens=6):
    """Greedy, sampled, penalised and logprob requests, so several sampler graph keys occur."""
    return [q35.SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=2),
            q35.SamplingParams(temperature=0.9, top_k=20, top_p=0.9, seed=1, max_tokens=max_tokens + 2,
                               ignore_eos=True),
            q35.SamplingParams(temperature=0.8, min_p=0.05, seed=2, presence_penalty=1.0, repetition_penalty=1.2,
                               max_tokens=max_tokens + 1, ignore_eos=True, frequency_penalty=0.7),
            q35.SamplingParams(temperature=0, max_tokens=max_tokens - 3, ignore_eos=True),
            q35.SamplingParams(temperature=1.0, seed=3, max_tokens=max_tokens + 4, ignore_eos=True)]


def assert_same_outputs(a, b, atol=1e-4):
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    for x, y in zip(a, b):
        if x.logprobs is not None:
            assert max(abs(p.logprob - q.logprob) for p, q in zip(x.logprobs, y.logprobs)) < atol


def test_graph_sizes(make_llm):
    runner = make_llm(max_num_seqs=4).engine.runner
    with pytest.raises(ValueError, match=r"CUDA graph batch sizes must be in \[1, max_num_seqs=4\]"):
        DecodeGraphs(runner, [1, 8], capture=False)


def test_default_graph_sizes():
    assert default_graph_sizes(1) == [1]
    assert default_graph_sizes(6) == [1, 2, 4, 6]
    assert default_graph_sizes(40) == [1, 2, 4, 8, 16, 32, 40]


def test_a_failed_capture_says_where_it_failed(make_llm):
    """The reason a capture failed names the line that raised and our line that called it (found on a GPU only,
    where the traceback is otherwise lost in a warning)."""
    def torch_side():
        raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")

    try:
        torch_side()
    except RuntimeError as e:
        error = e
    where = raised_where(error)
    assert where.startswith("raised at engine/test_cuda_graphs.py:") and "in torch_side" in where, where
    graphs = DecodeGraphs(make_llm(max_num_seqs=2).engine.runner, [1, 2], capture=False)
    graphs._disable(2, error)
    assert not graphs.enabled and "in torch_side" in graphs.disabled_reason
    with pytest.raises(RuntimeError, match=r"batch size 2\) failed: RuntimeError: Cannot copy .* in torch_side"):
        DecodeGraphs(graphs.runner, [1, 2], strict=True, capture=False)._disable(2, error)


def test_a_failure_raised_while_handling_another_names_both():
    """A library failing while it reports a failure (formatting a tensor of the capturing stream for a log line)
    must not hide the first error: both show, the first with its own location."""
    def collective():
        raise RuntimeError("operation not permitted when stream is capturing")

    def report():
        try:
            collective()
        except RuntimeError:   # raised with an implicit context, as the library did
            raise ValueError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")  # noqa: B904

    try:
        report()
    except ValueError as e:
        error = e
    text = describe_failure(error)
    first, _, second = text.partition("; raised while handling: ")
    assert first.startswith("ValueError: Cannot copy") and "in report" in first, text
    assert second.startswith("RuntimeError: operation not permitted") and "in collective" in second, text
    try:
        try:
            collective()
        except RuntimeError:
            raise KeyError("replaced on purpose") from None     # a suppressed context is not shown
    except KeyError as e:
        assert "raised while handling" not in describe_failure(e)


def test_static_decode_path_matches_eager(make_llm):
    eager = make_llm(max_num_seqs=6).generate(PROMPTS, mixed_params())
    llm = make_llm(max_num_seqs=6)
    runner = llm.engine.runner
    runner.graphs = DecodeGraphs(runner, [1, 2, 4, 6], strict=True, capture=False)
    static = llm.generate(PROMPTS, mixed_params())
    assert_same_outputs(static, eager)
    assert runner.graphs.replays > 0
    assert {g for g, _ in runner.graphs.graphs} >= {6, 4}   # padded sizes as the batch shrinks
    assert len({flags for _, flags in runner.graphs.graphs}) > 1   # sampler stages are part of the key


def test_static_decode_padding_touches_only_the_padding_slot_and_block(make_llm):
    """A batch of 3 in a graph of 4: the padding row writes the padding block and slot, nothing else."""
    llm = make_llm(max_num_seqs=4, num_blocks=32)
    runner = llm.engine.runner
    runner.graphs = DecodeGraphs(runner, [4], strict=True, capture=False)
    unused_slot, unused_block = 3, 31   # never given to a sequence in this run (3 sequences, few blocks)
    for i in runner.cache.ssm:
        runner.cache.ssm[i][unused_slot].fill_(7.0)
        runner.cache.conv[i][unused_slot].fill_(7.0)
    for k, v in runner.cache.kv.values():
        k[unused_block].fill_(7.0)
        v[unused_block].fill_(7.0)
    llm.generate(PROMPTS[:3], q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert runner.graphs.replays > 0
    for i in runner.cache.ssm:
        assert (runner.cache.ssm[i][unused_slot] == 7.0).all() and (runner.cache.conv[i][unused_slot] == 7.0).all()
        assert torch.isfinite(runner.cache.ssm[i][runner.pad_slot]).all()
    for k, v in runner.cache.kv.values():
        assert (k[unused_block] == 7.0).all() and (v[unused_block] == 7.0).all()
        assert k[runner.pad_block].abs().sum() > 0   # the padding rows wrote their K here


def _cuda_llm(path, **kwargs):
    # num_blocks: a few MB of cache, not 90 % of the GPU (the default), which starves parallel test workers
    return q35.LLM(path, device="cuda", max_num_seqs=8, max_num_batched_tokens=256, num_blocks=128, **kwargs)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    from qwen35_native.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("graphs") / "tiny-kernel"), "tiny-kernel", seed=5)


@pytest.mark.gpu
def test_cuda_engine_matches_cpu_engine(tiny_dir):
    cpu = q35.LLM(tiny_dir, device="cpu", backend="reference").generate(PROMPTS, mixed_params())
    cuda = _cuda_llm(tiny_dir, cuda_graphs=False).generate(PROMPTS, mixed_params())
    assert_same_outputs(cuda, cpu, atol=1e-3)


@pytest.mark.gpu
def test_token_edits_on_cuda_match_the_cpu_engine(tiny_dir):
    """logit_bias and allowed_token_ids (per-row token lists, eager steps; with CUDA graphs on, the steps that
    carry them stand aside) give the CPU engine's tokens."""
    params = [q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logit_bias={17: 5.0, 99: -100.0}),
              q35.SamplingParams(temperature=0.9, seed=4, max_tokens=6, ignore_eos=True,
                                 allowed_token_ids=[3, 17, 99, 230, 301]),
              *mixed_params()[:3]]
    cpu = q35.LLM(tiny_dir, device="cpu", backend="reference").generate(PROMPTS, params)
    cuda = _cuda_llm(tiny_dir, cuda_graphs=None).generate(PROMPTS, params)
    assert_same_outputs(cuda, cpu, atol=1e-3)
    assert set(cuda[1].token_ids) <= {3, 17, 99, 230, 301}


@pytest.mark.gpu
def test_cuda_graphs_match_eager(kernel_dir):
    # bfloat16: the attention kernels take no float32 (the checkpoint's dtype), and the pure-torch reference they
    # fall back to syncs with the host, so float32 decode steps cannot be captured and stay eager
    eager = _cuda_llm(kernel_dir, cuda_graphs=False, dtype=torch.bfloat16).generate(PROMPTS, mixed_params(8))
    llm = _cuda_llm(kernel_dir, cuda_graphs=None, dtype=torch.bfloat16)
    graphs = llm.generate(PROMPTS, mixed_params(8))
    assert_same_outputs(graphs, eager, atol=1e-3)
    state = llm.engine.runner.graphs
    assert state.enabled, f"decode steps stayed eager: {state.disabled_reason}"
    assert state.replays > 0 and len(state.graphs) >= 2
    # a second run replays the captured graphs (no new capture) and gives the same tokens again
    captured = len(state.graphs)
    assert_same_outputs(llm.generate(PROMPTS, mixed_params(8)), eager, atol=1e-3)
    assert len(state.graphs) == captured


@pytest.mark.gpu
def test_cuda_graphs_strict_mode_reports_capture_failures(kernel_dir):
    llm = _cuda_llm(kernel_dir, cuda_graphs=True)   # float32: the attention reference cannot be captured
    try:
        out = llm.generate(PROMPTS[:2], q35.SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    except RuntimeError as e:
        assert "CUDA graph capture of the decode step" in str(e) and "cuda_graphs=None or False" in str(e)
        return
    assert llm.engine.runner.graphs.replays > 0 and all(len(o.token_ids) == 4 for o in out)
