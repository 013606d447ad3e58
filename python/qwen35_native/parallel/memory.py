"""Device memory one tensor-parallel rank needs: its weights, and its share of the caches per token / sequence.

Computed from the same layout the ranks load (``layout.py``): the model is built on the meta device (no memory)
and every parameter's local shape is summed, so replicated parts (norms, routers, the vision tower, kv heads
shared by several ranks, the padding of the vocab shards) are counted on every rank. KV cache: full-attention
layers' local kv heads, K and V, per token; Gated DeltaNet state: local conv + recurrent (float32) state per
sequence, independent of its length. Not counted: activations of a step (``engine/sizing.py`` profiles them at
start-up), CUDA graphs, the MTP head (not loaded by ``q35.LLM``).

    python -m qwen35_native.parallel.memory            # the README table (bf16, released sizes, tp 1/2/4/8)

Tests: tests/parallel/test_layout.py.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from .. import configs
from ..model import ModelCache, Qwen35ForCausalLM
from ..model.config import Qwen35Config
from ..model.loading import resolve_backends
from .layout import check_tensor_parallel, local_cache_config, param_specs

GIB, MIB = 1 << 30, 1 << 20
RELEASED = ("397b-a17b", "122b-a10b", "35b-a3b", "27b", "9b", "0.8b")


@dataclass(frozen=True)
class RankMemory:
    weights: int            # bytes of parameters on the rank
    kv_per_token: int       # bytes of KV cache per token of context (all full-attention layers)
    state_per_seq: int      # bytes of Gated DeltaNet conv + recurrent state per sequence

    def total(self, num_seqs: int = 1, tokens_per_seq: int = 0) -> int:
        return self.weights + num_seqs * (self.state_per_seq + tokens_per_seq * self.kv_per_token)


def rank_memory(config: Qwen35Config, tp: int, moe_parallel: str = "tp", dtype: torch.dtype = torch.bfloat16,
                with_vision: bool = True) -> RankMemory:
    """Per-rank memory of ``config`` split over ``tp`` ranks (rank 0; every rank holds the same amount)."""
    check_tensor_parallel(config.text, tp, moe_parallel)
    model = Qwen35ForCausalLM(config, dtype, "meta", resolve_backends("reference"),
                              with_vision=with_vision and config.vision is not None)
    specs, _ = param_specs(model, 0, tp, moe_parallel)
    weights = 0
    for name, p in model.named_parameters():
        shape = specs[name].local_shape(p.shape) if name in specs else p.shape
        weights += torch.Size(shape).numel() * p.element_size()
    local = local_cache_config(config.text, tp)
    return RankMemory(weights, ModelCache.bytes_per_block(local, 1, dtype), ModelCache.bytes_per_slot(local, dtype))


def memory_table(names=RELEASED, tps=(1, 2, 4, 8), moe_parallel: str = "tp", context: int = 262144) -> str:
    """Markdown table of :func:`rank_memory` (bf16) for each named config and tensor-parallel size that divides it."""
    rows = ["| model | tp | weights per rank (GiB) | KV cache per 1K tokens (MiB) | GDN state per sequence (MiB) | "
            f"weights + 1 sequence of {context:,} tokens (GiB) |", "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        config = configs.get(name)
        for tp in tps:
            try:
                m = rank_memory(config, tp, moe_parallel)
            except ValueError:
                continue  # tp does not divide this model's heads / experts
            rows.append(f"| {name} | {tp} | {m.weights / GIB:.1f} | {1024 * m.kv_per_token / MIB:.1f} | "
                        f"{m.state_per_seq / MIB:.1f} | {m.total(1, context) / GIB:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-rank memory of tensor-parallel Qwen3.5 (bf16).")
    parser.add_argument("--moe-parallel", default="tp", choices=["tp", "ep"])
    parser.add_argument("--context", type=int, default=262144, help="tokens of the one sequence in the last column")
    args = parser.parse_args(argv)
    print(memory_table(moe_parallel=args.moe_parallel, context=args.context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
