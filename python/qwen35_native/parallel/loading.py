"""Sharded loading: one rank's model from a checkpoint directory, reading only that rank's bytes.

The model is built on the meta device (no memory), sharded (``shard.py``: only the rank's parameters get storage,
on the rank's device) and filled from a load plan rewritten to the rank's slices, so each memory-mapped safetensors
tensor is read only where the rank needs it (the 397B model loads on 8 ranks within host memory). Replicated
tensors (norms, router, vision tower) are read whole by every rank.

Tests: tests/parallel/test_layout.py (bytes read, both expert layouts), test_tp_group.py (logits).
"""

from __future__ import annotations

import logging

import torch

from ..model import Qwen35ForCausalLM, from_pretrained
from ..model.config import Qwen35Config
from .groups import TPContext
from .layout import check_tensor_parallel
from .shard import shard_model, shard_plan

logger = logging.getLogger("qwen35_native")


def load_sharded(path: str, ctx: TPContext, *, dtype: torch.dtype | str | None = None, backend: str | None = None,
                 moe_parallel: str = "tp", load_vision: bool | None = None, load_mtp: bool = False,
                 progress: bool | None = None) -> Qwen35ForCausalLM:
    """Rank ``ctx.rank`` of ``ctx.world_size``'s model, on ``ctx.device``; arguments as ``q35.from_pretrained``.

    ``moe_parallel``: ``"tp"`` (every expert split by its intermediate dim) or ``"ep"`` (experts split across the
    ranks). The model's collectives run over ``ctx.group`` (none when it is None: a shard to inspect)."""
    config = Qwen35Config.from_file(path)
    check_tensor_parallel(config.text, ctx.world_size, moe_parallel)

    def transform(model, plan):
        return shard_plan(plan, shard_model(model, ctx, moe_parallel))

    model = from_pretrained(path, device=ctx.device, dtype=dtype, backend=backend, load_vision=load_vision,
                            load_mtp=load_mtp, progress=progress, transform=transform)
    logger.info("qwen35_native: rank %d of %d holds %.2f GiB of weights (moe_parallel=%r)", ctx.rank,
                ctx.world_size, sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, moe_parallel)
    return model
