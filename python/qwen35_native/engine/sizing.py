"""How big the engine's caches and batches are (``LLM(...)`` arguments, resolved once at start-up).

- ``max_num_seqs`` (running sequences, = GDN state slots): default 64 on CUDA, 8 on the CPU.
- ``max_num_batched_tokens`` (token budget of one step; longer prompts are prefilled in chunks): default 8192 on
  CUDA, 2048 on the CPU, at least ``max_num_seqs``.
- ``num_blocks`` (KV-cache blocks of ``block_size`` tokens): on CUDA, what ``gpu_memory_utilization`` of the
  device leaves after the weights, the GDN slots, the penalty masks and the activation peak of one full step (a
  profiled forward + sampler over ``max_num_batched_tokens`` tokens) plus a share for CUDA graphs; on the CPU enough
  for ``max_num_seqs`` full contexts, at most ``cpu_cache_bytes``.
- ``max_model_len``: the config's ``max_position_embeddings``, capped by the cache's capacity (``num_blocks *
  block_size``); asking for more than either is an error.

Tests: tests/engine/test_llm_errors.py (arguments), test_cuda_graphs.py (-m gpu: CUDA sizing).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

import torch

from ..model import ModelCache
from ..model.cache import KV_BLOCK_SIZE
from .sampling import SamplingTensors, sample
from .sampling_params import SamplingParams

logger = logging.getLogger("qwen35_native")

CPU_CACHE_BYTES = 2 << 30


@dataclass
class CachePlan:
    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    prefix_states: int = 0  # GDN state snapshots of prefix caching (one per sequence slot)


def _positive_int(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"qwen35_native.LLM: {name} must be a positive integer{' or None' if allow_none else ''}, "
                         f"got {value!r}")


def plan_cache(model, *, max_num_seqs: int | None = None, max_model_len: int | None = None,
               block_size: int = KV_BLOCK_SIZE,
               num_blocks: int | None = None, gpu_memory_utilization: float = 0.9,
               max_num_batched_tokens: int | None = None, cuda_graphs: bool = False,
               cpu_cache_bytes: int = CPU_CACHE_BYTES, speculative=None, prefix_caching: bool = False) -> CachePlan:
    """``speculative`` (a ``SpeculativeConfig``): KV blocks also hold the MTP head's layers, and every sequence
    has k scratch GDN slots besides its own. ``prefix_caching``: ``max_num_seqs`` more GDN slots hold snapshots."""
    for name, value in (("max_num_seqs", max_num_seqs), ("max_model_len", max_model_len),
                        ("num_blocks", num_blocks), ("max_num_batched_tokens", max_num_batched_tokens)):
        _positive_int(name, value)
    _positive_int("block_size", block_size, allow_none=False)
    if not isinstance(gpu_memory_utilization, (int, float)) or not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"qwen35_native.LLM: gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    cfg, cuda = model.text_config, model.device.type == "cuda"
    if max_model_len is not None and max_model_len > cfg.max_position_embeddings:
        raise ValueError(f"qwen35_native.LLM: max_model_len={max_model_len} exceeds the model's "
                         f"max_position_embeddings={cfg.max_position_embeddings}")
    max_num_seqs = max_num_seqs or (64 if cuda else 8)
    max_num_batched_tokens = max_num_batched_tokens or max(8192 if cuda else 2048, max_num_seqs)
    wanted_len = max_model_len or cfg.max_position_embeddings
    if num_blocks is None:
        if cuda:
            num_blocks = _cuda_blocks(model, max_num_seqs, block_size, gpu_memory_utilization,
                                      max_num_batched_tokens, cuda_graphs, speculative,
                                      max_num_seqs if prefix_caching else 0)
        else:
            per_block = ModelCache.bytes_per_block(model.cache_config, block_size, model.dtype,
                                                   _mtp_layers(model, speculative))
            full = max_num_seqs * ((wanted_len + block_size - 1) // block_size)
            num_blocks = max(1, min(full, cpu_cache_bytes // max(per_block, 1)))
    capacity = num_blocks * block_size
    if max_model_len is not None and max_model_len > capacity:
        raise ValueError(f"qwen35_native.LLM: max_model_len={max_model_len} needs more KV cache than there is "
                         f"({num_blocks} blocks x {block_size} tokens = {capacity} tokens); raise num_blocks or "
                         f"gpu_memory_utilization, or lower max_model_len")
    return CachePlan(num_blocks, block_size, max_num_seqs, min(wanted_len, capacity), max_num_batched_tokens,
                     max_num_seqs if prefix_caching else 0)


def _mtp_layers(model, speculative) -> int:
    return len(model.mtp.layers) if speculative is not None and model.mtp is not None else 0


def _cuda_blocks(model, max_num_seqs: int, block_size: int, utilization: float, max_tokens: int,
                 cuda_graphs: bool, speculative=None, prefix_states: int = 0) -> int:
    cfg, dtype, device = model.cache_config, model.dtype, model.device   # a tensor-parallel rank's own heads
    peak = profile_step_bytes(model, max_tokens, min(max_num_seqs, max_tokens), block_size)
    graph_share = int(peak * min(1.0, max_num_seqs / max_tokens)) + (64 << 20) if cuda_graphs else 0
    free, total = torch.cuda.mem_get_info(device)
    scratch = max_num_seqs * speculative.num_speculative_tokens if speculative is not None else 0
    scratch += prefix_states  # snapshot slots cost what a sequence's GDN slot costs
    fixed = (max_num_seqs + 1) * (ModelCache.bytes_per_slot(cfg, dtype) + 2 * cfg.vocab_size) + \
        scratch * ModelCache.bytes_per_slot(cfg, dtype)
    budget = int(total * utilization) - (total - free) - peak - graph_share - fixed
    per_block = ModelCache.bytes_per_block(cfg, block_size, dtype, _mtp_layers(model, speculative))
    blocks = budget // max(per_block, 1) - 1  # one padding block
    gib = 1 << 30
    if blocks < 1:
        raise ValueError(f"qwen35_native.LLM: no GPU memory left for the KV cache: {total / gib:.1f} GiB x "
                         f"gpu_memory_utilization={utilization} minus {(total - free) / gib:.2f} GiB in use, "
                         f"{peak / gib:.2f} GiB activation peak (max_num_batched_tokens={max_tokens}) and "
                         f"{fixed / gib:.2f} GiB of per-sequence state (max_num_seqs={max_num_seqs}); lower those "
                         f"or raise gpu_memory_utilization")
    logger.info("qwen35_native: KV cache %d blocks x %d tokens (%.2f GiB); activation peak %.2f GiB", blocks,
                block_size, blocks * per_block / gib, peak / gib)
    return blocks


def profile_step_bytes(model, num_tokens: int, num_seqs: int, block_size: int) -> int:
    """Peak device memory (bytes beyond what is allocated before, cache excluded) of one engine step: a prefill
    of ``num_tokens`` tokens in ``num_seqs`` sequences and the sampler on their logits (full-sort path, logprobs)."""
    device = model.device
    lens = [num_tokens // num_seqs + (i < num_tokens % num_seqs) for i in range(num_seqs)]
    blocks = [(n + block_size - 1) // block_size for n in lens]
    cache = model.allocate_cache(sum(blocks), block_size, num_seqs)
    table = torch.zeros(num_seqs, max(blocks), dtype=torch.int32)
    start = 0
    for i, nb in enumerate(blocks):
        table[i, :nb] = torch.arange(start, start + nb)
        start += nb
    from ..model import ForwardBatch

    batch = ForwardBatch.build(lens, [0] * num_seqs, list(range(num_seqs)), table, block_size, device)
    ids = torch.randint(0, model.text_config.vocab_size, (num_tokens,), device=device)
    params = [SamplingParams(temperature=1.0, top_p=0.9, seed=i, logprobs=20).resolved() for i in range(num_seqs)]
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        logits = model.forward_cached(ids, batch, cache)
        sample(logits, SamplingTensors.build(params, [0] * num_seqs, model.text_config.vocab_size, device))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del cache, logits
    gc.collect()
    torch.cuda.empty_cache()
    return peak
