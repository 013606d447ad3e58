"""Load plan of the vision tower (MODEL_SPEC §2.5): ``model.visual.*`` (release layout) or ``visual.*`` checkpoint
tensors -> the ``visual.*`` parameters of :class:`~qwen35_native.model.vision.VisionTower` (the Conv3d patch
weight is read flattened to ``[Vh, C * tp * p * p]``). The tower is replicated on every tensor-parallel rank."""

from __future__ import annotations

from ..model.config import VisionConfig
from .plan import VISION_PREFIXES, LoadPlan, ParamSpec, Placement


def vision_prefix(keys) -> str | None:
    """The checkpoint's vision tensor prefix, or None when it has no vision tower."""
    keys = list(keys)
    for prefix in VISION_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return prefix
    return None


def build_vision_plan(cfg: VisionConfig, prefix: str) -> LoadPlan:
    plan: LoadPlan = {}

    def whole(name: str, key: str, shape: tuple[int, ...], src_shape=None) -> None:
        plan[f"visual.{name}"] = ParamSpec(tuple(shape), None, [Placement(prefix + key, tuple(src_shape or shape))])

    Vh, inter, merged = cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size * cfg.spatial_merge_size ** 2
    C, tp, p = cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size
    whole("patch_weight", "patch_embed.proj.weight", (Vh, C * tp * p * p), src_shape=(Vh, C, tp, p, p))
    whole("patch_bias", "patch_embed.proj.bias", (Vh,))
    whole("pos_embed", "pos_embed.weight", (cfg.num_position_embeddings, Vh))
    for j in range(cfg.depth):
        b = f"blocks.{j}."
        for norm in ("norm1", "norm2"):
            whole(f"{b}{norm}_weight", f"{b}{norm}.weight", (Vh,))
            whole(f"{b}{norm}_bias", f"{b}{norm}.bias", (Vh,))
        for name, key, (rows, cols) in (("qkv", "attn.qkv", (3 * Vh, Vh)), ("proj", "attn.proj", (Vh, Vh)),
                                        ("fc1", "mlp.linear_fc1", (inter, Vh)), ("fc2", "mlp.linear_fc2", (Vh, inter))):
            whole(f"{b}{name}_weight", f"{b}{key}.weight", (rows, cols))
            whole(f"{b}{name}_bias", f"{b}{key}.bias", (rows,))
    whole("merger_norm_weight", "merger.norm.weight", (Vh,))
    whole("merger_norm_bias", "merger.norm.bias", (Vh,))
    for name, (rows, cols) in (("fc1", (merged, merged)), ("fc2", (cfg.out_hidden_size, merged))):
        whole(f"merger_{name}_weight", f"merger.linear_{name}.weight", (rows, cols))
        whole(f"merger_{name}_bias", f"merger.linear_{name}.bias", (rows,))
    return plan
