"""The tiny-kernel model (GDN K = V = 128) with backend="kernel": every GDN layer's prefill and decode run on the GDN
kernels (the CUDA sources under the SIMT emulator on the CPU; the CUDA kernels with -m gpu). Cached prefill of two
sequences, then decode steps, in bf16: within the model-level bound of MODEL_SPEC §5.15 (no worse than 2x the
bf16 reference model's own error against the fp32 reference model, which matches HF to 1e-4)."""

import pytest
import torch

import qwen35_native as q35
from qwen35_native.model import ForwardBatch
from qwen35_native.tiny import write_tiny_checkpoint

BLOCK = 8
PROMPTS = [12, 5]
DECODE_STEPS = 2


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("gdn") / "tiny-kernel"), "tiny-kernel", seed=3)


def _run(model, ids, device):
    """Prefill of both prompts in one batch, then DECODE_STEPS batched decode steps; all logits, concatenated."""
    cache = model.allocate_cache(num_blocks=8, block_size=BLOCK, num_slots=4)
    tables = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    slots, logits = [2, 0], []
    context = [0, 0]
    steps = [[ids[0][:PROMPTS[0]], ids[1][:PROMPTS[1]]]]
    steps += [[ids[0][PROMPTS[0] + i:PROMPTS[0] + i + 1], ids[1][PROMPTS[1] + i:PROMPTS[1] + i + 1]]
              for i in range(DECODE_STEPS)]
    for toks in steps:
        batch = ForwardBatch.build([len(t) for t in toks], context, slots, tables, BLOCK, device, logits="all",
                                   num_slots=4, num_blocks=8)
        logits.append(model.forward_cached(torch.cat(toks).to(device), batch, cache).float().cpu())
        context = [c + len(t) for c, t in zip(context, toks)]
    return torch.cat(logits)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_tiny_kernel_model_on_gdn_kernels(kernel_dir, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = q35.from_pretrained(kernel_dir, device=device, dtype=torch.bfloat16, backend="kernel")
    assert model.backends["gdn_prefill"] == "kernel" and model.backends["gdn_decode"] == "kernel"
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, 448, (n + DECODE_STEPS,), generator=gen) for n in PROMPTS]
    ours = _run(model, ids, device)
    ref_bf16 = _run(q35.from_pretrained(kernel_dir, device=device, dtype=torch.bfloat16, backend="reference"), ids,
                    device)
    ref_fp32 = _run(q35.from_pretrained(kernel_dir, device=device, dtype=torch.float32, backend="reference"), ids,
                    device)
    bound = 2 * _rel(ref_bf16, ref_fp32)
    assert _rel(ours, ref_fp32) <= bound, (_rel(ours, ref_fp32), bound)
    assert _rel(ours, ref_bf16) <= bound, (_rel(ours, ref_bf16), bound)


def test_kernel_backend_falls_back_per_model(kernel_dir, tmp_path):
    """from_pretrained(backend="kernel") runs the GDN kernels only where they cover the model (K = V = 128; the
    prefill kernel in float16/bfloat16): the others run the reference, logged at load."""
    fp32 = q35.from_pretrained(kernel_dir, dtype=torch.float32, backend="kernel")
    assert fp32.backends["gdn_prefill"] == "reference" and fp32.backends["gdn_decode"] == "kernel"
    small = write_tiny_checkpoint(str(tmp_path / "moe"), "tiny-moe", seed=1)  # GDN head dims below 128
    model = q35.from_pretrained(small, dtype=torch.bfloat16, backend="kernel")
    assert model.backends["gdn_prefill"] == "reference" and model.backends["gdn_decode"] == "reference"
    assert model.backends["rms_norm"] == "kernel"
