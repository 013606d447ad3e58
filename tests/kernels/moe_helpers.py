"""Inputs and independent references shared by the MoE kernel tests (tests/kernels/test_moe_*.py).

``mirror_fused_moe`` computes the routed experts in float64 over the (token, slot) pairs and rounds where the
kernels round (the SwiGLU activation and each weighted expert output to the activation dtype, one final rounding
of the sum), so the kernels must match it to within the last bits of those roundings; without the roundings it is
an exact reference, held to the MODEL_SPEC §5 tolerance (relative 1e-2 for a bf16 MoE block).
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
REL_TOL_16BIT = 1e-2   # MODEL_SPEC §5.15: bf16/fp16 kernel vs fp32 reference, one MoE block


def skip_without_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def skip_unless_block_m_runs(device, block_m):
    """block_m 128 and 256 run the sm_90a kernels: an sm_90 GPU, or the emulator at arch sm_90."""
    from qwen35_native.ops.moe_stages import SM90A_BLOCK_M, SM90A_PAIR_BLOCK_M, sm90a_path

    skip_without_cuda(device)
    if block_m in (SM90A_BLOCK_M, SM90A_PAIR_BLOCK_M) and not sm90a_path(device):
        pytest.skip("block_m 128 needs the sm_90a kernels (an sm_90 GPU or the emulator at sm_90)")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make_experts(E, H, inter, dtype, seed, device="cpu"):
    """w13 [E, 2I, H] (gate rows first), w2 [E, H, I], scaled so that activations stay O(1)."""
    g = gen(seed)
    w13 = torch.randn(E, 2 * inter, H, generator=g) / H ** 0.5
    w2 = torch.randn(E, H, inter, generator=g) / inter ** 0.5
    return w13.to(device=device, dtype=dtype), w2.to(device=device, dtype=dtype)


def make_routing(N, E_total, k, seed, device="cpu"):
    """Softmax top-k routing of random logits: (weights fp32 [N, k], ids int32 [N, k])."""
    logits = torch.randn(N, E_total, generator=gen(seed)) * 2
    probs = torch.softmax(logits, -1)
    w, ids = probs.topk(k, dim=-1)
    return (w / w.sum(-1, keepdim=True)).to(device), ids.to(device=device, dtype=torch.int32)



def make_moe_inputs(N, E, k, H, inter, dtype, seed, device="cpu"):
    """hidden [N, H], the experts' w13 / w2 and a routing (weights, ids) of N tokens to k of E experts."""
    x = torch.randn(N, H, generator=gen(seed)).to(device=device, dtype=dtype)
    w13, w2 = make_experts(E, H, inter, dtype, seed + 1, device)
    weights, ids = make_routing(N, E, k, seed + 2, device)
    return x, w13, w2, weights, ids

def rel_err(out, ref):
    ref = ref.double().cpu()
    return ((out.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def silu64(g):
    return g / (1 + torch.exp(-g))


def mirror_act(x, w13_e, dtype):
    """SwiGLU activation of rows x [M, H] for one expert, float64 math, one rounding to dtype."""
    inter = w13_e.shape[0] // 2
    gu = x.double() @ w13_e.double().t()
    return (silu64(gu[:, :inter]) * gu[:, inter:]).to(dtype)


def mirror_fused_moe(hidden, w13, w2, weights, ids, expert_offset=0, shared=None, round_like_kernels=True,
                     chunk=64):
    """float64 routed experts (+ gated shared expert: shared = (shared_out, shared_gate_w)). With
    round_like_kernels, the activation, each weighted expert output and the result are rounded to hidden's dtype
    where the kernels round; without, everything stays float64 (an exact reference)."""
    dtype, (N, H) = hidden.dtype, hidden.shape
    hidden, w13, w2, weights, ids = (t.cpu() for t in (hidden, w13, w2, weights, ids))
    inter = w13.shape[1] // 2

    def rnd(t):
        return t.to(dtype).double() if round_like_kernels else t

    acc = torch.zeros(N, H, dtype=torch.float64)
    local = ids.long() - expert_offset
    token, slot = torch.where((local >= 0) & (local < w13.shape[0]))
    for c in range(0, token.numel(), chunk):
        n, j = token[c:c + chunk], slot[c:c + chunk]
        e = local[n, j]
        gu = torch.einsum("ch,cih->ci", hidden[n].double(), w13[e].double())                # [c, 2I]
        act = rnd(silu64(gu[:, :inter]) * gu[:, inter:])
        y = rnd(weights[n, j, None].double() * torch.einsum("ci,chi->ch", act, w2[e].double()))
        acc.index_add_(0, n, y)
    if shared is not None:
        shared_out, gate_w = (t.cpu() for t in shared)
        gate = torch.sigmoid(hidden.double() @ gate_w.double().reshape(-1, 1))
        acc += gate * shared_out.double()
    return acc.to(dtype) if round_like_kernels else acc


def assert_matches_mirror(out, mirror, what="output"):
    """Within two roundings of the output dtype of the float64 mirror (elementwise)."""
    from utils import assert_close_report

    if out.dtype == torch.float32:
        rtol, atol = 1e-5, 1e-5 * mirror.abs().max().item()
    else:
        ulp = 2.0 ** (-7 if out.dtype == torch.bfloat16 else -10)
        rtol, atol = 2 * ulp, 2 * ulp * mirror.abs().max().item()
    assert_close_report(out.float(), mirror.float(), rtol=rtol, atol=atol, what=what)


def reference_align(ids, expert_offset, num_local_experts, block_m):
    """(sorted_pairs, tile_experts) by a stable sort: groups of ascending pair index, -1 padding, -1 tiles."""
    from qwen35_native.ops.moe_stages import moe_max_tiles

    flat = ids.reshape(-1).long().cpu() - expert_offset
    tiles = moe_max_tiles(flat.numel(), num_local_experts, block_m)
    sorted_pairs = torch.full((tiles * block_m,), -1, dtype=torch.int32)
    tile_experts = torch.full((tiles,), -1, dtype=torch.int32)
    t = 0
    for e in range(num_local_experts):
        pairs = torch.where(flat == e)[0]
        n = -(-pairs.numel() // block_m)
        sorted_pairs[t * block_m: t * block_m + pairs.numel()] = pairs.to(torch.int32)
        tile_experts[t: t + n] = e
        t += n
    return sorted_pairs, tile_experts


# Prefill-sized MoE of the released models (N tokens, E experts, top-k, H, I per rank) for the -m gpu tests.
GPU_MODEL_SHAPES = {"397b-tp1": (8192, 512, 10, 4096, 1024), "397b-tp8": (8192, 512, 10, 4096, 128),
                    "35b-a3b": (8192, 256, 8, 2048, 512)}


def model_shape_inputs(name: str):
    """(x, w13, w2, weights, ids) of GPU_MODEL_SHAPES[name] on the GPU, bf16, routed by the routing kernel."""
    from qwen35_native import ops

    N, E, k, H, inter = GPU_MODEL_SHAPES[name]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(N, H, device="cuda", generator=g).bfloat16()
    w13 = torch.randn(E, 2 * inter, H, device="cuda", dtype=torch.bfloat16, generator=g).div_(H ** 0.5)
    w2 = torch.randn(E, H, inter, device="cuda", dtype=torch.bfloat16, generator=g).div_(inter ** 0.5)
    weights, ids = ops.moe_route(torch.randn(N, E, device="cuda", generator=g), k)
    return x, w13, w2, weights, ids
