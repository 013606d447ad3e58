"""Checkpoint name mapping: which checkpoint tensors (or slices) fill which block of which model parameter.

A :class:`LoadPlan` maps each model parameter name to a :class:`ParamSpec` (shape, dtype) and a list of
:class:`Placement` records ``param[dst] <- checkpoint[key][src]`` (reshaped). The model fuses some checkpoint
tensors into one parameter (GDN ``in_proj = [qkv; z; b; a]``, attention ``qkv_proj = [q|gate; k; v]``, expert
``w13 = [gate; up]``), and both expert layouts (fused ``experts.gate_up_proj`` / ``experts.down_proj`` and
per-expert ``experts.{e}.{gate,up,down}_proj.weight``) map to the same parameters.

Tensor parallelism hook: a sharded loader rewrites a spec's ``shape`` to the rank's local shape and each
placement's ``src``/``dst`` to the rank's slice (slices of the source are read lazily, so a rank reads only its
own bytes) before calling :func:`~qwen35_native.weights.loader.load_plan`; nothing here reads tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model.config import TextConfig
from .reader import FLOAT_DTYPES, CheckpointReader, WeightsError

VISION_PREFIXES = ("model.visual.", "visual.")


@dataclass
class Placement:
    key: str                      # checkpoint tensor name
    src_shape: tuple[int, ...]    # its expected full shape
    src: tuple = ()               # index into the checkpoint tensor (slices; () = all)
    dst: tuple = ()               # index into the parameter (ints/slices; () = all)


@dataclass
class ParamSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype | None     # None: the model dtype
    placements: list[Placement] = field(default_factory=list)


LoadPlan = dict  # param name -> ParamSpec


def _rows(*parts: tuple[str, tuple[int, ...]]) -> tuple[tuple[int, ...], list[Placement]]:
    """Stacks 2-D checkpoint tensors along dim 0 (a fused projection); returns (shape, placements)."""
    placements, start = [], 0
    for key, shape in parts:
        placements.append(Placement(key, shape, dst=(slice(start, start + shape[0]),)))
        start += shape[0]
    return (start, parts[0][1][1]), placements


class _Builder:
    def __init__(self, cfg: TextConfig, keys: set[str]):
        self.cfg, self.keys, self.plan = cfg, keys, {}

    def whole(self, name: str, key: str, shape: tuple[int, ...], dtype=None, src_shape=None) -> None:
        self.plan[name] = ParamSpec(tuple(shape), dtype, [Placement(key, tuple(src_shape or shape))])

    def fused(self, name: str, *parts) -> None:
        shape, placements = _rows(*parts)
        self.plan[name] = ParamSpec(shape, None, placements)

    def gdn(self, name: str, p: str) -> None:
        c, H = self.cfg, self.cfg.hidden_size
        Hv, vdim = c.linear_num_value_heads, c.linear_value_dim
        self.fused(f"{name}.in_proj", (f"{p}in_proj_qkv.weight", (c.conv_dim, H)),
                   (f"{p}in_proj_z.weight", (vdim, H)), (f"{p}in_proj_b.weight", (Hv, H)),
                   (f"{p}in_proj_a.weight", (Hv, H)))
        W = c.linear_conv_kernel_dim
        self.whole(f"{name}.conv_weight", f"{p}conv1d.weight", (c.conv_dim, W), src_shape=(c.conv_dim, 1, W))
        self.whole(f"{name}.A_log", f"{p}A_log", (Hv,), dtype=torch.float32)   # only ever used in fp32
        self.whole(f"{name}.dt_bias", f"{p}dt_bias", (Hv,))
        self.whole(f"{name}.norm_weight", f"{p}norm.weight", (c.linear_value_head_dim,))
        self.whole(f"{name}.out_proj", f"{p}out_proj.weight", (H, vdim))

    def attention(self, name: str, p: str) -> None:
        c, H, D = self.cfg, self.cfg.hidden_size, self.cfg.head_dim
        q, kv = c.num_attention_heads * D, c.num_key_value_heads * D
        self.fused(f"{name}.qkv_proj", (f"{p}q_proj.weight", (2 * q, H)), (f"{p}k_proj.weight", (kv, H)),
                   (f"{p}v_proj.weight", (kv, H)))
        self.whole(f"{name}.q_norm", f"{p}q_norm.weight", (D,))
        self.whole(f"{name}.k_norm", f"{p}k_norm.weight", (D,))
        self.whole(f"{name}.o_proj", f"{p}o_proj.weight", (H, q))

    def ffn(self, name: str, p: str) -> None:
        c, H = self.cfg, self.cfg.hidden_size
        if not c.is_moe:
            inter = c.intermediate_size
            self.fused(f"{name}.w13", (f"{p}gate_proj.weight", (inter, H)), (f"{p}up_proj.weight", (inter, H)))
            self.whole(f"{name}.w2", f"{p}down_proj.weight", (H, inter))
            return
        E, inter = c.num_experts, c.moe_intermediate_size
        self.whole(f"{name}.router", f"{p}gate.weight", (E, H))
        if f"{p}experts.gate_up_proj" in self.keys or f"{p}experts.0.gate_proj.weight" not in self.keys:
            self.whole(f"{name}.w13", f"{p}experts.gate_up_proj", (E, 2 * inter, H))
            self.whole(f"{name}.w2", f"{p}experts.down_proj", (E, H, inter))
        else:  # per-expert layout (FP8 and third-party releases, HF save_pretrained default)
            w13, w2 = ParamSpec((E, 2 * inter, H), None), ParamSpec((E, H, inter), None)
            for e in range(E):
                q = f"{p}experts.{e}."
                w13.placements += [Placement(f"{q}gate_proj.weight", (inter, H), dst=(e, slice(0, inter))),
                                   Placement(f"{q}up_proj.weight", (inter, H), dst=(e, slice(inter, 2 * inter)))]
                w2.placements.append(Placement(f"{q}down_proj.weight", (H, inter), dst=(e,)))
            self.plan[f"{name}.w13"], self.plan[f"{name}.w2"] = w13, w2
        shared = c.shared_expert_intermediate_size
        if shared:
            s = f"{p}shared_expert."
            self.fused(f"{name}.shared_w13", (f"{s}gate_proj.weight", (shared, H)), (f"{s}up_proj.weight", (shared, H)))
            self.whole(f"{name}.shared_w2", f"{s}down_proj.weight", (H, shared))
            self.whole(f"{name}.shared_gate", f"{p}shared_expert_gate.weight", (1, H))

    def decoder_layer(self, name: str, p: str, kind: str) -> None:
        H = self.cfg.hidden_size
        self.whole(f"{name}.input_norm", f"{p}input_layernorm.weight", (H,))
        self.whole(f"{name}.post_norm", f"{p}post_attention_layernorm.weight", (H,))
        if kind == "linear_attention":
            self.gdn(f"{name}.mixer", f"{p}linear_attn.")
        else:
            self.attention(f"{name}.mixer", f"{p}self_attn.")
        self.ffn(f"{name}.ffn", f"{p}mlp.")


def text_prefix(keys) -> str:
    """``model.language_model.`` (conditional-generation layout) or ``model.`` (bare text model)."""
    return "model.language_model." if any(k.startswith("model.language_model.") for k in keys) else "model."


def build_plan(cfg: TextConfig, keys, load_mtp: bool = False) -> tuple[LoadPlan, set[str]]:
    """The load plan of the text model (and the MTP head when ``load_mtp``), plus the checkpoint keys that are
    recognised but deliberately not loaded (vision tower, MTP head when not asked for, tied lm_head)."""
    keys = set(keys)
    b = _Builder(cfg, keys)
    pre = text_prefix(keys)
    V, H = cfg.vocab_size, cfg.hidden_size
    b.whole("embed_tokens", f"{pre}embed_tokens.weight", (V, H))
    b.whole("norm", f"{pre}norm.weight", (H,))
    if not cfg.tie_word_embeddings:
        b.whole("lm_head", "lm_head.weight", (V, H))
    for i, kind in enumerate(cfg.layer_types):
        b.decoder_layer(f"layers.{i}", f"{pre}layers.{i}.", kind)
    if load_mtp:
        if cfg.mtp_num_hidden_layers < 1:
            raise WeightsError("load_mtp=True but the config has mtp_num_hidden_layers=0")
        b.whole("mtp.fc", "mtp.fc.weight", (H, 2 * H))
        for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
            b.whole(f"mtp.{n}", f"mtp.{n}.weight", (H,))
        for j in range(cfg.mtp_num_hidden_layers):
            b.decoder_layer(f"mtp.layers.{j}", f"mtp.layers.{j}.", "full_attention")
    ignored = {k for k in keys if k.startswith(VISION_PREFIXES) or (not load_mtp and k.startswith("mtp."))
               or (cfg.tie_word_embeddings and k == "lm_head.weight")}
    return b.plan, ignored


def check_plan(plan: LoadPlan, ignored: set[str], reader: CheckpointReader) -> None:
    """Missing, unexpected, wrong-shape and wrong-dtype tensors, each a WeightsError naming tensor and file."""
    used = set()
    for name, spec in plan.items():
        for pl in spec.placements:
            if pl.key not in reader.key_file:
                raise WeightsError(f"missing tensor {pl.key} (for parameter {name}) in {reader.source}")
            shape = reader.shape(pl.key)
            if tuple(shape) != pl.src_shape:
                raise WeightsError(f"tensor {pl.key} in {reader.file_of(pl.key)} has shape {shape}, expected "
                                   f"{list(pl.src_shape)} from config.json")
            if reader.dtype(pl.key) not in FLOAT_DTYPES:
                raise WeightsError(f"tensor {pl.key} in {reader.file_of(pl.key)} has dtype {reader.dtype(pl.key)}, "
                                   f"expected one of {', '.join(FLOAT_DTYPES)} (quantised checkpoints unsupported)")
            used.add(pl.key)
    unexpected = sorted(set(reader.keys()) - used - ignored)
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise WeightsError(f"unexpected tensor {unexpected[0]} in {reader.file_of(unexpected[0])}{more}: not "
                           f"part of the model described by config.json")
