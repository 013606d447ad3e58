"""The chunked gated delta rule (and the recurrent reference) against an independent token-by-token float64
recurrence written here from the definition (MODEL_SPEC §3b.8), to <= 1e-10 (MODEL_SPEC §5.15)."""

import math

import pytest
import torch

import qwen35_native as q35

TOL = 1e-10


def definition(q, k, v, g, beta, cu_seqlens, initial_state, scale, l2norm):
    """Token by token over each sequence, all value heads at once; value head h reads q/k head h // (Hv // Hk)."""
    T, Hk, K = q.shape[1:]
    Hv, V = v.shape[2:]
    head = torch.arange(Hv) // (Hv // Hk)
    bounds = [0, T] if cu_seqlens is None else cu_seqlens.tolist()
    out = torch.zeros(T, Hv, V, dtype=torch.float64)
    finals = []
    for n in range(len(bounds) - 1):
        S = initial_state[n].clone() if initial_state is not None else torch.zeros(Hv, K, V, dtype=torch.float64)
        for t in range(bounds[n], bounds[n + 1]):
            qt, kt = q[0, t, head], k[0, t, head]                                  # [Hv, K]
            if l2norm:
                qt = qt / torch.sqrt((qt * qt).sum(-1, keepdim=True) + 1e-6)
                kt = kt / torch.sqrt((kt * kt).sum(-1, keepdim=True) + 1e-6)
            S = torch.exp(g[0, t])[:, None, None] * S
            prediction = torch.einsum("hkv,hk->hv", S, kt)
            S = S + torch.einsum("hk,hv->hkv", kt, beta[0, t][:, None] * (v[0, t] - prediction))
            out[t] = torch.einsum("hkv,hk->hv", S, qt * scale)
        finals.append(S)
    return out[None], torch.stack(finals)


def make_inputs(T, Hk, Hv, K, V, n_seq, with_state, l2norm, seed):
    gen = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=gen)
    q = torch.randn(1, T, Hk, K, **f64)
    k = torch.randn(1, T, Hk, K, **f64)
    if not l2norm:  # keep beta * |k|^2 < 2 so the recurrence stays bounded without the in-kernel L2 norm
        q, k = q / math.sqrt(K), 0.9 * k / k.norm(dim=-1, keepdim=True)
    v = torch.randn(1, T, Hv, V, **f64)
    g = -torch.rand(1, T, Hv, **f64) * 2.0
    g[0, :: 7] = -1e-4  # near-1 decay on some tokens: long memory across chunk boundaries
    beta = torch.rand(1, T, Hv, **f64)
    state = torch.randn(n_seq, Hv, K, V, **f64) if with_state else None
    return q, k, v, g, beta, state


CASES = [  # (lengths, Hk, Hv, K, V)
    ([1], 1, 1, 8, 8),
    ([63], 2, 2, 16, 8),
    ([64], 1, 3, 8, 12),
    ([65], 2, 6, 16, 24),
    ([200], 2, 4, 16, 24),
    ([1, 64, 130, 7], 2, 6, 8, 16),
    ([0, 5, 0, 70], 1, 2, 16, 8),
]


@pytest.mark.parametrize("lengths,Hk,Hv,K,V", CASES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("l2norm", [True, False])
def test_chunk_matches_definition(lengths, Hk, Hv, K, V, with_state, l2norm):
    T = sum(lengths)
    q, k, v, g, beta, state = make_inputs(T, Hk, Hv, K, V, len(lengths), with_state, l2norm, seed=T + Hv)
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)
    scale = 0.37 if not l2norm else K ** -0.5
    want_o, want_s = definition(q, k, v, g, beta, cu, state, scale, l2norm)
    for fn in (q35.ops.chunk_gated_delta_rule, q35.ops.fused_recurrent_gated_delta_rule):
        o, s = fn(q, k, v, g, beta, scale=None if l2norm else scale, initial_state=state, output_final_state=True,
                  cu_seqlens=cu, use_qk_l2norm_in_kernel=l2norm)
        assert o.dtype == torch.float64 and s.dtype == torch.float64
        assert (o - want_o).abs().max().item() <= TOL, fn.__name__
        assert (s - want_s).abs().max().item() <= TOL, fn.__name__


def test_batched_without_cu_seqlens_matches_definition():
    B, T, Hk, Hv, K, V = 3, 70, 2, 4, 8, 12
    rows = [make_inputs(T, Hk, Hv, K, V, 1, True, True, seed=b) for b in range(B)]
    q, k, v, g, beta, state = (torch.cat(parts) for parts in zip(*rows))
    o, s = q35.ops.chunk_gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=True,
                                          use_qk_l2norm_in_kernel=True)
    for b in range(B):
        want_o, want_s = definition(q[b:b + 1], k[b:b + 1], v[b:b + 1], g[b:b + 1], beta[b:b + 1], None,
                                    state[b:b + 1], K ** -0.5, True)
        assert (o[b:b + 1] - want_o).abs().max().item() <= TOL
        assert (s[b:b + 1] - want_s).abs().max().item() <= TOL


def test_no_final_state_unless_asked():
    q, k, v, g, beta, _ = make_inputs(10, 1, 1, 8, 8, 1, False, True, seed=0)
    o, s = q35.ops.chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
    assert s is None and o.shape == (1, 10, 1, 8)


def test_fp32_path_and_dtypes():
    q, k, v, g, beta, state = make_inputs(100, 2, 4, 16, 8, 1, True, True, seed=3)
    want_o, want_s = definition(q, k, v, g, beta, None, state, 16 ** -0.5, True)
    o, s = q35.ops.chunk_gated_delta_rule(q.float(), k.float(), v.float(), g.float(), beta.float(),
                                          initial_state=state.float(), output_final_state=True,
                                          use_qk_l2norm_in_kernel=True)
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert (o.double() - want_o).abs().max().item() < 1e-4
    assert (s.double() - want_s).abs().max().item() < 1e-4
