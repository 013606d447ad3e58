"""Model configuration parsed from a checkpoint's ``config.json`` (MODEL_SPEC §1).

Accepts the conditional-generation layout (``model_type`` ``qwen3_5_moe`` / ``qwen3_5`` with ``text_config`` and
``vision_config``) and a bare text config (``qwen3_5_moe_text`` / ``qwen3_5_text``); ``rope_parameters`` (transformers
v5) or the legacy ``rope_theta`` + ``rope_scaling`` + ``partial_rotary_factor`` fields; ``layer_types`` (wins) or
``full_attention_interval``. Unknown model types and settings this implementation cannot honour raise
:class:`ConfigError`; unknown extra fields are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

MOE_TYPES = {"qwen3_5_moe": "qwen3_5_moe_text", "qwen3_5": "qwen3_5_text"}
VISION_TYPES = {"qwen3_5_moe": ("qwen3_5_moe", "qwen3_5_moe_vision"), "qwen3_5": ("qwen3_5", "qwen3_5_vision")}
LAYER_KINDS = ("linear_attention", "full_attention")


class ConfigError(ValueError):
    """A config.json this implementation cannot run: names the field and what was expected."""


@dataclass(frozen=True)
class TextConfig:
    model_type: str                  # "qwen3_5_moe_text" (MoE) or "qwen3_5_text" (dense)
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    layer_types: tuple[str, ...]
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000_000.0
    partial_rotary_factor: float = 0.25
    mrope_section: tuple[int, int, int] = (11, 11, 10)
    max_position_embeddings: int = 262144
    tie_word_embeddings: bool = False
    num_experts: int = 0             # MoE only
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    intermediate_size: int = 0       # dense only
    mtp_num_hidden_layers: int = 0
    eos_token_id: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    dtype: str = "bfloat16"

    @property
    def is_moe(self) -> bool:
        return self.model_type == "qwen3_5_moe_text"

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def linear_key_dim(self) -> int:
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def linear_value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.linear_key_dim + self.linear_value_dim

    def layer_indices(self, kind: str) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == kind]


@dataclass(frozen=True)
class VisionConfig:
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    out_hidden_size: int
    hidden_act: str = "gelu_pytorch_tanh"
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    num_position_embeddings: int = 2304
    model_type: str = ""
    rope_theta: float = 10000.0      # vision_config.rope_parameters.rope_theta (2D axial rotary)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class Qwen35Config:
    model_type: str                  # "qwen3_5_moe" or "qwen3_5" (family), whatever layout the file had
    text: TextConfig
    vision: VisionConfig | None = None
    image_token_id: int | None = None
    video_token_id: int | None = None
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_file(cls, path: str) -> Qwen35Config:
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no config.json (a checkpoint needs config.json and safetensors)") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, data: dict) -> Qwen35Config:
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        mt = data.get("model_type")
        if mt in MOE_TYPES:  # conditional-generation layout
            text = data.get("text_config")
            if not isinstance(text, dict):
                raise ConfigError(f"model_type {mt!r} needs a 'text_config' object")
            text = dict(text)
            for key in ("tie_word_embeddings", "eos_token_id", "dtype", "torch_dtype"):
                if key in data and key not in text:
                    text[key] = data[key]
            if "tie_word_embeddings" in data:  # the top-level value is the one transformers ties by
                text["tie_word_embeddings"] = data["tie_word_embeddings"]
            tc = _parse_text(text, MOE_TYPES[mt])
            vc = _parse_vision(data.get("vision_config"), mt)
            ids = {k: _opt_int(data, k) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                  "vision_end_token_id")}
            return cls(mt, tc, vc, **ids, raw=data)
        if mt in MOE_TYPES.values():  # bare text config
            family = next(k for k, v in MOE_TYPES.items() if v == mt)
            return cls(family, _parse_text(data, mt), raw=data)
        raise ConfigError(f"model_type must be one of {sorted(MOE_TYPES) + sorted(MOE_TYPES.values())}, got {mt!r}")

    def to_dict(self) -> dict:
        """The release (conditional-generation) layout of config.json; transformers reads it."""
        t = self.text
        text = {k: v for k, v in asdict(t).items() if k not in ("rope_theta", "partial_rotary_factor",
                                                                 "mrope_section", "dtype", "eos_token_id")}
        text["layer_types"] = list(t.layer_types)
        text["eos_token_id"] = t.eos_token_id[0] if len(t.eos_token_id) == 1 else list(t.eos_token_id) or None
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": t.rope_theta, "mrope_interleaved": True,
                                   "partial_rotary_factor": t.partial_rotary_factor,
                                   "mrope_section": list(t.mrope_section)}
        text.update(hidden_act="silu", attention_bias=False, attn_output_gate=True, mamba_ssm_dtype="float32",
                    full_attention_interval=4, dtype=t.dtype)
        for key in (("intermediate_size",) if t.is_moe else
                    ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size")):
            text.pop(key)
        out = {"architectures": [("Qwen3_5MoeForConditionalGeneration" if t.is_moe
                                  else "Qwen3_5ForConditionalGeneration")],
               "model_type": self.model_type, "text_config": text, "tie_word_embeddings": t.tie_word_embeddings,
               "dtype": t.dtype}
        if self.vision is not None:
            vision = asdict(self.vision)
            vision["rope_parameters"] = {"rope_type": "axial", "rope_theta": vision.pop("rope_theta")}
            out["vision_config"] = {**vision, "deepstack_visual_indexes": []}
        for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _opt_int(d: dict, key: str) -> int | None:
    v = d.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
        raise ConfigError(f"{key} must be an integer, got {v!r}")
    return v


def _int(d: dict, key: str, default: int | None = None, minimum: int = 1) -> int:
    v = d.get(key, default)
    if v is None:
        raise ConfigError(f"missing required field {key!r}")
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {v!r}")
    return v


def _rope(d: dict) -> tuple[float, float, tuple[int, ...]]:
    rp = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rp, dict):
        raise ConfigError(f"rope_parameters must be an object, got {rp!r}")
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind not in ("default", "mrope"):
        raise ConfigError(f"rope_parameters.rope_type {kind!r} is not supported (only the default M-RoPE)")
    if rp.get("mrope_interleaved", True) is not True:
        raise ConfigError("rope_parameters.mrope_interleaved=false is not supported (Qwen3.5 interleaves M-RoPE)")
    theta = rp.get("rope_theta", d.get("rope_theta", 10_000_000.0))
    factor = rp.get("partial_rotary_factor", d.get("partial_rotary_factor", 0.25))
    section = tuple(rp.get("mrope_section", (11, 11, 10)))
    if not isinstance(theta, int | float) or theta <= 0 or not isinstance(factor, int | float) or not 0 < factor <= 1:
        raise ConfigError(f"rope_theta must be > 0 and partial_rotary_factor in (0, 1], got {theta!r}, {factor!r}")
    return float(theta), float(factor), section


def _layer_types(d: dict, n: int) -> tuple[str, ...]:
    lt = d.get("layer_types")
    if lt is None:
        interval = _int(d, "full_attention_interval", 4)
        return tuple("full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n))
    if not isinstance(lt, list) or len(lt) != n or any(t not in LAYER_KINDS for t in lt):
        raise ConfigError(f"layer_types must list {n} entries (num_hidden_layers), each one of {LAYER_KINDS}, "
                          f"got {lt!r}")
    return tuple(lt)


def _parse_text(d: dict, model_type: str) -> TextConfig:
    mt = d.get("model_type", model_type)
    if mt != model_type:
        raise ConfigError(f"text_config.model_type must be {model_type!r}, got {mt!r}")
    for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("attn_output_gate", True),
                    ("norm_topk_prob", True), ("mtp_use_dedicated_embeddings", False)):
        if key in d and d[key] != ok:
            raise ConfigError(f"{key}={d[key]!r} is not supported (Qwen3.5 uses {ok!r})")
    theta, factor, section = _rope(d)
    n = _int(d, "num_hidden_layers")
    eos = d.get("eos_token_id")
    eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
    moe = model_type == "qwen3_5_moe_text"
    fields = dict(
        model_type=model_type, vocab_size=_int(d, "vocab_size"), hidden_size=_int(d, "hidden_size"),
        num_hidden_layers=n, layer_types=_layer_types(d, n), num_attention_heads=_int(d, "num_attention_heads"),
        num_key_value_heads=_int(d, "num_key_value_heads"), head_dim=_int(d, "head_dim", 256),
        linear_num_key_heads=_int(d, "linear_num_key_heads", 16), linear_num_value_heads=_int(
            d, "linear_num_value_heads", 32), linear_key_head_dim=_int(d, "linear_key_head_dim", 128),
        linear_value_head_dim=_int(d, "linear_value_head_dim", 128),
        linear_conv_kernel_dim=_int(d, "linear_conv_kernel_dim", 4, minimum=2),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=theta, partial_rotary_factor=factor,
        mrope_section=section, max_position_embeddings=_int(d, "max_position_embeddings", 262144),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        mtp_num_hidden_layers=_int(d, "mtp_num_hidden_layers", 0, minimum=0), eos_token_id=eos,
        bos_token_id=_opt_int(d, "bos_token_id"), pad_token_id=_opt_int(d, "pad_token_id"),
        dtype=str(d.get("dtype") or d.get("torch_dtype") or "bfloat16"))
    if moe:
        fields.update(num_experts=_int(d, "num_experts"), num_experts_per_tok=_int(d, "num_experts_per_tok"),
                      moe_intermediate_size=_int(d, "moe_intermediate_size"),
                      shared_expert_intermediate_size=_int(d, "shared_expert_intermediate_size", 0, minimum=0))
    else:
        fields["intermediate_size"] = _int(d, "intermediate_size")
    cfg = TextConfig(**fields)
    _validate(cfg)
    return cfg


def _validate(c: TextConfig) -> None:
    checks = [
        (c.num_attention_heads % c.num_key_value_heads == 0, "num_attention_heads must be a multiple of "
         f"num_key_value_heads, got {c.num_attention_heads} and {c.num_key_value_heads}"),
        (c.linear_num_value_heads % c.linear_num_key_heads == 0, "linear_num_value_heads must be a multiple of "
         f"linear_num_key_heads, got {c.linear_num_value_heads} and {c.linear_num_key_heads}"),
        (c.rotary_dim >= 2 and c.rotary_dim % 2 == 0, f"head_dim * partial_rotary_factor must be an even number "
         f">= 2, got {c.head_dim} * {c.partial_rotary_factor}"),
        (len(c.mrope_section) == 3 and sum(c.mrope_section) == c.rotary_dim // 2, "rope mrope_section must be 3 "
         f"ints summing to rotary_dim/2={c.rotary_dim // 2}, got {list(c.mrope_section)}"),
        (not c.is_moe or c.num_experts_per_tok <= c.num_experts, "num_experts_per_tok must be <= num_experts, "
         f"got {c.num_experts_per_tok} > {c.num_experts}"),
        (c.dtype in ("bfloat16", "float16", "float32"), f"dtype must be bfloat16, float16 or float32, got {c.dtype!r}"),
        (all(0 <= i < c.vocab_size for i in c.eos_token_id), f"eos_token_id {list(c.eos_token_id)} must be < "
         f"vocab_size {c.vocab_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _parse_vision(d, family: str) -> VisionConfig | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ConfigError(f"vision_config must be an object, got {d!r}")
    mt = d.get("model_type", VISION_TYPES[family][1])
    if mt not in VISION_TYPES[family]:
        raise ConfigError(f"vision_config.model_type must be one of {VISION_TYPES[family]}, got {mt!r}")
    if d.get("deepstack_visual_indexes"):
        raise ConfigError(f"deepstack_visual_indexes {d['deepstack_visual_indexes']} are not supported (Qwen3.5 "
                          "has no deepstack)")
    keys = ("depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size")
    extra = {k: d[k] for k in ("hidden_act", "in_channels", "patch_size", "temporal_patch_size",
                               "spatial_merge_size", "num_position_embeddings") if k in d}
    if extra.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise ConfigError(f"vision_config.hidden_act={extra['hidden_act']!r} is not supported (Qwen3.5 uses "
                          f"'gelu_pytorch_tanh')")
    rp = d.get("rope_parameters") or {}
    if not isinstance(rp, dict) or rp.get("rope_type", "axial") != "axial":
        raise ConfigError(f"vision_config.rope_parameters must describe the axial 2D rotary, got {rp!r}")
    theta = rp.get("rope_theta", 10000.0)
    if not isinstance(theta, int | float) or theta <= 0:
        raise ConfigError(f"vision_config rope_theta must be > 0, got {theta!r}")
    vc = VisionConfig(**{k: _int(d, k) for k in keys}, **extra, model_type=mt, rope_theta=float(theta))
    if vc.hidden_size % vc.num_heads or vc.head_dim % 4:
        raise ConfigError(f"vision_config: hidden_size ({vc.hidden_size}) / num_heads ({vc.num_heads}) must be a "
                          f"multiple of 4 (the 2D rotary splits each head into row and column halves)")
    side = int(round(vc.num_position_embeddings ** 0.5))
    if side * side != vc.num_position_embeddings:
        raise ConfigError(f"vision_config.num_position_embeddings must be a square (a learned grid), got "
                          f"{vc.num_position_embeddings}")
    return vc
