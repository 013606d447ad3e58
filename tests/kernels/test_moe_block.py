"""moe_block on the kernels (router GEMM and shared expert on torch, routing + experts + combine on ours) vs the
references, and the tiny-kernel model with backend="kernel" vs backend="reference" (MoE and RMSNorm on the
kernels). Kernels: csrc/kernels/moe/."""

import pytest
import torch
from moe_helpers import DEVICES, REL_TOL_16BIT, gen, make_experts, mirror_fused_moe, rel_err, skip_without_cuda

import qwen35_native as q35
from qwen35_native import ops
from qwen35_native.tiny import write_tiny_checkpoint
from utils import assert_bit_identical


def _block(N, E, k, H, inter, shared_inter, dtype, seed, device="cpu"):
    g = gen(seed)
    x = torch.randn(N, H, generator=g).to(device=device, dtype=dtype)
    w13, w2 = make_experts(E, H, inter, dtype, seed + 1, device)
    wts = dict(router_w=(torch.randn(E, H, generator=g) / H ** 0.5 * 3).to(device=device, dtype=dtype), w13=w13, w2=w2,
               shared_w13=None, shared_w2=None, shared_gate_w=None)
    if shared_inter:
        sw13, sw2 = make_experts(1, H, shared_inter, dtype, seed + 2, device)
        wts.update(shared_w13=sw13[0], shared_w2=sw2[0],
                   shared_gate_w=(torch.randn(1, H, generator=g) / H ** 0.5).to(device=device, dtype=dtype))
    return x, wts


def _exact(x, wts, k, offset=0):
    """float64 block from the same (activation-dtype) router logits as the kernel path: no routing flips."""
    weights, ids = ops.moe_route_reference(torch.nn.functional.linear(x, wts["router_w"]), k)
    shared = None
    if wts["shared_w13"] is not None:
        shared_out = ops.swiglu_mlp_reference(x.double(), wts["shared_w13"].double(), wts["shared_w2"].double())
        shared = (shared_out, wts["shared_gate_w"])
    return mirror_fused_moe(x, wts["w13"], wts["w2"], weights, ids, offset, shared, round_like_kernels=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [48, 0], ids=["shared", "no-shared"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_moe_block_kernel(dtype, shared, device):
    skip_without_cuda(device)
    x, wts = _block(33, 16, 4, 96, 40, shared, dtype, seed=shared + 1, device=device)
    out = ops.moe_block(x, **wts, top_k=4, backend="kernel")
    assert out.shape == x.shape and out.dtype == dtype
    exact = _exact(x, wts, 4)
    assert rel_err(out, exact) <= (1e-5 if dtype == torch.float32 else REL_TOL_16BIT)
    ref = ops.moe_block(x, **wts, top_k=4, backend="reference")   # HF's roundings, same routing
    assert rel_err(out, ref) <= (1e-5 if dtype == torch.float32 else REL_TOL_16BIT)


@pytest.mark.parametrize("device", DEVICES)
def test_moe_block_expert_parallel_ranks_sum_to_the_full_block(device, two_orders):
    skip_without_cuda(device)
    x, wts = _block(20, 64, 10, 96, 40, 48, torch.bfloat16, seed=4, device=device)

    def rank(a, b):
        return ops.moe_block(x, **{**wts, "w13": wts["w13"][a:b], "w2": wts["w2"][a:b]}, top_k=10, expert_offset=a,
                             backend="kernel")

    parts = [two_orders(rank, 0, 24) if device == "cpu" else rank(0, 24), rank(24, 64)]
    shared_only = rank(64, 64)
    routed = sum(p.double() for p in parts) - 2 * shared_only.double()   # every rank adds the shared expert
    full = ops.moe_block(x, **wts, top_k=10, backend="kernel")
    assert rel_err(routed + shared_only.double(), full) <= REL_TOL_16BIT
    assert_bit_identical(rank(0, 24), parts[0])


@pytest.fixture(scope="module")
def tiny_kernel_dir(tmp_path_factory):
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("moe") / "tiny-kernel"), "tiny-kernel", seed=5)


def _logits(path, dtype, backend, ids, device):
    model = q35.from_pretrained(path, device=device, dtype=dtype, backend=backend)
    with torch.no_grad():
        return model(ids.to(device)).float().cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_kernel_model_matches_reference(tiny_kernel_dir, device):
    skip_without_cuda(device)
    ids = torch.randint(0, 448, (1, 12), generator=gen(7))
    ref32 = _logits(tiny_kernel_dir, torch.float32, "reference", ids, device)
    ours32 = _logits(tiny_kernel_dir, torch.float32, "kernel", ids, device)
    assert (ours32 - ref32).abs().max() <= 1e-4
    # bf16 (tensor-core path): no worse than twice the reference's own bf16 error (MODEL_SPEC §5.15)
    ours16 = _logits(tiny_kernel_dir, torch.bfloat16, "kernel", ids, device)
    ref16 = _logits(tiny_kernel_dir, torch.bfloat16, "reference", ids, device)
    assert rel_err(ours16, ref32) <= 2 * rel_err(ref16, ref32)
