"""The model on a CUDA device (``-m gpu``; skipped without one): fp32 equals the CPU reference, bf16 stays close,
and the cached forward (prefill + decode) equals the full forward on the device."""

import pytest
import torch
from model_helpers import max_abs, random_ids

import qwen35_native as q35
from qwen35_native.model import ForwardBatch

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-dense"])
def test_cuda_fp32_matches_cpu(name, tiny_dirs, tiny_models):
    model = q35.from_pretrained(tiny_dirs[name], device="cuda")          # auto: rms_norm on its CUDA kernel
    ids = random_ids(150, seed=9, batch=2)
    assert max_abs(model(ids.cuda()).cpu(), tiny_models[name](ids)) <= 1e-4


def test_cuda_bf16_close_to_fp32(tiny_dirs, tiny_models):
    model = q35.from_pretrained(tiny_dirs["tiny-moe"], device="cuda", dtype=torch.bfloat16)
    ids = random_ids(100, seed=10, batch=1)
    ref = tiny_models["tiny-moe"](ids)
    out = model(ids.cuda()).float().cpu()
    assert ((out - ref).norm() / ref.norm()).item() < 5e-2


def test_cuda_cached_decode_matches_full_forward(tiny_dirs):
    model = q35.from_pretrained(tiny_dirs["tiny-moe"], device="cuda")
    ids = random_ids(40, seed=11).cuda()
    full = model(ids[None])[0]
    cache = model.allocate_cache(num_blocks=8, block_size=16, num_slots=2)
    table = torch.tensor([[3, 5, 1]], dtype=torch.int32)
    batch = ForwardBatch.build([36], [0], [1], table, 16, "cuda", logits="all")
    assert max_abs(model.forward_cached(ids[:36], batch, cache), full[:36]) <= 2e-5
    for t in range(36, 40):
        batch = ForwardBatch.build([1], [t], [1], table, 16, "cuda")
        assert max_abs(model.forward_cached(ids[t:t + 1], batch, cache)[0], full[t]) <= 2e-5
