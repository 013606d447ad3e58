"""Inputs and fp32 oracles shared by the attention kernel tests (test_attention_prefill.py, test_attention_decode.py).

paged_inputs: a paged KV cache with shuffled blocks whose unused slots hold NaN (a kernel that reads a slot it must not
read, or multiplies a zero probability by a stale V row, produces NaN), queries and gates.
sdpa_expected: per-sequence torch.nn.functional.scaled_dot_product_attention in fp32 on the same rounded inputs.
"""

import torch
import torch.nn.functional as F


def paged_inputs(contexts, q_lens, Hq, Hkv, D=256, block_size=64, dtype=torch.bfloat16, device="cpu", seed=0,
                 spare_blocks=3):
    g = torch.Generator().manual_seed(seed)
    totals = [c + n for c, n in zip(contexts, q_lens)]
    nblocks = [-(-t // block_size) for t in totals]
    num_blocks = sum(nblocks) + spare_blocks
    order = torch.randperm(num_blocks, generator=g)
    tables = torch.full((len(totals), max(max(nblocks), 1) + 1), -1, dtype=torch.int32)  # one unused column
    start = 0
    for i, nb in enumerate(nblocks):
        tables[i, :nb] = order[start:start + nb]
        start += nb
    k_cache = torch.full((num_blocks, block_size, Hkv, D), float("nan"))
    v_cache = torch.full((num_blocks, block_size, Hkv, D), float("nan"))
    for i, total in enumerate(totals):
        slots = tables[i, torch.arange(total) // block_size].long() * block_size + torch.arange(total) % block_size
        k_cache.view(-1, Hkv, D)[slots] = torch.randn(total, Hkv, D, generator=g)
        v_cache.view(-1, Hkv, D)[slots] = torch.randn(total, Hkv, D, generator=g)
    T = sum(q_lens)
    q = torch.randn(T, Hq, D, generator=g)
    gate = torch.randn(T, Hq * D, generator=g) * 2
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    seq_lens = torch.tensor(totals, dtype=torch.int32)
    to = dict(device=device, dtype=dtype)
    return dict(q=q.to(**to), gate=gate.to(**to), k_cache=k_cache.to(**to), v_cache=v_cache.to(**to),
                block_tables=tables.to(device), seq_lens=seq_lens.to(device), cu_seqlens=cu.to(device))


def sdpa(q, k, v, mask):
    """q [L, Hq, D], k/v [S, Hkv, D] fp32 -> [L, Hq, D]; mask [L, S] of allowed pairs (None: all)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    o = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask)
    return o.transpose(0, 1)


def sdpa_paged_expected(inp, gated=True):
    """Per sequence [T_n, Hq*D] fp32: causal attention of the new queries over the cache, times sigmoid(gate)."""
    q, k_cache, v_cache = (inp[n].float().cpu() for n in ("q", "k_cache", "v_cache"))
    tables, seq_lens, cu = (inp[n].cpu() for n in ("block_tables", "seq_lens", "cu_seqlens"))
    gate = inp["gate"].float().cpu()
    out = []
    for n in range(seq_lens.numel()):
        s, e, S = int(cu[n]), int(cu[n + 1]), int(seq_lens[n])
        L = e - s
        if L == 0:
            out.append(q.new_zeros(0, q.shape[1] * q.shape[2]))
            continue
        k = k_cache[tables[n].long()].reshape(-1, *k_cache.shape[2:])[:S]
        v = v_cache[tables[n].long()].reshape(-1, *v_cache.shape[2:])[:S]
        mask = torch.arange(S)[None, :] <= (S - L + torch.arange(L))[:, None]
        o = sdpa(q[s:e], k, v, mask).reshape(L, -1)
        out.append(o * torch.sigmoid(gate[s:e]) if gated else o)
    return out


def assert_rel_close(got, expected, bound, what):
    """Relative error ||got - expected|| / ||expected|| <= bound (MODEL_SPEC §5), and no NaN."""
    got = got.float().cpu()
    assert not got.isnan().any(), f"{what}: NaN in the output"
    rel = ((got - expected).norm() / expected.norm().clamp(min=1e-30)).item()
    assert rel <= bound, f"{what}: relative error {rel:.3e} > {bound}"
