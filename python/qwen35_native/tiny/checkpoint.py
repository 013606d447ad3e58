"""``qwen35 make-tiny``: a random checkpoint in the official release layout (MODEL_SPEC §2), for demos and tests.

Writes config.json, generation_config.json, model.safetensors (or shards + index), tokenizer.json,
tokenizer_config.json and chat_template.jinja (the chat package's tiny tokenizer and packaged Qwen3.5-style
template, ``chat/tiny_tokenizer.py``), preprocessor_config.json and video_preprocessor_config.json (small pixel
budgets). Tensors: ``model.language_model.*`` text decoder with fused experts (or per-expert with
``expert_layout="per-expert"``), ``lm_head.weight`` unless tied, ``model.visual.*`` vision tower, ``mtp.*`` head.
Random like transformers' init (N(0, 0.02) linears) but with noise on every norm weight, A_log, dt_bias and conv
weight, so that convention bugs ((1 + w) vs w norms, decay signs) change the logits.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from .. import configs
from ..chat.tiny_tokenizer import build_tiny_tokenizer, write_tokenizer_files
from ..model.config import Qwen35Config, TextConfig, VisionConfig


class _Gen:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, std=0.02, mean=0.0):
        return torch.randn(shape, generator=self.g) * std + mean

    def uniform(self, *shape, low=0.0, high=1.0):
        return torch.rand(shape, generator=self.g) * (high - low) + low


def _decoder_layer(t: dict, r: _Gen, c: TextConfig, p: str, kind: str, per_expert: bool) -> None:
    H = c.hidden_size
    t[f"{p}input_layernorm.weight"] = r.normal(H, std=0.1)           # zero-centred: scale 1 + w
    t[f"{p}post_attention_layernorm.weight"] = r.normal(H, std=0.1)
    if kind == "linear_attention":
        a, Hv = f"{p}linear_attn.", c.linear_num_value_heads
        t[f"{a}in_proj_qkv.weight"] = r.normal(c.conv_dim, H)
        t[f"{a}in_proj_z.weight"] = r.normal(c.linear_value_dim, H)
        t[f"{a}in_proj_b.weight"] = r.normal(Hv, H, std=0.2)
        t[f"{a}in_proj_a.weight"] = r.normal(Hv, H, std=0.2)
        t[f"{a}conv1d.weight"] = r.uniform(c.conv_dim, 1, c.linear_conv_kernel_dim, low=-0.6, high=0.6)
        t[f"{a}dt_bias"] = r.normal(Hv, std=0.5, mean=1.0)
        t[f"{a}A_log"] = r.uniform(Hv, low=0.01, high=16.0).log()
        t[f"{a}norm.weight"] = r.normal(c.linear_value_head_dim, std=0.1, mean=1.0)   # plain w
        t[f"{a}out_proj.weight"] = r.normal(H, c.linear_value_dim)
    else:
        a, D = f"{p}self_attn.", c.head_dim
        q, kv = c.num_attention_heads * D, c.num_key_value_heads * D
        t[f"{a}q_proj.weight"] = r.normal(2 * q, H)
        t[f"{a}k_proj.weight"] = r.normal(kv, H)
        t[f"{a}v_proj.weight"] = r.normal(kv, H)
        t[f"{a}o_proj.weight"] = r.normal(H, q)
        t[f"{a}q_norm.weight"] = r.normal(D, std=0.1)
        t[f"{a}k_norm.weight"] = r.normal(D, std=0.1)
    m = f"{p}mlp."
    if not c.is_moe:
        t[f"{m}gate_proj.weight"] = r.normal(c.intermediate_size, H)
        t[f"{m}up_proj.weight"] = r.normal(c.intermediate_size, H)
        t[f"{m}down_proj.weight"] = r.normal(H, c.intermediate_size)
        return
    E, inter = c.num_experts, c.moe_intermediate_size
    t[f"{m}gate.weight"] = r.normal(E, H, std=0.3)   # well-separated routing (top-k margins)
    gate_up, down = r.normal(E, 2 * inter, H), r.normal(E, H, inter)
    if per_expert:
        for e in range(E):
            t[f"{m}experts.{e}.gate_proj.weight"] = gate_up[e, :inter].clone()
            t[f"{m}experts.{e}.up_proj.weight"] = gate_up[e, inter:].clone()
            t[f"{m}experts.{e}.down_proj.weight"] = down[e].clone()
    else:
        t[f"{m}experts.gate_up_proj"], t[f"{m}experts.down_proj"] = gate_up, down
    s = c.shared_expert_intermediate_size
    if s:
        t[f"{m}shared_expert.gate_proj.weight"] = r.normal(s, H)
        t[f"{m}shared_expert.up_proj.weight"] = r.normal(s, H)
        t[f"{m}shared_expert.down_proj.weight"] = r.normal(H, s)
        t[f"{m}shared_expert_gate.weight"] = r.normal(1, H, std=0.1)


def _vision(t: dict, r: _Gen, v: VisionConfig) -> None:
    p, Vh, merged = "model.visual.", v.hidden_size, v.hidden_size * v.spatial_merge_size ** 2
    t[f"{p}patch_embed.proj.weight"] = r.normal(Vh, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    t[f"{p}patch_embed.proj.bias"] = r.normal(Vh)
    t[f"{p}pos_embed.weight"] = r.normal(v.num_position_embeddings, Vh)
    for j in range(v.depth):
        b = f"{p}blocks.{j}."
        for n in ("norm1", "norm2"):
            t[f"{b}{n}.weight"], t[f"{b}{n}.bias"] = r.normal(Vh, std=0.1, mean=1.0), r.normal(Vh, std=0.1)
        for n, (rows, cols) in (("attn.qkv", (3 * Vh, Vh)), ("attn.proj", (Vh, Vh)),
                                ("mlp.linear_fc1", (v.intermediate_size, Vh)),
                                ("mlp.linear_fc2", (Vh, v.intermediate_size))):
            t[f"{b}{n}.weight"], t[f"{b}{n}.bias"] = r.normal(rows, cols), r.normal(rows)
    t[f"{p}merger.norm.weight"], t[f"{p}merger.norm.bias"] = r.normal(Vh, std=0.1, mean=1.0), r.normal(Vh, std=0.1)
    for n, (rows, cols) in (("linear_fc1", (merged, merged)), ("linear_fc2", (v.out_hidden_size, merged))):
        t[f"{p}merger.{n}.weight"], t[f"{p}merger.{n}.bias"] = r.normal(rows, cols), r.normal(rows)


def random_tensors(config: Qwen35Config, seed: int = 0, per_expert: bool = False) -> dict[str, torch.Tensor]:
    c, r, t = config.text, _Gen(seed), {}
    pre = "model.language_model."
    t[f"{pre}embed_tokens.weight"] = r.normal(c.vocab_size, c.hidden_size)
    for i, kind in enumerate(c.layer_types):
        _decoder_layer(t, r, c, f"{pre}layers.{i}.", kind, per_expert)
    t[f"{pre}norm.weight"] = r.normal(c.hidden_size, std=0.1)
    if not c.tie_word_embeddings:
        t["lm_head.weight"] = r.normal(c.vocab_size, c.hidden_size, std=0.05)
    if config.vision is not None:
        _vision(t, r, config.vision)
    if c.mtp_num_hidden_layers:
        t["mtp.fc.weight"] = r.normal(c.hidden_size, 2 * c.hidden_size)
        for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
            t[f"mtp.{n}.weight"] = r.normal(c.hidden_size, std=0.1)
    for j in range(c.mtp_num_hidden_layers):
        _decoder_layer(t, r, c, f"mtp.layers.{j}.", "full_attention", per_expert)
    return t


def _save(tensors: dict, directory: str, shards: int, dtype: torch.dtype) -> None:
    keep_fp32 = ("A_log",)  # the release stores A_log in fp32 whatever the model dtype
    tensors = {k: (v if k.endswith(keep_fp32) else v.to(dtype)).contiguous() for k, v in tensors.items()}
    if shards <= 1:
        save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[s::shards]}
        save_file(part, os.path.join(directory, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _write_processor_configs(directory: str, v: VisionConfig) -> None:
    """preprocessor_config.json / video_preprocessor_config.json in the release format, with small pixel budgets
    (4 to 64 merged tokens per image) so that demos and tests stay fast."""
    common = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True, "resample": 3,
              "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
              "merge_size": v.spatial_merge_size, "processor_class": "Qwen3VLProcessor"}
    factor = (v.patch_size * v.spatial_merge_size) ** 2
    image = {**common, "image_processor_type": "Qwen2VLImageProcessorFast",
             "size": {"shortest_edge": 4 * factor, "longest_edge": 64 * factor}}
    video = {**common, "video_processor_type": "Qwen3VLVideoProcessor", "fps": 2, "min_frames": 4, "max_frames": 768,
             "do_sample_frames": True, "size": {"shortest_edge": 8 * factor, "longest_edge": 192 * factor}}
    for name, data in (("preprocessor_config.json", image), ("video_preprocessor_config.json", video)):
        with open(os.path.join(directory, name), "w") as f:
            json.dump(data, f, indent=2)


def write_tiny_checkpoint(directory: str, config: str = "tiny-moe", seed: int = 0, shards: int = 1,
                          expert_layout: str = "fused", dtype: torch.dtype = torch.float32) -> str:
    """Writes the checkpoint into ``directory`` (created if needed) and returns it."""
    if config not in ("tiny-moe", "tiny-dense", "tiny-kernel"):
        raise ValueError(f"make-tiny: config must be tiny-moe, tiny-dense or tiny-kernel, got {config!r}")
    if expert_layout not in ("fused", "per-expert"):
        raise ValueError(f"make-tiny: expert_layout must be 'fused' or 'per-expert', got {expert_layout!r}")
    os.makedirs(directory, exist_ok=True)
    data = configs.config_json(config)
    text = data["text_config"]
    ids = write_tokenizer_files(directory, build_tiny_tokenizer(configs.TINY_SPECIAL_BASE),
                                model_max_length=text["max_position_embeddings"])
    # token ids come from the tokenizer just written, not from constants
    text["eos_token_id"] = ids["<|endoftext|>"]
    data.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    data["text_config"]["dtype"] = data["dtype"] = str(dtype).replace("torch.", "")
    cfg = Qwen35Config.from_dict(data)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
    gen = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
           "pad_token_id": ids["<|endoftext|>"], "do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95}
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    if cfg.vision is not None:
        _write_processor_configs(directory, cfg.vision)
    _save(random_tensors(cfg, seed, per_expert=expert_layout == "per-expert"), directory, shards, dtype)
    return directory
