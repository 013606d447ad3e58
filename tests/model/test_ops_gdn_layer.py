"""GDN layer ops (conv1d, gating, gated norm, layer-level prefill/decode with state slots) against transformers'
torch functions (the oracle, MODEL_SPEC §8), and their input validation."""

import pytest
import torch
import torch.nn.functional as F

import qwen35_native as q35
from qwen35_native import ops

M = pytest.importorskip("transformers.models.qwen3_5_moe.modeling_qwen3_5_moe")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_causal_conv1d_matches_hf_with_states():
    g = gen(0)
    C, W = 12, 4
    lens = [2, 9, 1, 20]                               # shorter than W-1 too
    x = torch.randn(sum(lens), C, generator=g)
    w = torch.randn(C, W, generator=g)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    state = torch.randn(6, C, W - 1, generator=g)
    before = state.clone()
    slots = torch.tensor([5, 0, 3, 1], dtype=torch.int32)
    init = torch.tensor([True, False, True, True])
    y = ops.causal_conv1d(x, w, cu, state, slots, init)
    for n, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        prev = before[slots[n]] if init[n] else torch.zeros(C, W - 1)
        seq = torch.cat([prev, x[s:e].t()], dim=1)[None]                  # [1, C, W-1+L]
        ref = M.causal_conv1d_fn(seq, w, None, activation="silu")[0, :, W - 1:]
        assert (y[s:e] - ref.t()).abs().max() <= 1e-6
        assert torch.equal(state[slots[n]], seq[0, :, -(W - 1):])      # the last W-1 inputs, state included
    assert torch.equal(state[2], before[2]) and torch.equal(state[4], before[4])   # other slots untouched


def test_causal_conv1d_update_matches_hf():
    g = gen(1)
    C, W = 10, 4
    x, w = torch.randn(3, C, generator=g), torch.randn(C, W, generator=g)
    state = torch.randn(5, C, W - 1, generator=g)
    slots = torch.tensor([4, 1, 2])
    hf_state = torch.cat([torch.zeros(3, C, 1), state[slots]], dim=-1)   # HF keeps W columns
    ref = M.causal_conv1d_update(x[:, :, None], hf_state, w, None, "silu")[:, :, 0]
    y = ops.causal_conv1d_update(x, state, w, slots)
    assert (y - ref).abs().max() <= 1e-6
    assert torch.equal(state[slots], hf_state[:, :, 1:])


def test_gating_and_gated_norm_match_hf_bf16_bitwise():
    g = gen(2)
    a, b = torch.randn(7, 4, generator=g).bfloat16(), torch.randn(7, 4, generator=g).bfloat16()
    A_log = torch.empty(4).uniform_(0.01, 16, generator=g).log()
    dt = (1 + 0.5 * torch.randn(4, generator=g)).bfloat16()
    gg, beta = ops.gdn_gating(a, b, A_log, dt)
    assert gg.dtype == torch.float32 and beta.dtype == torch.bfloat16
    assert torch.equal(gg, -A_log.float().exp() * F.softplus(a.float() + dt))
    assert torch.equal(beta, b.sigmoid())
    norm = M.Qwen3_5MoeRMSNormGated(24, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(24, generator=g))
    x, z = torch.randn(5, 3, 24, generator=g), torch.randn(5, 3, 24, generator=g)
    assert (ops.gated_rms_norm(x, z, norm.weight.detach()) - norm(x, z)).abs().max() <= 1e-6
    norm = norm.bfloat16()
    assert torch.equal(ops.gated_rms_norm(x.bfloat16(), z.bfloat16(), norm.weight.detach()),
                       norm(x.bfloat16(), z.bfloat16()))


def _layer_inputs(T, Hk=2, Hv=4, K=16, V=24, W=4, slots=3, seed=3):
    g = gen(seed)
    conv_dim = 2 * Hk * K + Hv * V
    proj = torch.randn(T, conv_dim + Hv * V + 2 * Hv, generator=g)           # a fused projection: strided parts
    qkv, z, b, a = proj.split([conv_dim, Hv * V, Hv, Hv], dim=1)
    weights = dict(conv_weight=torch.randn(conv_dim, W, generator=g) * 0.5,
                   A_log=torch.empty(Hv).uniform_(0.01, 16, generator=g).log(),
                   dt_bias=1 + 0.5 * torch.randn(Hv, generator=g), norm_weight=1 + 0.1 * torch.randn(V, generator=g))
    states = dict(conv_state=torch.randn(slots, conv_dim, W - 1, generator=g),
                  ssm_state=torch.randn(slots, Hv, K, V, generator=g))
    return qkv, z, a, b, weights, states, (Hk, Hv, K, V)


def _hf_layer(qkv, z, a, b, w, conv0, ssm0, dims):
    """HF's GatedDeltaNet math for one sequence continuing from (conv0, ssm0) (None: from scratch)."""
    Hk, Hv, K, V = dims
    T, W = qkv.shape[0], w["conv_weight"].shape[1]
    prev = conv0 if conv0 is not None else torch.zeros(qkv.shape[1], W - 1)
    y = M.causal_conv1d_fn(torch.cat([prev, qkv.t()], 1)[None], w["conv_weight"], None, activation="silu")
    y = y[0, :, W - 1:].t()
    q, k, v = y.split([Hk * K, Hk * K, Hv * V], dim=1)
    beta = b.sigmoid()[None]
    g = (-w["A_log"].float().exp() * F.softplus(a.float() + w["dt_bias"]))[None]
    o, s = M.torch_chunk_gated_delta_rule(q.reshape(1, T, Hk, K), k.reshape(1, T, Hk, K), v.reshape(1, T, Hv, V), g,
                                          beta, initial_state=None if ssm0 is None else ssm0[None],
                                          output_final_state=True, use_qk_l2norm_in_kernel=True)
    norm = M.Qwen3_5MoeRMSNormGated(V)
    with torch.no_grad():
        norm.weight.copy_(w["norm_weight"])
    return norm(o[0], z.reshape(T, Hv, V)).reshape(T, Hv * V), s[0]


def test_gdn_prefill_and_decode_match_hf():
    lens = [5, 70, 1]
    qkv, z, a, b, w, st, dims = _layer_inputs(sum(lens) + 2)
    cu = torch.tensor([0, 5, 75, 76], dtype=torch.int32)
    slots, init = torch.tensor([2, 0, 1], dtype=torch.int32), torch.tensor([True, False, True])
    before = {k: v.clone() for k, v in st.items()}
    T = 76
    out = ops.gdn_prefill(qkv[:T], z[:T], a[:T], b[:T], **w, **st, cu_seqlens=cu, slots=slots, has_initial_state=init)
    for n, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        c0, s0 = (before["conv_state"][slots[n]], before["ssm_state"][slots[n]]) if init[n] else (None, None)
        ref, ref_state = _hf_layer(qkv[s:e], z[s:e], a[s:e], b[s:e], w, c0, s0, dims)
        assert (out[s:e] - ref).abs().max() <= 1e-5
        assert (st["ssm_state"][slots[n]] - ref_state).abs().max() <= 1e-5
    # two decode steps on sequences 0 and 2 equal HF's math continuing from the states prefill wrote
    for t in (T, T + 1):
        conv0 = [st["conv_state"][i].clone() for i in (2, 1)]
        ssm0 = [st["ssm_state"][i].clone() for i in (2, 1)]
        rows = slice(t, t + 1)
        dec = ops.gdn_decode(qkv[rows].expand(2, -1), z[rows].expand(2, -1), a[rows].expand(2, -1),
                             b[rows].expand(2, -1), **w, **st, slots=torch.tensor([2, 1]))
        for j in range(2):
            ref, ref_state = _hf_layer(qkv[rows], z[rows], a[rows], b[rows], w, conv0[j], ssm0[j], dims)
            assert (dec[j] - ref[0]).abs().max() <= 1e-5
            assert (st["ssm_state"][(2, 1)[j]] - ref_state).abs().max() <= 1e-5


def test_layer_ops_reject_bad_inputs():
    qkv, z, a, b, w, st, _ = _layer_inputs(6)
    cu = torch.tensor([0, 6], dtype=torch.int32)
    good = dict(cu_seqlens=cu, slots=torch.tensor([0], dtype=torch.int32), has_initial_state=torch.tensor([False]))
    with pytest.raises(ValueError, match=r"gdn_prefill: slots values must be in \[0, num_slots=3\)"):
        ops.gdn_prefill(qkv, z, a, b, **w, **st, **{**good, "slots": torch.tensor([3], dtype=torch.int32)})
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        ops.gdn_prefill(qkv, z, a, b, **w, **st, **{**good, "cu_seqlens": torch.tensor([0, 5], dtype=torch.int32)})
    with pytest.raises(TypeError, match="ssm_state must have dtype float32"):
        ops.gdn_prefill(qkv, z, a, b, **w, **{**st, "ssm_state": st["ssm_state"].double()}, **good)
    with pytest.raises(ValueError, match="mixed_qkv width"):
        ops.gdn_prefill(qkv[:, 1:], z, a, b, **w, **st, **good)
    with pytest.raises(ValueError, match="must not repeat a slot"):
        ops.gdn_decode(qkv[:2], z[:2], a[:2], b[:2], **w, **st, slots=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="gdn_prefill: backend='kernel' does not support this input: mixed_qkv has "
                                         "dtype float32"):
        ops.gdn_prefill(qkv, z, a, b, **w, **st, **good, backend="kernel")
    with pytest.raises(ValueError, match="backend must be"):
        ops.gdn_decode(qkv[:1], z[:1], a[:1], b[:1], **w, **st, slots=torch.tensor([0]), backend="cuda")
    with pytest.raises(ValueError, match="conv_state must have shape"):
        ops.causal_conv1d(qkv, w["conv_weight"], conv_state=st["conv_state"][:, :, :2], slots=torch.tensor([0]))


def test_fla_functions_reject_bad_inputs():
    q = torch.randn(1, 8, 2, 16)
    v, g, beta = torch.randn(1, 8, 3, 8), -torch.rand(1, 8, 3), torch.rand(1, 8, 3)
    with pytest.raises(ValueError, match="v heads must be a positive multiple of q/k heads"):
        q35.ops.chunk_gated_delta_rule(q, q, v, g, beta)
    v = torch.randn(1, 8, 4, 8)
    with pytest.raises(ValueError, match="g must have shape"):
        q35.ops.chunk_gated_delta_rule(q, q, v, g, torch.rand(1, 8, 4))
    g, beta = -torch.rand(1, 8, 4), torch.rand(1, 8, 4)
    with pytest.raises(ValueError, match="q batch must be 1 when cu_seqlens is given"):
        q35.ops.chunk_gated_delta_rule(q.expand(2, -1, -1, -1), q.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1),
                                       g.expand(2, -1, -1), beta.expand(2, -1, -1), cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match=r"initial_state must have shape \[N, Hv, K, V\]"):
        q35.ops.fused_recurrent_gated_delta_rule(q, q, v, g, beta, initial_state=torch.zeros(1, 4, 8, 16))
    with pytest.raises(TypeError, match="k must have dtype float32"):
        q35.ops.chunk_gated_delta_rule(q, q.bfloat16(), v, g, beta)
    with pytest.raises(ValueError, match="chunk_gated_delta_rule: backend='kernel' does not support this input: q has "
                                         "dtype float32"):
        q35.ops.chunk_gated_delta_rule(q, q, v, g, beta, backend="kernel")
