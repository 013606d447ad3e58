"""Tiny random checkpoints in the official release layout (``qwen35 make-tiny``), with a trained byte-level BPE
tokenizer carrying Qwen3.5's special tokens and the Qwen3.5-style chat template (both from ``qwen35_native.chat``)."""

from __future__ import annotations

import argparse

from .checkpoint import random_tensors, write_tiny_checkpoint

__all__ = ["add_make_tiny_parser", "random_tensors", "write_tiny_checkpoint"]


def _make_tiny(args: argparse.Namespace) -> int:
    import torch

    path = write_tiny_checkpoint(args.dir, config=args.config, seed=args.seed, shards=args.shards,
                                 expert_layout=args.expert_layout, dtype=getattr(torch, args.dtype))
    print(f"wrote {args.config} checkpoint (seed {args.seed}) to {path}")
    return 0


def add_make_tiny_parser(sub) -> None:
    """Registers ``qwen35 make-tiny DIR [--config ...] [--seed N]`` on an argparse subparsers object."""
    p = sub.add_parser("make-tiny", help="write a small random checkpoint in the release layout (demos, tests)")
    p.add_argument("dir", help="output directory (created if needed)")
    p.add_argument("--config", default="tiny-moe", choices=["tiny-moe", "tiny-dense", "tiny-kernel"])
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    p.add_argument("--shards", type=int, default=1, help="number of safetensors shards (default 1: one file)")
    p.add_argument("--expert-layout", default="fused", choices=["fused", "per-expert"],
                   help="routed experts as fused 3-D tensors (release) or one tensor per expert")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.set_defaults(func=_make_tiny)
