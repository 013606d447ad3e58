"""-m gpu: tensor parallelism's code path on one GPU with NCCL (a world of 1): the sharded loader, the all-reduce
hooks and vocab-parallel embedding / lm_head over an NCCL group give the plain model's logits (cached steps and the
uncached forward), and the engine's decode steps captured in CUDA graphs with the NCCL collectives inside generate
the plain model's tokens. Code: python/qwen35_native/parallel/."""

import pytest
import torch
from tp_checks import all_logits
from tp_helpers import rel_err

import qwen35_native as q35
from qwen35_native.parallel import load_sharded
from qwen35_native.parallel.groups import init_group


@pytest.mark.gpu
def test_nccl_world_of_one_matches_the_plain_model(tmp_path):
    import datetime

    import torch.distributed as dist

    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path / "tiny-kernel"), "tiny-kernel", seed=6)
    device = torch.device("cuda", 0)
    store = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=datetime.timedelta(seconds=60))
    ctx = init_group(0, 1, device, store)
    try:
        assert ctx.backend == "nccl"
        tp = load_sharded(path, ctx)                        # backend auto: our kernels where they exist
        plain = q35.from_pretrained(path, device=device)
        for i, (a, b) in enumerate(zip(all_logits(tp), all_logits(plain))):
            assert rel_err(a, b) <= 1e-5, f"step {i}: {rel_err(a, b):.2e}"
        params = q35.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        prompts = [[5, 17, 99, 230], [7, 8, 9], [300, 301]]
        sizes = dict(max_num_seqs=4, max_num_batched_tokens=256, num_blocks=64, tokenizer=False)  # not 90 % of the GPU
        # bfloat16: float32 decode steps use the attention reference, which syncs with the host and is not captured
        bf16 = torch.bfloat16
        graphed = q35.LLM(load_sharded(path, ctx, dtype=bf16), cuda_graphs=None, **sizes)
        eager = q35.LLM(q35.from_pretrained(path, device=device, dtype=bf16), cuda_graphs=False, **sizes)
        got = [o.outputs[0].token_ids for o in graphed.generate(prompts, params)]
        assert got == [o.outputs[0].token_ids for o in eager.generate(prompts, params)]
        state = graphed.engine.runner.graphs
        assert state.enabled, f"decode steps stayed eager: {state.disabled_reason}"
        assert state.replays > 0        # decode steps ran as CUDA graphs with the NCCL collectives inside
    finally:
        ctx.destroy()
    assert not dist.is_initialized()
