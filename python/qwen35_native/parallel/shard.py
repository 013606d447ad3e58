"""Turns a built model into one tensor-parallel rank's model, and a load plan into that rank's load plan.

:func:`shard_model` (gpt-fast style) replaces every sharded parameter by the rank's shard (``layout.py``): a slice
of the existing values, or, for a model built on the meta device, fresh storage to be filled by the loader; sets the
module attributes that follow the shapes (GDN ``split``, MoE ``expert_offset``) and the per-rank cache shapes
(``model.cache_config``); and installs the collectives: an all-reduce of the output of every token mixer (GDN /
attention, whose out_proj / o_proj are row-parallel) and of every MoE block / MLP (row-parallel down projections,
experts of other ranks), the vocab-parallel embedding (masked lookup + all-reduce) and lm_head (local logits +
all-gather). The model code itself is unchanged: the same ops run on smaller shapes.

:func:`shard_plan` rewrites each :class:`~qwen35_native.weights.Placement` (``param[dst] <- checkpoint[key][src]``)
into the placements of the rank's ranges, so that the loader reads only the rank's slices of each checkpoint tensor
(for both expert layouts: fused ``[E, 2I, H]`` tensors and per-expert 2-D tensors).

Tests: tests/parallel/test_layout.py (plans, bytes read), test_tp_group.py (logits).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import LoadPlan, ParamSpec, Placement
from .groups import TPContext
from .layout import ShardSpec, local_cache_config, param_specs, vocab_shard


def take_shard(t: torch.Tensor, spec: ShardSpec) -> torch.Tensor:
    """The local shard of a full tensor (a copy; padding rows are zeros)."""
    parts = [t.narrow(spec.dim, a, b - a) for a, b in spec.ranges]
    if spec.size > spec.filled:
        shape = list(t.shape)
        shape[spec.dim] = spec.size - spec.filled
        parts.append(t.new_zeros(shape))
    return torch.cat(parts, dim=spec.dim)


def _set_param(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    module._parameters[attr] = nn.Parameter(value, requires_grad=False)


def _materialize(p: torch.Tensor, spec: ShardSpec | None, device: torch.device) -> torch.Tensor:
    if p.is_meta:
        shape = p.shape if spec is None else spec.local_shape(p.shape)
        padded = spec is not None and spec.size > spec.filled
        return (torch.zeros if padded else torch.empty)(shape, dtype=p.dtype, device=device)
    return (p.detach() if spec is None else take_shard(p.detach(), spec)).to(device).contiguous()


def shard_model(model: nn.Module, ctx: TPContext, moe_parallel: str = "tp") -> dict[str, ShardSpec]:
    """Makes ``model`` (built whole, on any device or on meta) rank ``ctx.rank``'s model on ``ctx.device``, in
    place; returns the shard specs by parameter name (for :func:`shard_plan`)."""
    specs, attrs = param_specs(model, ctx.rank, ctx.world_size, moe_parallel)
    for name, p in list(model.named_parameters()):
        _set_param(model, name, _materialize(p, specs.get(name), ctx.device))
    for mname, values in attrs.items():
        module = model.get_submodule(mname)
        for attr, value in values.items():
            setattr(module, attr, value)
    model.cache_config = local_cache_config(model.text_config, ctx.world_size)
    for module in model.modules():
        if hasattr(module, "mixer") and hasattr(module, "ffn"):            # DecoderLayer
            module.mixer.register_forward_hook(_all_reduce_hook(ctx))
            module.ffn.register_forward_hook(_all_reduce_hook(ctx))
    _install_vocab_parallel(model, ctx)
    model.parallel_context = ctx
    model.moe_parallel = moe_parallel
    return specs


def _all_reduce_hook(ctx: TPContext):
    def hook(module, args, output):
        return ctx.all_reduce(output)
    return hook


def _install_vocab_parallel(model: nn.Module, ctx: TPContext) -> None:
    vocab = model.text_config.vocab_size
    start, filled, _ = vocab_shard(vocab, ctx.rank, ctx.world_size)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        local = input_ids.long() - start
        outside = (local < 0) | (local >= filled)
        h = F.embedding(local.clamp(0, max(filled - 1, 0)), self.embed_tokens)
        h = h.masked_fill(outside[:, None], 0)                              # other ranks' rows contribute zero
        return ctx.all_reduce(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        local = F.linear(hidden, self.output_weight)                        # [M, padded shard]
        return ctx.all_gather_columns(local)[:, :vocab]

    model.embed = types.MethodType(embed, model)
    model.compute_logits = types.MethodType(compute_logits, model)


# ---------------------------------------------------------------------------------------------------------------
def _full_index(index: tuple, shape) -> list:
    return list(index) + [slice(None)] * (len(shape) - len(index))


def _src_dim(dst: list, dim: int, src_rank: int) -> int:
    """The checkpoint-tensor dimension that parameter dimension ``dim`` reads from: the copy reshapes the source
    block to the destination block, so block dimensions correspond in order (a source with extra size-1 dims, the
    conv1d ``[C, 1, W]``, only lines up on its first dimension)."""
    block = [i for i, e in enumerate(dst) if not isinstance(e, int)]
    pos = block.index(dim)
    if src_rank == len(block) or pos == 0:
        return pos
    raise ValueError(f"qwen35_native: cannot shard dimension {dim} of a placement whose source has {src_rank} "
                     f"dims for a {len(block)}-dim block")


def shard_placement(pl: Placement, shape, spec: ShardSpec) -> list[Placement]:
    """The placements of rank-local ranges of ``spec`` that ``pl`` (over the global parameter ``shape``) covers."""
    d = spec.dim
    dst = _full_index(pl.dst, shape)
    out = []
    if isinstance(dst[d], int):                       # one expert of a per-expert layout, sharded by expert
        for (a, b), o in zip(spec.ranges, spec.offsets):
            if a <= dst[d] < b:
                new = list(dst)
                new[d] = o + dst[d] - a
                out.append(Placement(pl.key, pl.src_shape, pl.src, tuple(new)))
        return out
    p0, p1, step = dst[d].indices(shape[d])
    if step != 1:
        raise ValueError(f"qwen35_native: placement of {pl.key} has a strided destination")
    sd = _src_dim(dst, d, len(pl.src_shape))
    src = _full_index(pl.src, pl.src_shape)
    s0 = src[sd].indices(pl.src_shape[sd])[0]
    for (a, b), o in zip(spec.ranges, spec.offsets):
        lo, hi = max(a, p0), min(b, p1)
        if lo >= hi:
            continue
        new_dst, new_src = list(dst), list(src)
        new_dst[d] = slice(o + lo - a, o + hi - a)
        new_src[sd] = slice(s0 + lo - p0, s0 + hi - p0)
        out.append(Placement(pl.key, pl.src_shape, tuple(new_src), tuple(new_dst)))
    return out


def shard_plan(plan: LoadPlan, specs: dict[str, ShardSpec]) -> LoadPlan:
    """The load plan of a rank: sharded parameters get their local shape and the placements of their ranges."""
    out: LoadPlan = {}
    for name, spec in plan.items():
        s = specs.get(name)
        if s is None:
            out[name] = spec
            continue
        placements = [q for pl in spec.placements for q in shard_placement(pl, spec.shape, s)]
        out[name] = ParamSpec(s.local_shape(spec.shape), spec.dtype, placements)
    return out
