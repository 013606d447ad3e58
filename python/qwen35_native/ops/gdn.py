"""Gated delta rule (Gated DeltaNet linear attention), MODEL_SPEC §3b, with flash-linear-attention conventions.

Recurrence per sequence and value head ``h`` (q/k head ``h // (Hv // Hk)``), state ``S`` ``[K, V]`` in fp32::

    S   = exp(g_t) * S
    S   = S + k_t (beta_t * (v_t - S^T k_t))^T        # delta rule
    o_t = S^T (scale * q_t)

Shapes and dtypes (every function here):
    q, k: ``[B, T, Hk, K]``; v: ``[B, T, Hv, V]`` with ``Hv % Hk == 0``; all float16/bfloat16/float32 (float64 runs
    the reference only, for exactness checks); ``g`` ``[B, T, Hv]`` log decay (<= 0) in float32 or q's dtype;
    ``beta`` ``[B, T, Hv]`` in q's dtype or float32; ``initial_state`` / final state ``[N, Hv, K, V]`` float32
    (float64 for float64 inputs); ``cu_seqlens`` int32/int64 ``[N+1]``: then ``B == 1`` and the N sequences are
    packed along T, otherwise N == B. Output ``o`` ``[B, T, Hv, V]`` in q's dtype.

Kernels: csrc/kernels/gdn/ (design: csrc/kernels/gdn/README.md): the chunked scan (float16/bfloat16, K = V = 128)
and the recurrent step (any float dtype, K = V = 128). Tests: tests/model/test_gdn_float64.py (references),
tests/kernels/test_gdn_chunk*.py, tests/kernels/test_gdn_recurrent.py. Bench: bench/gdn.py.
"""

from __future__ import annotations

import torch

from . import _checks, _gdn_pack
from ._backend import use_kernel

GDN_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
CHUNK_SIZE = 64
KERNEL_HEAD_DIM = 128            # the kernels' K = V (every Qwen3.5 size)
SHORTCUT_LOG_DECAY = -12.0       # split prefill: segments may start from a warm-up once it decays below this
AUTO_SEGMENT = 0                 # split prefill: segment length chosen by the kernel from the SM count


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x * rsqrt(sum(x^2, -1) + eps)`` (FLA's and HF's convention: eps inside the rsqrt, in x's dtype)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(op, q, k, v, g, beta, scale, initial_state, cu_seqlens) -> int:
    """Validates the FLA-style arguments; returns the number of sequences N."""
    _checks.check_tensor(op, "q", q, GDN_DTYPES, dim=4)
    _checks.check_tensor(op, "k", k, (q.dtype,), dim=4)
    _checks.check_tensor(op, "v", v, (q.dtype,), dim=4)
    B, T, Hk, K = q.shape
    _checks.check_shape(op, "k", k, list(q.shape), "q.shape")
    if v.shape[0] != B or v.shape[1] != T:
        _checks.fail(op, f"v must have shape [B, T, Hv, V] with B, T = {B}, {T} from q, got {list(v.shape)}")
    Hv = v.shape[2]
    if Hk == 0 or Hv % Hk != 0:
        _checks.fail(op, f"v heads must be a positive multiple of q/k heads ({Hk}), got {Hv}")
    _checks.check_tensor(op, "g", g, (torch.float32, q.dtype))
    _checks.check_shape(op, "g", g, [B, T, Hv], "[B, T, Hv]")
    _checks.check_tensor(op, "beta", beta, (q.dtype, torch.float32))
    _checks.check_shape(op, "beta", beta, [B, T, Hv], "[B, T, Hv]")
    for name, t in (("k", k), ("v", v), ("g", g), ("beta", beta)):
        _checks.check_same_device(op, name, t, q, "q")
    if scale is not None and not scale > 0:
        _checks.fail(op, f"scale must be > 0 or None, got {scale}")
    n = B
    if cu_seqlens is not None:
        _checks.check_same_device(op, "cu_seqlens", cu_seqlens, q, "q")
        if B != 1:
            _checks.fail(op, f"q batch must be 1 when cu_seqlens is given (sequences packed along T), got {B}")
        n = _checks.check_cu_seqlens(op, cu_seqlens, T)
    if initial_state is not None:
        _checks.check_tensor(op, "initial_state", initial_state, (_compute_dtype(q),))
        _checks.check_same_device(op, "initial_state", initial_state, q, "q")
        _checks.check_shape(op, "initial_state", initial_state, [n, Hv, K, v.shape[3]], "[N, Hv, K, V]")
    return n


def _to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor | None):
    """[B, T, ...] -> [N, Lmax, ...] zero-padded at the end of each sequence, plus the gather map (or None)."""
    if cu_seqlens is None:
        return x, None
    cu = cu_seqlens.to(device=x.device, dtype=torch.long)
    lens = cu[1:] - cu[:-1]
    lmax = int(lens.max()) if lens.numel() else 0
    pos = torch.arange(lmax, device=x.device)
    valid = pos[None, :] < lens[:, None]                                     # [N, Lmax]
    idx = (cu[:-1, None] + pos[None, :]).clamp(max=max(x.shape[1] - 1, 0))  # [N, Lmax]
    xp = x[0][idx] if x.shape[1] else x.new_zeros(idx.shape + x.shape[2:])
    mask = valid.reshape(valid.shape + (1,) * (x.dim() - 2))
    return xp * mask.to(xp.dtype), (idx, valid)


def _from_padded(xp: torch.Tensor, gather, total: int) -> torch.Tensor:
    if gather is None:
        return xp
    idx, valid = gather
    out = xp.new_zeros((1, total) + xp.shape[2:])
    out[0, idx[valid]] = xp[valid]
    return out


def _prepare(q, k, v, g, beta, scale, use_qk_l2norm, cu_seqlens):
    """Head-major compute-dtype tensors [N, Hv, L, .] (q/k expanded to the v heads, q scaled), plus the gather map."""
    cdt = _compute_dtype(q)
    group = v.shape[2] // q.shape[2]
    q, k, v, g, beta = (t.to(cdt) for t in (q, k, v, g, beta))
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    q, k = q.repeat_interleave(group, dim=2), k.repeat_interleave(group, dim=2)
    gather = None
    padded = []
    for t in (q, k, v, g, beta):
        tp, gather = _to_padded(t, cu_seqlens)
        padded.append(tp.transpose(1, 2))  # [N, Hv, L, .] or [N, Hv, L]
    return padded, gather


def _chunk_scan(q, k, v, g, beta, state, chunk: int = CHUNK_SIZE):
    """Chunked form of the recurrence for [N, H, L, .] tensors (MODEL_SPEC §3b.9); returns (o, final state)."""
    N, H, L, K = q.shape
    V = v.shape[-1]
    pad = (-L) % chunk
    if pad:  # zero keys, values, beta and log decay leave the state untouched
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g, beta = (torch.nn.functional.pad(t, (0, pad)) for t in (g, beta))
    n = (L + pad) // chunk
    q, k, v = (t.reshape(N, H, n, chunk, t.shape[-1]) for t in (q, k, v))
    G = g.reshape(N, H, n, chunk).cumsum(-1)                                  # within-chunk cumulative log decay
    beta = beta.reshape(N, H, n, chunk, 1)
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    gamma = torch.where(lower, G[..., :, None] - G[..., None, :], -torch.inf).exp()  # [.., C, C], 0 above diag
    kb = k * beta
    system = ((kb @ k.transpose(-1, -2)) * gamma).tril(-1) + torch.eye(chunk, dtype=q.dtype, device=q.device)
    u = torch.linalg.solve_triangular(system, v * beta, upper=False, unitriangular=True)        # [.., C, V]
    w = torch.linalg.solve_triangular(system, kb * G.exp()[..., None], upper=False, unitriangular=True)
    intra = (q @ k.transpose(-1, -2)) * gamma                                 # causal incl. the diagonal
    q_decayed = q * G.exp()[..., None]
    o = q.new_empty(N, H, n, chunk, V)
    for i in range(n):
        v_new = u[:, :, i] - w[:, :, i] @ state                               # [N, H, C, V]
        o[:, :, i] = q_decayed[:, :, i] @ state + intra[:, :, i] @ v_new
        g_last = G[:, :, i, -1:]                                              # [N, H, 1]
        k_tail = k[:, :, i] * (g_last - G[:, :, i]).exp()[..., None]
        state = state * g_last.exp()[..., None] + k_tail.transpose(-1, -2) @ v_new
    return o.reshape(N, H, n * chunk, V)[:, :, :L], state


def _recurrent_scan(q, k, v, g, beta, state, states_out=None):
    """Token-by-token recurrence for [N, H, L, .] tensors; returns (o, final state). ``states_out`` (a list)
    receives the state after every token, [N, H, K, V] each."""
    o = torch.empty_like(v)
    for t in range(q.shape[2]):
        state = state * g[:, :, t].exp()[..., None, None]
        kv = (state * k[:, :, t, :, None]).sum(-2)                              # S^T k  [N, H, V]
        delta = (v[:, :, t] - kv) * beta[:, :, t, None]
        state = state + k[:, :, t, :, None] * delta[:, :, None, :]
        o[:, :, t] = (state * q[:, :, t, :, None]).sum(-2)
        if states_out is not None:
            states_out.append(state)
    return o, state


def _run_reference(scan, q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm,
                   states_out=None):
    B, T = q.shape[:2]
    Hv, K, V = v.shape[2], q.shape[3], v.shape[3]
    (qp, kp, vp, gp, bp), gather = _prepare(q, k, v, g, beta, scale, use_qk_l2norm, cu_seqlens)
    n = qp.shape[0]
    state = (initial_state.to(qp.dtype).clone() if initial_state is not None
             else qp.new_zeros(n, Hv, K, V))
    o, state = scan(qp, kp, vp, gp, bp, state) if states_out is None else scan(qp, kp, vp, gp, bp, state, states_out)
    o = _from_padded(o.transpose(1, 2), gather, T).to(q.dtype)                # [B, T, Hv, V]
    return o, (state if output_final_state else None)


def chunk_gated_delta_rule_reference(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                                     cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """Pure-torch chunked (C = 64) scan in fp32 (float64 for float64 inputs). Same contract as the wrapper."""
    return _run_reference(_chunk_scan, q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                          use_qk_l2norm_in_kernel)


def fused_recurrent_gated_delta_rule_reference(q, k, v, g, beta, scale=None, initial_state=None,
                                               output_final_state=False, cu_seqlens=None,
                                               use_qk_l2norm_in_kernel=False, output_intermediate_states=False):
    """Pure-torch token-by-token recurrence in fp32 (float64 for float64 inputs). Same contract as the wrapper."""
    if not output_intermediate_states:
        return _run_reference(_recurrent_scan, q, k, v, g, beta, scale, initial_state, output_final_state,
                              cu_seqlens, use_qk_l2norm_in_kernel)
    states: list[torch.Tensor] = []
    o, final = _run_reference(_recurrent_scan, q, k, v, g, beta, scale, initial_state, output_final_state,
                              cu_seqlens, use_qk_l2norm_in_kernel, states)
    B, T, Hv, K, V = q.shape[0], q.shape[1], v.shape[2], q.shape[3], v.shape[3]
    if not states:
        return o, final, q.new_zeros((B, T, Hv, K, V), dtype=_compute_dtype(q))
    stacked = torch.stack(states, dim=1)                                      # [N, Lmax, Hv, K, V]
    _, gather = _to_padded(q, cu_seqlens)
    return o, final, _from_padded(stacked, gather, T)


def _kernel_support(q: torch.Tensor, v: torch.Tensor, dtypes) -> tuple[bool, str]:
    if q.dtype not in dtypes:
        names = "/".join(str(d)[6:] for d in dtypes)
        return False, f"q has dtype {str(q.dtype)[6:]} (the kernel takes {names})"
    if q.shape[-1] != KERNEL_HEAD_DIM or v.shape[-1] != KERNEL_HEAD_DIM:
        return False, f"head dims K={q.shape[-1]}, V={v.shape[-1]} (the kernel supports K = V = {KERNEL_HEAD_DIM})"
    return True, ""


def chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                           scale: float | None = None, initial_state: torch.Tensor | None = None,
                           output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                           use_qk_l2norm_in_kernel: bool = False, backend: str | None = None):
    """Gated delta rule over whole sequences (prefill), chunked scan.

    Args (shapes and dtypes in the module docstring):
        q, k, v, g, beta: inputs; ``scale`` defaults to ``K ** -0.5`` and multiplies q after the optional L2 norm.
        initial_state: ``[N, Hv, K, V]`` state before the first token of each sequence (zeros when None).
        output_final_state: also return the state after the last token of each sequence.
        cu_seqlens: ``[N+1]`` offsets of the sequences packed along T (B must be 1).
        use_qk_l2norm_in_kernel: L2-normalise q and k per head (eps 1e-6 inside the rsqrt) in fp32 first.
    Returns:
        ``(o [B, T, Hv, V] in q's dtype, final_state [N, Hv, K, V] float32 or None)``.
    Kernel: float16/bfloat16 with K = V = 128 (others: the reference under ``auto``, an error under ``kernel``).
    """
    op = "chunk_gated_delta_rule"
    _check(op, q, k, v, g, beta, scale, initial_state, cu_seqlens)
    supported, why = _kernel_support(q, v, (torch.float16, torch.bfloat16))
    if not use_kernel(op, backend, q.device, supported, why):
        return chunk_gated_delta_rule_reference(q, k, v, g, beta, scale, initial_state, output_final_state,
                                                cu_seqlens, use_qk_l2norm_in_kernel)
    args = _gdn_pack.pack_fla(q, k, v, g, beta, scale, initial_state, cu_seqlens, True)
    o = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    final = _gdn_pack.empty_state(args.cu_seqlens.numel() - 1, v.shape[2], q.device) if output_final_state else None
    torch.ops.qwen35_native.chunk_gated_delta_rule(*args.tensors, args.scale, args.initial_state, args.cu_seqlens,
                                                   use_qk_l2norm_in_kernel, AUTO_SEGMENT, SHORTCUT_LOG_DECAY,
                                                   o.view(-1, v.shape[2], v.shape[3]), final)
    return o, final


def fused_recurrent_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                                     beta: torch.Tensor, scale: float | None = None,
                                     initial_state: torch.Tensor | None = None, output_final_state: bool = False,
                                     cu_seqlens: torch.Tensor | None = None, use_qk_l2norm_in_kernel: bool = False,
                                     output_intermediate_states: bool = False, backend: str | None = None):
    """Gated delta rule token by token (decode steps, a few tokens per sequence). Same contract as
    :func:`chunk_gated_delta_rule`; for the in-place, slot-indexed decode step of the model see
    ``ops.gdn_layer.gdn_decode``.

    ``output_intermediate_states=True`` (speculative verification: k draft tokens per sequence) also returns the
    state after every token, ``[B, T, Hv, K, V]`` float32 (packed like q), as a third result; the caller keeps the
    one of the last accepted token (nothing is written back).
    Kernel: float32/float16/bfloat16 with K = V = 128.
    """
    op = "fused_recurrent_gated_delta_rule"
    _check(op, q, k, v, g, beta, scale, initial_state, cu_seqlens)
    supported, why = _kernel_support(q, v, (torch.float32, torch.float16, torch.bfloat16))
    if not use_kernel(op, backend, q.device, supported, why):
        return fused_recurrent_gated_delta_rule_reference(q, k, v, g, beta, scale, initial_state, output_final_state,
                                                          cu_seqlens, use_qk_l2norm_in_kernel,
                                                          output_intermediate_states)
    args = _gdn_pack.pack_fla(q, k, v, g, beta, scale, initial_state, cu_seqlens, False)
    B, T, Hv, V = v.shape
    n = cu_seqlens.numel() - 1 if cu_seqlens is not None else B
    o = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    final = _gdn_pack.empty_state(n, Hv, q.device) if output_final_state else None
    states = _gdn_pack.empty_state(B * T, Hv, q.device) if output_intermediate_states else None
    torch.ops.qwen35_native.fused_recurrent_gated_delta_rule(*args.tensors, args.scale, args.initial_state,
                                                             args.cu_seqlens, B, use_qk_l2norm_in_kernel,
                                                             o.view(B * T, Hv, V), final, states)
    if not output_intermediate_states:
        return o, final
    return o, final, states.view(B, T, Hv, q.shape[3], V)
