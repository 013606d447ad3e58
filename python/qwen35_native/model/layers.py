"""Token mixers of the decoder layers: Gated DeltaNet (MODEL_SPEC §3b) and gated full attention (§3c).

Both work on packed tokens ``x [T, H]`` of the sequences described by a :class:`~.cache.ForwardBatch` and read and
write their caches in place. Every op goes through ``qwen35_native.ops`` with the backend picked at load time.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .cache import ForwardBatch
from .config import TextConfig


def _project(x: torch.Tensor, weight: torch.Tensor, backend: str | None) -> torch.Tensor:
    """``x @ weight^T``: the skinny kernels for the few rows of a decode step, cuBLAS for larger batches."""
    return ops.linear(x, weight, backend=backend, fallback=True)


def _param(*shape: int, dtype: torch.dtype, device) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class GatedDeltaNet(nn.Module):
    def __init__(self, cfg: TextConfig, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.cfg, self.backends = cfg, backends
        H, Hv = cfg.hidden_size, cfg.linear_num_value_heads
        self.split = [cfg.conv_dim, cfg.linear_value_dim, Hv, Hv]                  # qkv | z | b | a
        self.in_proj = _param(sum(self.split), H, dtype=dtype, device=device)
        self.conv_weight = _param(cfg.conv_dim, cfg.linear_conv_kernel_dim, dtype=dtype, device=device)
        self.A_log = _param(Hv, dtype=torch.float32, device=device)
        self.dt_bias = _param(Hv, dtype=dtype, device=device)
        self.norm_weight = _param(cfg.linear_value_head_dim, dtype=dtype, device=device)
        self.out_proj = _param(H, cfg.linear_value_dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, conv_state: torch.Tensor,
                ssm_state: torch.Tensor) -> torch.Tensor:
        proj = _project(x, self.in_proj, self.backends["linear"])                 # [T, conv_dim + Hv*V + 2*Hv]
        qkv, z, b, a = proj.split(self.split, dim=-1)                             # strided column blocks
        weights = (self.conv_weight, self.A_log, self.dt_bias, self.norm_weight, conv_state, ssm_state)
        eps, nd, ndt = self.cfg.rms_norm_eps, batch.num_decodes, batch.num_decode_tokens
        parts = []
        if nd:  # one token per sequence, continuing from the cached states
            parts.append(self._decode(qkv[:ndt], z[:ndt], a[:ndt], b[:ndt], weights, batch))
        if ndt < batch.num_tokens and batch.gdn_rounds:
            parts.append(self._prefill_in_rounds(qkv[ndt:], z[ndt:], a[ndt:], b[ndt:], weights, batch.gdn_rounds))
        elif ndt < batch.num_tokens:
            parts.append(ops.gdn_prefill(qkv[ndt:], z[ndt:], a[ndt:], b[ndt:], *weights, batch.prefill_cu_seqlens,
                                         batch.slots[nd:], batch.has_initial_state[nd:], eps=eps,
                                         backend=self.backends["gdn_prefill"]))
        core = parts[0] if len(parts) == 1 else torch.cat(parts)                  # [T, Hv*V]
        return _project(core, self.out_proj, self.backends["linear"])            # [T, H]

    def _prefill_in_rounds(self, qkv, z, a, b, weights, rounds) -> torch.Tensor:
        """The prefill part with GDN state snapshots inside it (gdn_splits.py): each round's tokens through the
        prefill op, then the states of the sequences cut there copied into their snapshot slots."""
        conv_state, ssm_state = weights[4], weights[5]
        out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        for r in rounds:
            rows = slice(*r.span) if r.span else r.rows   # a single sequence's rounds are views, not gathers
            part = ops.gdn_prefill(qkv[rows], z[rows], a[rows], b[rows], *weights, r.cu_seqlens, r.slots,
                                   r.has_initial, eps=self.cfg.rms_norm_eps, backend=self.backends["gdn_prefill"])
            out[rows] = part
            if r.copy_from.numel():
                conv_state.index_copy_(0, r.copy_to, conv_state.index_select(0, r.copy_from))
                ssm_state.index_copy_(0, r.copy_to, ssm_state.index_select(0, r.copy_from))
        return out

    def _decode(self, qkv, z, a, b, weights, batch: ForwardBatch) -> torch.Tensor:
        """Decode steps; with ``decode_width = w > 1`` (drafts to verify) position j of every sequence in turn,
        chained through the scratch slots: position 0 reads the sequence's slot and writes scratch 0, position j
        reads scratch j - 1 and writes scratch j, the last writes the sequence's slot. So the state after every
        position but the last stays in a scratch slot for a roll-back, and nothing is copied."""
        nd, w, slots = batch.num_decodes, batch.decode_width, batch.slots[:batch.num_decodes]

        def step(rows: slice, src: torch.Tensor, dst: torch.Tensor | None = None) -> torch.Tensor:
            return ops.gdn_decode(qkv[rows], z[rows], a[rows], b[rows], *weights, src, eps=self.cfg.rms_norm_eps,
                                  backend=self.backends["gdn_decode"], out_slots=dst)

        if w == 1:
            return step(slice(None), slots)
        chain = [slots] + [batch.spec_scratch[:, j].contiguous() for j in range(w - 1)] + [slots]
        outs = [step(slice(j, None, w), chain[j], chain[j + 1]) for j in range(w)]   # each [nd, Hv*V]
        return torch.stack(outs, dim=1).reshape(nd * w, -1)                       # sequence-major, as the input


class GatedAttention(nn.Module):
    def __init__(self, cfg: TextConfig, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.cfg, self.backends = cfg, backends
        H, D = cfg.hidden_size, cfg.head_dim
        Hq, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.qkv_proj = _param((2 * Hq + 2 * Hkv) * D, H, dtype=dtype, device=device)  # [q_h|gate_h]*Hq | k | v
        self.q_norm = _param(D, dtype=dtype, device=device)
        self.k_norm = _param(D, dtype=dtype, device=device)
        self.o_proj = _param(H, Hq * D, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> torch.Tensor:
        c, nd, ndt = self.cfg, batch.num_decodes, batch.num_decode_tokens
        qkv = _project(x, self.qkv_proj, self.backends["linear"])                 # [T, (2Hq + 2Hkv) * D]
        q, gate = ops.attention_prep(qkv, self.q_norm, self.k_norm, batch.positions, k_cache, v_cache,
                                     batch.slot_mapping, c.rotary_dim, c.mrope_section, c.rope_theta,
                                     eps=c.rms_norm_eps, backend=self.backends["attention_prep"])  # [T, Hq, D]
        parts = []
        if nd:  # every decode token (a verified draft too) as a one-token sequence over the keys up to its own
            seq_lens, block_tables = batch.decode_attention_lens()
            parts.append(ops.paged_decode_attention(q[:ndt], k_cache, v_cache, seq_lens, block_tables, gate[:ndt],
                                                    backend=self.backends["paged_decode_attention"]))
        if ndt < batch.num_tokens:
            parts.append(ops.paged_prefill_attention(q[ndt:], k_cache, v_cache, batch.prefill_cu_seqlens,
                                                     batch.seq_lens[nd:], batch.block_tables[nd:], gate[ndt:],
                                                     backend=self.backends["paged_prefill_attention"]))
        o = parts[0] if len(parts) == 1 else torch.cat(parts)                     # [T, Hq*D], gated
        return _project(o, self.o_proj, self.backends["linear"])                 # [T, H]


class SparseMoe(nn.Module):
    def __init__(self, cfg: TextConfig, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.cfg, self.backends = cfg, backends
        H, E, inter = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
        self.expert_offset = 0                       # expert parallelism: global id of local expert 0
        self.router = _param(E, H, dtype=dtype, device=device)
        self.w13 = _param(E, 2 * inter, H, dtype=dtype, device=device)            # [gate; up] per expert
        self.w2 = _param(E, H, inter, dtype=dtype, device=device)
        shared = cfg.shared_expert_intermediate_size
        self.shared_w13 = _param(2 * shared, H, dtype=dtype, device=device) if shared else None
        self.shared_w2 = _param(H, shared, dtype=dtype, device=device) if shared else None
        self.shared_gate = _param(1, H, dtype=dtype, device=device) if shared else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.moe_block(x, self.router, self.w13, self.w2, self.shared_w13, self.shared_w2, self.shared_gate,
                             self.cfg.num_experts_per_tok, expert_offset=self.expert_offset,
                             backend=self.backends["moe_block"])


class DenseMlp(nn.Module):
    def __init__(self, cfg: TextConfig, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.backends = backends
        H, inter = cfg.hidden_size, cfg.intermediate_size
        self.w13 = _param(2 * inter, H, dtype=dtype, device=device)               # [gate; up]
        self.w2 = _param(H, inter, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.swiglu_mlp(x, self.w13, self.w2, backend=self.backends["swiglu_mlp"])


class DecoderLayer(nn.Module):
    """``h = h + mixer(norm(h)); h = h + ffn(norm(h))`` with the residual adds fused into the next norm."""

    def __init__(self, cfg: TextConfig, kind: str, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.kind, self.eps, self.backends = kind, cfg.rms_norm_eps, backends
        self.input_norm = _param(cfg.hidden_size, dtype=dtype, device=device)
        self.post_norm = _param(cfg.hidden_size, dtype=dtype, device=device)
        mixer = GatedDeltaNet if kind == "linear_attention" else GatedAttention
        self.mixer = mixer(cfg, dtype, device, backends)
        self.ffn = (SparseMoe if cfg.is_moe else DenseMlp)(cfg, dtype, device, backends)

    def forward(self, h: torch.Tensor, residual: torch.Tensor | None, batch: ForwardBatch,
                caches: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        be = self.backends["rms_norm"]
        if residual is None:
            residual, x = h, ops.rms_norm(h, self.input_norm, self.eps, backend=be)
        else:
            x, residual = ops.rms_norm(h, self.input_norm, self.eps, residual=residual, backend=be)
        h = self.mixer(x, batch, *caches)                                         # [T, H]
        x, residual = ops.rms_norm(h, self.post_norm, self.eps, residual=residual, backend=be)
        return self.ffn(x), residual
