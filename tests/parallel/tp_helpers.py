"""Shared pieces of the tensor-parallel tests: tiny checkpoints whose head and expert counts divide 2 and 4, and
the comparison metric.

Checkpoints (fp32, random, release layout):
    moe-kvrep   tiny-moe: 4 q / 1 kv heads (kv replicated at tp 2), GDN 2 k / 4 v heads, 8 experts
    dense       tiny-dense: tied embeddings, dense MLP, 1 kv head
    moe4        8 q / 4 kv heads (kv split at tp 2 and 4), GDN 4 k / 8 v heads, 8 experts, vocab 510 (padded shards)
    moe4-kvrep  like moe4 with 2 kv heads (replicated on pairs of ranks at tp 4), per-expert checkpoint layout
    dense4      dense, 8 q / 4 kv heads, GDN 4 k / 8 v heads, tied embeddings
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

CASES = {
    "moe-kvrep": ("tiny-moe", {}, False),
    "dense": ("tiny-dense", {}, False),
    "moe4": ("tiny-moe", dict(num_attention_heads=8, num_key_value_heads=4, linear_num_key_heads=4,
                              linear_num_value_heads=8, vocab_size=510), False),
    "moe4-kvrep": ("tiny-moe", dict(num_attention_heads=8, num_key_value_heads=2, linear_num_key_heads=4,
                                    linear_num_value_heads=8), True),
    "dense4": ("tiny-dense", dict(num_attention_heads=8, num_key_value_heads=4, linear_num_key_heads=4,
                                  linear_num_value_heads=8), False),
}


def write_case(directory: str, name: str, seed: int = 3) -> str:
    """Writes checkpoint ``name`` of :data:`CASES` (config.json + model.safetensors) into ``directory``."""
    from qwen35_native import configs
    from qwen35_native.model.config import Qwen35Config
    from qwen35_native.tiny.checkpoint import random_tensors

    base, text, per_expert = CASES[name]
    data = configs.config_json(base)
    data["text_config"].update(text)
    cfg = Qwen35Config.from_dict(data)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f)
    tensors = {k: v.contiguous() for k, v in random_tensors(cfg, seed, per_expert=per_expert).items()}
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return directory


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (shapes must match)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())
