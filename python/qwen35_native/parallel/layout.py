"""Which slice of every parameter a tensor-parallel rank holds (DESIGN.md §6, MODEL_SPEC §2-§3).

A :class:`ShardSpec` says: along dimension ``dim``, the rank's local tensor is the concatenation of the global
index ranges ``ranges`` (in order), zero-padded up to ``size``. Parameters without a spec are replicated.

Rank ``r`` of ``n`` holds:

- Gated DeltaNet: q/k heads ``[r*Hk/n, (r+1)*Hk/n)`` and the v heads that use them, ``[r*Hv/n, (r+1)*Hv/n)``
  (v head ``h`` uses k head ``h // (Hv/Hk)``, so whole head groups stay together). The fused ``in_proj`` rows
  ``[q | k | v | z | b | a]`` and the conv channels ``[q | k | v]`` keep that order with the rank's heads only;
  A_log and dt_bias follow the v heads; the gated-norm weight (shared by all heads) is replicated; ``out_proj`` is
  row-parallel (its input columns are split).
- Gated attention: q heads ``[r*Hq/n, (r+1)*Hq/n)`` with their per-head gates (the ``[q_h | gate_h]`` row blocks);
  kv heads ``[r*Hkv/n, (r+1)*Hkv/n)`` when ``n <= Hkv``, else the one kv head ``r // (n/Hkv)`` that the rank's
  q heads use (replicated on ``n/Hkv`` ranks); q/k norms replicated; ``o_proj`` row-parallel.
- MoE ``"tp"``: every expert's intermediate rows ``[r*I/n, (r+1)*I/n)`` of gate, up (``w13``) and the same columns
  of ``w2``. MoE ``"ep"``: experts ``[r*E/n, (r+1)*E/n)`` whole (the block's ``expert_offset`` is ``r*E/n``). Both:
  router and shared-expert gate replicated, shared expert split like a dense MLP.
- Dense MLP: intermediate rows of gate and up, columns of down.
- Embedding and (untied) lm_head: vocab rows ``[r*s, min((r+1)*s, V))`` with ``s = ceil(V/n)``, zero-padded to
  ``s`` rows so that every rank's logits block has the same width.
- Everything else (norms, vision tower, MTP ``fc``): replicated.

Tests: tests/parallel/test_layout.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..model.config import TextConfig

MOE_MODES = ("tp", "ep")


@dataclass(frozen=True)
class ShardSpec:
    dim: int
    ranges: tuple[tuple[int, int], ...]   # global [start, stop) ranges, concatenated in order
    size: int                             # local size along dim (>= sum of range lengths; the rest is zeros)

    @property
    def offsets(self) -> list[int]:
        """Local start of each range."""
        out, o = [], 0
        for a, b in self.ranges:
            out.append(o)
            o += b - a
        return out

    @property
    def filled(self) -> int:
        return sum(b - a for a, b in self.ranges)

    def local_shape(self, shape) -> tuple[int, ...]:
        shape = list(shape)
        shape[self.dim] = self.size
        return tuple(shape)


def _spec(dim: int, *ranges: tuple[int, int], size: int | None = None) -> ShardSpec:
    ranges = tuple((a, b) for a, b in ranges if b > a)
    return ShardSpec(dim, ranges, sum(b - a for a, b in ranges) if size is None else size)


def _part(total: int, rank: int, world: int) -> tuple[int, int]:
    step = total // world
    return rank * step, (rank + 1) * step


def check_tensor_parallel(cfg: TextConfig, world: int, moe_parallel: str = "tp") -> None:
    """Raises ValueError naming every head / expert / intermediate count that ``world`` ranks cannot split."""
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise ValueError(f"qwen35_native: tensor_parallel_size must be a positive integer, got {world!r}")
    if moe_parallel not in MOE_MODES:
        raise ValueError(f"qwen35_native: moe_parallel must be 'tp' or 'ep', got {moe_parallel!r}")
    need = [("num_attention_heads", cfg.num_attention_heads, "attention q heads"),
            ("linear_num_key_heads", cfg.linear_num_key_heads, "Gated DeltaNet q/k heads")]
    if cfg.is_moe:
        if moe_parallel == "ep":
            need.append(("num_experts", cfg.num_experts, "moe_parallel='ep' splits the experts"))
        else:
            need.append(("moe_intermediate_size", cfg.moe_intermediate_size, "moe_parallel='tp' splits every expert"))
        if cfg.shared_expert_intermediate_size:
            need.append(("shared_expert_intermediate_size", cfg.shared_expert_intermediate_size, "shared expert"))
    else:
        need.append(("intermediate_size", cfg.intermediate_size, "dense MLP"))
    bad = [f"{name}={count} ({what})" for name, count, what in need if count % world]
    kv = cfg.num_key_value_heads
    if world <= kv and kv % world:
        bad.append(f"num_key_value_heads={kv} (kv heads are split when tensor_parallel_size <= num_key_value_heads)")
    if world > kv and world % kv:
        bad.append(f"num_key_value_heads={kv} (kv heads are replicated when tensor_parallel_size > "
                   f"num_key_value_heads, which needs tensor_parallel_size to be a multiple of it)")
    if bad:
        raise ValueError(f"qwen35_native: tensor_parallel_size={world} does not divide {'; '.join(bad)}")


def kv_heads(cfg: TextConfig, rank: int, world: int) -> tuple[int, int]:
    """Global kv-head range ``[start, stop)`` rank ``rank`` keeps."""
    kv = cfg.num_key_value_heads
    if world <= kv:
        return _part(kv, rank, world)
    head = rank // (world // kv)
    return head, head + 1


def local_cache_config(cfg: TextConfig, world: int) -> TextConfig:
    """The per-rank head counts (the caches' shapes); vocab and everything else stay global."""
    if world == 1:
        return cfg
    return dataclasses.replace(cfg, num_attention_heads=cfg.num_attention_heads // world,
                               num_key_value_heads=max(cfg.num_key_value_heads // world, 1),
                               linear_num_key_heads=cfg.linear_num_key_heads // world,
                               linear_num_value_heads=cfg.linear_num_value_heads // world)


def vocab_shard(vocab: int, rank: int, world: int) -> tuple[int, int, int]:
    """(first row, rows filled, padded rows per rank) of the vocab-parallel embedding / lm_head."""
    size = -(-vocab // world)
    start = min(rank * size, vocab)
    return start, min(vocab, start + size) - start, size


def gdn_specs(cfg: TextConfig, rank: int, world: int) -> dict[str, ShardSpec]:
    Hk, Hv, K, V = cfg.linear_num_key_heads, cfg.linear_num_value_heads, cfg.linear_key_head_dim, \
        cfg.linear_value_head_dim
    k0, k1 = _part(Hk, rank, world)
    v0, v1 = _part(Hv, rank, world)
    key_dim, conv_dim, vdim = Hk * K, cfg.conv_dim, Hv * V
    q, k, v = (k0 * K, k1 * K), (key_dim + k0 * K, key_dim + k1 * K), (2 * key_dim + v0 * V, 2 * key_dim + v1 * V)
    z = (conv_dim + v0 * V, conv_dim + v1 * V)
    b = (conv_dim + vdim + v0, conv_dim + vdim + v1)
    a = (conv_dim + vdim + Hv + v0, conv_dim + vdim + Hv + v1)
    return {"in_proj": _spec(0, q, k, v, z, b, a), "conv_weight": _spec(0, q, k, v), "A_log": _spec(0, (v0, v1)),
            "dt_bias": _spec(0, (v0, v1)), "out_proj": _spec(1, (v0 * V, v1 * V))}


def gdn_split(cfg: TextConfig, world: int) -> list[int]:
    """The local ``GatedDeltaNet.split`` (widths of qkv | z | b | a in the local ``in_proj``)."""
    c = local_cache_config(cfg, world)
    return [c.conv_dim, c.linear_value_dim, c.linear_num_value_heads, c.linear_num_value_heads]


def attention_specs(cfg: TextConfig, rank: int, world: int) -> dict[str, ShardSpec]:
    Hq, Hkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    h0, h1 = _part(Hq, rank, world)
    j0, j1 = kv_heads(cfg, rank, world)
    q = (h0 * 2 * D, h1 * 2 * D)                       # [q_h | gate_h] blocks of the rank's heads
    k = (2 * Hq * D + j0 * D, 2 * Hq * D + j1 * D)
    v = (2 * Hq * D + Hkv * D + j0 * D, 2 * Hq * D + Hkv * D + j1 * D)
    return {"qkv_proj": _spec(0, q, k, v), "o_proj": _spec(1, (h0 * D, h1 * D))}


def _swiglu(inter: int, rank: int, world: int, dim: int) -> tuple[ShardSpec, ShardSpec]:
    i0, i1 = _part(inter, rank, world)
    return _spec(dim, (i0, i1), (inter + i0, inter + i1)), _spec(dim + 1, (i0, i1))


def ffn_specs(cfg: TextConfig, rank: int, world: int, moe_parallel: str) -> tuple[dict[str, ShardSpec], int]:
    """Specs of the MoE block / dense MLP parameters and the block's ``expert_offset``."""
    if not cfg.is_moe:
        w13, w2 = _swiglu(cfg.intermediate_size, rank, world, 0)
        return {"w13": w13, "w2": w2}, 0
    specs, offset = {}, 0
    if moe_parallel == "ep":
        e0, e1 = _part(cfg.num_experts, rank, world)
        specs.update(w13=_spec(0, (e0, e1)), w2=_spec(0, (e0, e1)))
        offset = e0
    else:
        specs["w13"], specs["w2"] = _swiglu(cfg.moe_intermediate_size, rank, world, 1)
    if cfg.shared_expert_intermediate_size:
        specs["shared_w13"], specs["shared_w2"] = _swiglu(cfg.shared_expert_intermediate_size, rank, world, 0)
    return specs, offset


def param_specs(model, rank: int, world: int, moe_parallel: str = "tp") -> tuple[dict[str, ShardSpec], dict]:
    """Shard specs of every sharded parameter of a built model (by parameter name) and the module attributes a
    rank's model needs changed: ``{module name: {attribute: value}}`` (GDN ``split``, MoE ``expert_offset``)."""
    from ..model.layers import DenseMlp, GatedAttention, GatedDeltaNet, SparseMoe

    cfg = model.text_config
    specs: dict[str, ShardSpec] = {}
    attrs: dict[str, dict] = {}
    start, filled, size = vocab_shard(cfg.vocab_size, rank, world)
    for name in ("embed_tokens", "lm_head"):
        if name in dict(model.named_parameters(recurse=False)):     # lm_head is absent when tied
            specs[name] = _spec(0, (start, start + filled), size=size)
    for mname, module in model.named_modules():
        if isinstance(module, GatedDeltaNet):
            local = gdn_specs(cfg, rank, world)
            attrs[mname] = {"split": gdn_split(cfg, world)}
        elif isinstance(module, GatedAttention):
            local = attention_specs(cfg, rank, world)
        elif isinstance(module, (SparseMoe, DenseMlp)):
            local, offset = ffn_specs(cfg, rank, world, moe_parallel)
            if isinstance(module, SparseMoe):
                attrs[mname] = {"expert_offset": offset}
        else:
            continue
        specs.update({f"{mname}.{p}": s for p, s in local.items()})
    return specs, attrs
