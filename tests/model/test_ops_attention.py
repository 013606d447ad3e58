"""Attention ops: pre-attention (q/gate split, q/k norm, 3-stream interleaved M-RoPE, paged KV write) against
transformers' modules; paged prefill/decode and vision varlen attention against fp32 scaled_dot_product_attention."""

import pytest
import torch
import torch.nn.functional as F

from qwen35_native import ops

M = pytest.importorskip("transformers.models.qwen3_5_moe.modeling_qwen3_5_moe")
transformers = pytest.importorskip("transformers")


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("head_dim,section,Hq,Hkv", [(256, [11, 11, 10], 4, 2), (32, [2, 1, 1], 3, 1)])
def test_attention_prep_matches_hf(head_dim, section, Hq, Hkv):
    g, T, D, theta = gen(0), 9, head_dim, 1e7
    cfg = transformers.Qwen3_5MoeTextConfig(head_dim=D, num_hidden_layers=1, rope_parameters=dict(
        rope_type="default", rope_theta=theta, partial_rotary_factor=0.25, mrope_section=section))
    qkv = torch.randn(T, (2 * Hq + 2 * Hkv) * D + 5, generator=g)[:, 5:]          # strided rows
    qn, kn = M.Qwen3_5MoeRMSNorm(D), M.Qwen3_5MoeRMSNorm(D)
    with torch.no_grad():
        qn.weight.normal_(0, 0.2, generator=g)
        kn.weight.normal_(0, 0.2, generator=g)
    positions = torch.stack([torch.arange(T) + 3, torch.arange(T) % 4 + 3, torch.arange(T) // 2 + 3])  # T, H, W
    k_cache, v_cache = torch.full((4, 4, Hkv, D), float("nan")), torch.full((4, 4, Hkv, D), float("nan"))
    slot_mapping = torch.tensor([5, 6, 7, 8, 9, 12, 13, -1, 0])
    q, gate = ops.attention_prep(qkv, qn.weight.detach(), kn.weight.detach(), positions, k_cache, v_cache,
                                 slot_mapping, D // 4, section, theta)
    # HF: q_proj view [T, Hq, 2D] chunked, norms, rotary on [B, H, T, D] with cos/sin from 3-stream positions
    q_ref, gate_ref = torch.chunk(qkv[:, :2 * Hq * D].reshape(T, Hq, 2 * D), 2, dim=-1)
    k_ref = qkv[:, 2 * Hq * D:(2 * Hq + Hkv) * D].reshape(T, Hkv, D)
    v_ref = qkv[:, (2 * Hq + Hkv) * D:].reshape(T, Hkv, D)
    cos, sin = M.Qwen3_5MoeTextRotaryEmbedding(cfg)(qkv, positions[:, None])
    with torch.no_grad():
        q_ref, k_ref = M.apply_rotary_pos_emb(qn(q_ref).transpose(0, 1)[None], kn(k_ref).transpose(0, 1)[None],
                                              cos, sin)
    assert (q - q_ref[0].transpose(0, 1)).abs().max() <= 1e-5
    assert torch.equal(gate, gate_ref.reshape(T, Hq * D))
    k_ref = k_ref[0].transpose(0, 1)
    for t, s in enumerate(slot_mapping.tolist()):
        if s >= 0:
            assert (k_cache.view(-1, Hkv, D)[s] - k_ref[t]).abs().max() <= 1e-5
            assert torch.equal(v_cache.view(-1, Hkv, D)[s], v_ref[t])
    assert torch.isnan(k_cache.view(-1, Hkv, D)[[1, 2, 3, 4, 10, 11, 14, 15]]).all()   # nothing else written


def sdpa(q, k, v, mask):
    """fp32 reference: q [L, Hq, D], k/v [S, Hkv, D] -> [L, Hq, D]; mask [L, S] of allowed pairs."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    o = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask)
    return o.transpose(0, 1)


def _paged(contexts, q_lens, Hq=8, Hkv=2, D=64, bs=16, seed=1):
    """Random paged cache holding context + new tokens per sequence (shuffled blocks), plus new queries."""
    g = gen(seed)
    totals = [c + n for c, n in zip(contexts, q_lens)]
    nblocks = [-(-t // bs) for t in totals]
    order = torch.randperm(sum(nblocks) + 3, generator=g)
    tables, start = torch.zeros(len(totals), max(nblocks), dtype=torch.int32), 0
    for i, nb in enumerate(nblocks):
        tables[i, :nb] = order[start:start + nb]
        start += nb
    k_cache = torch.randn(sum(nblocks) + 3, bs, Hkv, D, generator=g)
    v_cache = torch.randn(sum(nblocks) + 3, bs, Hkv, D, generator=g)
    q = torch.randn(sum(q_lens), Hq, D, generator=g)
    gate = torch.randn(sum(q_lens), Hq * D, generator=g)
    return q, gate, k_cache, v_cache, tables, torch.tensor(totals, dtype=torch.int32)


def _expected(q, gate, k_cache, v_cache, tables, seq_lens, q_lens):
    out, s = [], 0
    for n, L in enumerate(q_lens):
        S = int(seq_lens[n])
        k = k_cache[tables[n].long()].reshape(-1, *k_cache.shape[2:])[:S]
        v = v_cache[tables[n].long()].reshape(-1, *v_cache.shape[2:])[:S]
        mask = torch.arange(S)[None, :] <= (S - L + torch.arange(L))[:, None]
        o = sdpa(q[s:s + L], k, v, mask).reshape(L, -1)
        out.append(o * torch.sigmoid(gate[s:s + L]))
        s += L
    return torch.cat(out)


@pytest.mark.parametrize("query_block", [1024, 16])   # the reference's query blocking (bounded score memory)
def test_paged_prefill_attention_matches_sdpa(query_block, monkeypatch):
    monkeypatch.setattr(ops.attention, "_QUERY_BLOCK", query_block)
    contexts, q_lens = [0, 17, 40, 3], [1, 64, 129, 17]     # fresh prompts and chunked prefill continuations
    q, gate, k_cache, v_cache, tables, seq_lens = _paged(contexts, q_lens)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    out = ops.paged_prefill_attention(q, k_cache, v_cache, cu, seq_lens, tables, gate)
    assert (out - _expected(q, gate, k_cache, v_cache, tables, seq_lens, q_lens)).abs().max() <= 1e-5
    ungated = ops.paged_prefill_attention(q, k_cache, v_cache, cu, seq_lens, tables)
    assert (ungated * torch.sigmoid(gate) - out).abs().max() <= 1e-5


@pytest.mark.parametrize("per_seq", [1, 3])
def test_paged_decode_attention_matches_sdpa(per_seq):
    contexts = [15, 16, 100, 0]                               # contexts that do and do not fill a page
    q, gate, k_cache, v_cache, tables, seq_lens = _paged(contexts, [per_seq] * 4, Hq=16, Hkv=1, seed=2)
    out = ops.paged_decode_attention(q, k_cache, v_cache, seq_lens, tables, gate)
    assert (out - _expected(q, gate, k_cache, v_cache, tables, seq_lens, [per_seq] * 4)).abs().max() <= 1e-5


@pytest.mark.parametrize("D", [72, 64])
def test_varlen_attention_is_block_diagonal(D):
    g = gen(3)
    cu = torch.tensor([0, 16, 80, 84])
    q, k, v = (torch.randn(84, 4, D, generator=g) for _ in range(3))
    out = ops.varlen_attention(q, k, v, cu)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        assert (out[s:e] - sdpa(q[s:e], k[s:e], v[s:e], None)).abs().max() <= 1e-5
    causal = ops.varlen_attention(q, k, v, cu, causal=True)
    mask = torch.ones(64, 64, dtype=torch.bool).tril()
    assert (causal[16:80] - sdpa(q[16:80], k[16:80], v[16:80], mask)).abs().max() <= 1e-5


def test_attention_ops_reject_bad_inputs():
    q, gate, k_cache, v_cache, tables, seq_lens = _paged([5, 0], [2, 3])
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    with pytest.raises(ValueError, match="seq_lens must count the new tokens too"):
        ops.paged_prefill_attention(q, k_cache, v_cache, cu, torch.tensor([7, 2], dtype=torch.int32), tables)
    with pytest.raises(ValueError, match="block_tables width"):
        ops.paged_prefill_attention(q, k_cache, v_cache, cu, torch.tensor([7, 40], dtype=torch.int32), tables)
    with pytest.raises(TypeError, match="block_tables must have dtype int32"):
        ops.paged_prefill_attention(q, k_cache, v_cache, cu, seq_lens, tables.long())
    with pytest.raises(ValueError, match="q heads"):
        ops.paged_prefill_attention(q[:, :3], k_cache, v_cache, cu, seq_lens, tables)
    with pytest.raises(TypeError, match="k_cache must have dtype bfloat16"):
        ops.paged_decode_attention(q.bfloat16()[:2], k_cache, v_cache, seq_lens, tables)
    with pytest.raises(ValueError, match="positive multiple of the sequence count"):
        ops.paged_decode_attention(q, k_cache, v_cache, seq_lens, tables)
    with pytest.raises(ValueError, match="mrope_section must be 3 ints"):
        ops.attention_prep(torch.randn(2, 12 * 64), torch.zeros(64), torch.zeros(64),
                           torch.zeros(3, 2, dtype=torch.long), k_cache, v_cache, torch.tensor([0, 1]), 16, [4, 2, 1],
                           1e4)
    with pytest.raises(ValueError, match=r"paged_decode_attention: backend='kernel' does not support this input: "
                                         r"q dtype float32"):
        ops.paged_decode_attention(q[:2], k_cache, v_cache, seq_lens, tables, backend="kernel")
