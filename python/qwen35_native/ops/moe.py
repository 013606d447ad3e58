"""Sparse MoE block (MODEL_SPEC §3d): softmax top-k routing, routed SwiGLU experts, sigmoid-gated shared expert.

Weights (fused release layout, DESIGN.md §4): ``w13 [E, 2I, H]`` (per expert: rows [0, I) gate, [I, 2I) up),
``w2 [E, H, I]``; shared expert ``shared_w13 [2Is, H]``, ``shared_w2 [H, Is]``, ``shared_gate_w [1, H]``;
router ``router_w [E_total, H]``.

Expert parallelism: a rank may hold only the experts ``[expert_offset, expert_offset + E_local)`` (``w13`` and
``w2`` have E_local rows); (token, expert) pairs routed to other experts contribute zero here and the ranks' outputs
are summed by the caller's all-reduce.

Roundings of the reference (HF's): expert matmuls in the activation dtype; each expert output times its fp32
routing weight is rounded to the activation dtype and accumulated in that dtype in ascending expert order; the
shared-expert gate product and the final add are in the activation dtype. Kernels may round less (one fp32 sum).

Kernels (csrc/kernels/moe/, design in its README.md): ``moe_route`` (one warp per token), then for the experts
``moe_align`` (group pairs by expert, pad to the GEMM tile, on the device) -> ``moe_gate_up`` (grouped GEMM,
SiLU(gate) * up epilogue) -> ``moe_down`` (grouped GEMM, routing-weight epilogue) -> ``moe_combine`` (fp32 sum of
the k expert outputs + sigmoid-gated shared expert, one rounding), chained by ``torch.ops.qwen35_native.fused_moe``.
The router and shared-expert projections are cuBLAS (torch). The stage ops are in ``moe_stages``.
Tests: tests/kernels/test_moe_*.py (kernels), tests/model/test_ops_moe.py (references vs transformers).
Bench: bench/moe.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from ._backend import use_kernel
from .mlp import check_swiglu_weights, swiglu_mlp_reference
from .moe_stages import (
    expert_parallel_block_m,
    fused_moe_kernel,
    fused_moe_support,
    moe_route_kernel,
    moe_route_support,
)
from .projection import linear, swiglu_mlp_projected

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def moe_route_reference(logits: torch.Tensor, top_k: int):
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = torch.sort(probs, dim=-1, descending=True, stable=True)   # stable: ties go to the lower id
    values, ids = values[:, :top_k], ids[:, :top_k]
    return values / values.sum(-1, keepdim=True), ids.to(torch.int32)


def moe_route(logits: torch.Tensor, top_k: int, backend: str | None = None):
    """``p = softmax(logits) (fp32)``, the top_k largest (ties: lower expert id first), renormalised to sum 1.

    Args:
        logits: ``[N, E]`` float32/float16/bfloat16 router logits.
        top_k: 1 <= top_k <= E.
    Returns:
        ``(topk_weights [N, top_k] float32, topk_ids [N, top_k] int32)``, in descending weight order.
    """
    op = "moe_route"
    _checks.check_tensor(op, "logits", logits, _DTYPES, dim=2)
    if not isinstance(top_k, int) or not 1 <= top_k <= logits.shape[1]:
        _checks.fail(op, f"top_k must be an int in [1, E={logits.shape[1]}], got {top_k!r}")
    if use_kernel(op, backend, logits.device, *moe_route_support(logits, top_k)):
        return moe_route_kernel(logits, top_k)
    return moe_route_reference(logits, top_k)


def fused_moe_reference(hidden, w13, w2, topk_weights, topk_ids, expert_offset=0):
    out = torch.zeros_like(hidden)
    local = topk_ids.long() - expert_offset                                 # [N, k]
    for e in torch.unique(local[(local >= 0) & (local < w13.shape[0])]).tolist():
        token, slot = torch.where(local == e)
        y = swiglu_mlp_reference(hidden[token], w13[e], w2[e])
        y = (y.float() * topk_weights[token, slot, None].float()).to(hidden.dtype)
        out.index_add_(0, token, y)
    return out


def _check_experts(op, hidden, w13, w2, expert_offset):
    _checks.check_tensor(op, "hidden", hidden, _DTYPES, dim=2)
    _checks.check_tensor(op, "w13", w13, (hidden.dtype,), dim=3)
    _checks.check_tensor(op, "w2", w2, (hidden.dtype,), dim=3)
    E, H = w13.shape[0], hidden.shape[1]
    if w13.shape[2] != H or w13.shape[1] % 2:
        _checks.fail(op, f"w13 must have shape [E, 2*I, H={H}], got {list(w13.shape)}")
    _checks.check_shape(op, "w2", w2, [E, H, w13.shape[1] // 2], "[E, H, I]")
    for name, t in (("w13", w13), ("w2", w2)):
        _checks.check_same_device(op, name, t, hidden, "hidden")
    if not isinstance(expert_offset, int) or expert_offset < 0:
        _checks.fail(op, f"expert_offset must be an int >= 0, got {expert_offset!r}")


def _check_topk(op, hidden, topk_weights, topk_ids, num_experts):
    _checks.check_tensor(op, "topk_weights", topk_weights, (torch.float32,), dim=2)
    _checks.check_tensor(op, "topk_ids", topk_ids, _checks.INDEX_DTYPES, dim=2)
    if topk_weights.shape[0] != hidden.shape[0]:
        _checks.fail(op, f"topk_weights must have shape [N={hidden.shape[0]}, k], got {list(topk_weights.shape)}")
    _checks.check_shape(op, "topk_ids", topk_ids, list(topk_weights.shape), "topk_weights.shape")
    for name, t in (("topk_weights", topk_weights), ("topk_ids", topk_ids)):
        _checks.check_same_device(op, name, t, hidden, "hidden")
    if topk_ids.device.type == "cpu" and topk_ids.numel():
        lo, hi = int(topk_ids.min()), int(topk_ids.max())
        if lo < 0 or hi >= num_experts:
            _checks.fail(op, f"topk_ids must be in [0, num_experts={num_experts}), got min {lo} max {hi}")


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, expert_offset: int = 0, num_experts: int | None = None,
              backend: str | None = None) -> torch.Tensor:
    """Routed experts: ``out[n] = sum_j topk_weights[n, j] * expert_{topk_ids[n, j]}(hidden[n])`` over local experts.

    Args:
        hidden: ``[N, H]`` float32/float16/bfloat16.
        w13: ``[E_local, 2I, H]``, w2: ``[E_local, H, I]`` in hidden's dtype (module docstring).
        topk_weights: ``[N, k]`` float32; topk_ids: ``[N, k]`` int32/int64 global expert ids.
        expert_offset: global id of local expert 0; num_experts: global expert count (default
            ``expert_offset + E_local``), ids must be below it.
    Returns:
        ``[N, H]`` in hidden's dtype.
    """
    op = "fused_moe"
    _check_experts(op, hidden, w13, w2, expert_offset)
    total = expert_offset + w13.shape[0] if num_experts is None else num_experts
    if total < expert_offset + w13.shape[0]:
        _checks.fail(op, f"num_experts ({total}) must cover the local experts [{expert_offset}, "
                         f"{expert_offset + w13.shape[0]})")
    _check_topk(op, hidden, topk_weights, topk_ids, total)
    if use_kernel(op, backend, hidden.device, *fused_moe_support(hidden, w13, topk_ids.shape[1])):
        block_m = expert_parallel_block_m(topk_ids.numel(), w13.shape[0], total)
        return fused_moe_kernel(hidden, w13, w2, topk_weights, topk_ids, expert_offset, block_m=block_m)
    return fused_moe_reference(hidden, w13, w2, topk_weights, topk_ids, expert_offset)


def moe_block_reference(hidden, router_w, w13, w2, shared_w13, shared_w2, shared_gate_w, top_k, expert_offset=0):
    weights, ids = moe_route_reference(F.linear(hidden, router_w), top_k)    # router matmul in the activation dtype
    out = fused_moe_reference(hidden, w13, w2, weights, ids, expert_offset)
    if shared_w13 is not None:
        shared = swiglu_mlp_reference(hidden, shared_w13, shared_w2)
        out = out + torch.sigmoid(F.linear(hidden, shared_gate_w)) * shared
    return out


def moe_block(hidden: torch.Tensor, router_w: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              shared_w13: torch.Tensor | None, shared_w2: torch.Tensor | None, shared_gate_w: torch.Tensor | None,
              top_k: int, expert_offset: int = 0, backend: str | None = None) -> torch.Tensor:
    """The whole MoE block: ``route(hidden @ router_w^T)`` -> routed experts + ``sigmoid(hidden @ shared_gate_w^T)
    * shared_expert(hidden)``.

    Args:
        hidden: ``[N, H]``; router_w: ``[E_total, H]``; w13/w2: local experts (module docstring), hidden's dtype.
        shared_w13 ``[2Is, H]``, shared_w2 ``[H, Is]``, shared_gate_w ``[1, H]``: the shared expert, or all None.
        top_k: experts per token; expert_offset: global id of local expert 0.
    Returns:
        ``[N, H]`` in hidden's dtype.
    """
    op = "moe_block"
    _check_experts(op, hidden, w13, w2, expert_offset)
    _checks.check_tensor(op, "router_w", router_w, (hidden.dtype,), dim=2)
    _checks.check_dim_size(op, "router_w", router_w, 1, hidden.shape[1], "H")
    _checks.check_same_device(op, "router_w", router_w, hidden, "hidden")
    if router_w.shape[0] < expert_offset + w13.shape[0]:
        _checks.fail(op, f"router_w rows ({router_w.shape[0]}) must cover the local experts [{expert_offset}, "
                         f"{expert_offset + w13.shape[0]})")
    if not isinstance(top_k, int) or not 1 <= top_k <= router_w.shape[0]:
        _checks.fail(op, f"top_k must be an int in [1, E={router_w.shape[0]}], got {top_k!r}")
    shared = (shared_w13, shared_w2, shared_gate_w)
    if any(t is None for t in shared) and not all(t is None for t in shared):
        _checks.fail(op, "shared_w13, shared_w2 and shared_gate_w must be given together (or all None)")
    if shared_w13 is not None:
        check_swiglu_weights(op, hidden, shared_w13, shared_w2, prefix="shared_")
        _checks.check_tensor(op, "shared_gate_w", shared_gate_w, (hidden.dtype,), dim=2)
        _checks.check_shape(op, "shared_gate_w", shared_gate_w, [1, hidden.shape[1]], "[1, H]")
        _checks.check_same_device(op, "shared_gate_w", shared_gate_w, hidden, "hidden")
    route_ok, route_why = moe_route_support(hidden.new_empty(0, router_w.shape[0]), top_k)
    experts_ok, experts_why = fused_moe_support(hidden, w13, top_k)
    if not use_kernel(op, backend, hidden.device, route_ok and experts_ok, route_why or experts_why):
        return moe_block_reference(hidden, router_w, w13, w2, shared_w13, shared_w2, shared_gate_w, top_k,
                                   expert_offset)
    logits = linear(hidden, router_w, backend=backend, fallback=True)   # skinny kernel to 64 rows, else cuBLAS
    weights, ids = moe_route_kernel(logits, top_k)
    shared = None if shared_w13 is None else swiglu_mlp_projected(hidden, shared_w13, shared_w2, backend)
    block_m = expert_parallel_block_m(ids.numel(), w13.shape[0], router_w.shape[0])
    return fused_moe_kernel(hidden, w13, w2, weights, ids, expert_offset, shared, shared_gate_w, block_m)
