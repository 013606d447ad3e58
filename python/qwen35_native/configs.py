"""Named configurations: the released Qwen3.5 sizes (MODEL_SPEC §1; 4B is left out because its GDN head counts are
unknown) and tiny test models.

``get(name)`` returns a :class:`~qwen35_native.model.config.Qwen35Config`; ``config_json(name)`` the config.json
dict in the release layout. The tiny models:
    tiny-moe    MoE, 4 layers (L L L F), GDN key dim 16 != value dim 24, GQA 4 q heads / 1 kv head, 8 experts top-2.
    tiny-dense  dense SwiGLU, 5 layers (L F L L F), tied embeddings, otherwise like tiny-moe.
    tiny-kernel MoE with the real head dims (GDN K = V = 128, attention head_dim 256, rotary 64, mrope [11, 11, 10])
                but few heads, layers and experts, so the CUDA kernels (real head dims only) can run it.
Token ids of the tiny models are those ``qwen35 make-tiny`` assigns: byte-level BPE ids [0, 448), Qwen3.5's 33
special tokens at [448, 481), vocab padded to 512.
"""

from __future__ import annotations

import copy

from .model.config import Qwen35Config

TINY_SPECIAL_BASE = 448  # first special token id of the tiny tokenizers (<|endoftext|>)


def _release(moe: bool, hidden: int, layers: int, heads: int, kv: int, lin_k: int, lin_v: int, vision: tuple,
             tie: bool = False, experts: int = 0, topk: int = 0, moe_inter: int = 0, shared: int = 0,
             dense_inter: int = 0) -> dict:
    text = {"model_type": "qwen3_5_moe_text" if moe else "qwen3_5_text", "vocab_size": 248320,
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "head_dim": 256, "linear_num_key_heads": lin_k,
            "linear_num_value_heads": lin_v, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
            "linear_conv_kernel_dim": 4, "full_attention_interval": 4, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 262144, "attn_output_gate": True, "mamba_ssm_dtype": "float32",
            "mtp_num_hidden_layers": 1, "eos_token_id": 248044, "tie_word_embeddings": tie, "dtype": "bfloat16",
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
                                "mrope_section": [11, 11, 10], "mrope_interleaved": True}}
    if moe:
        text.update(num_experts=experts, num_experts_per_tok=topk, moe_intermediate_size=moe_inter,
                    shared_expert_intermediate_size=shared)
    else:
        text["intermediate_size"] = dense_inter
    depth, vhidden, vheads, vinter = vision
    family = "qwen3_5_moe" if moe else "qwen3_5"
    return {"model_type": family, "text_config": text, "tie_word_embeddings": tie,
            "vision_config": {"model_type": family, "depth": depth, "hidden_size": vhidden, "num_heads": vheads,
                              "intermediate_size": vinter, "out_hidden_size": hidden, "patch_size": 16,
                              "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3,
                              "num_position_embeddings": 2304, "hidden_act": "gelu_pytorch_tanh",
                              "deepstack_visual_indexes": []},
            "image_token_id": 248056, "video_token_id": 248057, "vision_start_token_id": 248053,
            "vision_end_token_id": 248054}


_VIT = (27, 1152, 16, 4304)


def _tiny(moe: bool, hidden: int, layer_types: list, heads: int, kv: int, head_dim: int, mrope: list, lin: tuple,
          tie: bool = False, experts: int = 8, topk: int = 2, moe_inter: int = 32, shared: int = 48,
          dense_inter: int = 96, vision_hidden: int = 32) -> dict:
    cfg = _release(moe, hidden, len(layer_types), heads, kv, lin[0], lin[1], (1, vision_hidden, 2, 64), tie,
                   experts, topk, moe_inter, shared, dense_inter)
    base = TINY_SPECIAL_BASE
    t = cfg["text_config"]
    t.update(vocab_size=512, head_dim=head_dim, linear_key_head_dim=lin[2], linear_value_head_dim=lin[3],
             layer_types=layer_types, max_position_embeddings=4096, eos_token_id=base, dtype="float32",
             initializer_range=0.02)
    t.pop("full_attention_interval")
    t["rope_parameters"].update(rope_theta=10000, mrope_section=mrope)
    cfg["vision_config"].update(num_position_embeddings=64)
    cfg.update(image_token_id=base + 12, video_token_id=base + 13, vision_start_token_id=base + 9,
               vision_end_token_id=base + 10)
    return cfg


_L, _F = "linear_attention", "full_attention"
_NAMED = {
    "397b-a17b": _release(True, 4096, 60, 32, 2, 16, 64, _VIT, experts=512, topk=10, moe_inter=1024, shared=1024),
    "122b-a10b": _release(True, 3072, 48, 32, 2, 16, 64, _VIT, experts=256, topk=8, moe_inter=1024, shared=1024),
    "35b-a3b": _release(True, 2048, 40, 16, 2, 16, 32, _VIT, experts=256, topk=8, moe_inter=512, shared=512),
    "27b": _release(False, 5120, 64, 24, 4, 16, 48, _VIT, dense_inter=17408),
    "9b": _release(False, 4096, 32, 16, 4, 16, 32, _VIT, dense_inter=12288),
    "0.8b": _release(False, 1024, 24, 8, 2, 16, 16, (12, 768, 12, 3072), tie=True, dense_inter=3584),
    "tiny-moe": _tiny(True, 64, [_L, _L, _L, _F], 4, 1, 32, [2, 1, 1], (2, 4, 16, 24)),
    "tiny-dense": _tiny(False, 64, [_L, _F, _L, _L, _F], 4, 1, 32, [2, 1, 1], (2, 4, 16, 24), tie=True),
    "tiny-kernel": _tiny(True, 256, [_L, _L, _L, _F], 2, 1, 256, [11, 11, 10], (1, 2, 128, 128), moe_inter=128,
                         shared=128, vision_hidden=64),
}


def names() -> list[str]:
    return list(_NAMED)


def config_json(name: str) -> dict:
    """The config.json dict (release layout) of a named config."""
    if name not in _NAMED:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(_NAMED)}")
    return copy.deepcopy(_NAMED[name])


def get(name: str) -> Qwen35Config:
    """The parsed config of a released size (``"397b-a17b"``, ``"35b-a3b"``, ``"9b"``, ...) or a tiny test model."""
    return Qwen35Config.from_dict(config_json(name))
