"""Caches and batch metadata of the cached forward (DESIGN.md §4). The engine owns both; the model reads and writes
the caches in place.

- :class:`ModelCache`: per full-attention layer a paged KV cache ``k, v [num_blocks, block_size, Hkv, D]`` (model
  dtype, K after k_norm and RoPE); per GDN layer a conv state ``[num_slots, conv_dim, W-1]`` (model dtype) and a
  recurrent state ``[num_slots, Hv, K, V]`` (float32). Allocate with :meth:`ModelCache.allocate`.
- :class:`ForwardBatch`: N sequences packed along the token axis (prefill chunks and decode steps together). The
  leading sequences with one new token and a cached context form the decode part (``num_decodes``) and run the
  decode ops; list decode steps first to use them. Everything else runs the prefill ops, which are correct for any
  mix (a decode step listed after a prefill chunk is simply a one-token prefill continuing from its cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TextConfig

# Tokens per KV-cache block: the attention kernels' K/V tile (csrc/kernels/attention/README.md). Any power of two
# works with the kernels; other sizes run the attention reference.
KV_BLOCK_SIZE = 64


@dataclass
class ModelCache:
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]]      # layer index -> (k_cache, v_cache)
    conv: dict[int, torch.Tensor]                          # layer index -> conv state
    ssm: dict[int, torch.Tensor]                           # layer index -> recurrent state
    num_blocks: int
    block_size: int
    num_slots: int

    @staticmethod
    def bytes_per_block(cfg: TextConfig, block_size: int, dtype: torch.dtype) -> int:
        per_layer = 2 * block_size * cfg.num_key_value_heads * cfg.head_dim * dtype.itemsize
        return per_layer * len(cfg.layer_indices("full_attention"))

    @staticmethod
    def bytes_per_slot(cfg: TextConfig, dtype: torch.dtype) -> int:
        conv = cfg.conv_dim * (cfg.linear_conv_kernel_dim - 1) * dtype.itemsize
        ssm = cfg.linear_num_value_heads * cfg.linear_key_head_dim * cfg.linear_value_head_dim * 4
        return (conv + ssm) * len(cfg.layer_indices("linear_attention"))

    @classmethod
    def allocate(cls, cfg: TextConfig, num_blocks: int, block_size: int, num_slots: int,
                 device: torch.device | str, dtype: torch.dtype) -> ModelCache:
        """Uninitialised caches (sequences starting from scratch never read stale contents)."""
        if min(num_blocks, block_size, num_slots) < 1:
            raise ValueError(f"num_blocks, block_size and num_slots must be >= 1, got {num_blocks}, {block_size}, "
                             f"{num_slots}")
        kv_shape = (num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim)
        kv = {i: (torch.empty(kv_shape, dtype=dtype, device=device), torch.empty(kv_shape, dtype=dtype, device=device))
              for i in cfg.layer_indices("full_attention")}
        conv_shape = (num_slots, cfg.conv_dim, cfg.linear_conv_kernel_dim - 1)
        ssm_shape = (num_slots, cfg.linear_num_value_heads, cfg.linear_key_head_dim, cfg.linear_value_head_dim)
        gdn = cfg.layer_indices("linear_attention")
        conv = {i: torch.empty(conv_shape, dtype=dtype, device=device) for i in gdn}
        ssm = {i: torch.empty(ssm_shape, dtype=torch.float32, device=device) for i in gdn}
        return cls(kv, conv, ssm, num_blocks, block_size, num_slots)


@dataclass
class ForwardBatch:
    """Metadata of one cached forward over T packed tokens of N sequences (device tensors unless noted)."""
    cu_seqlens: torch.Tensor          # int32 [N+1] new-token offsets
    seq_lens: torch.Tensor            # int32 [N] tokens in the cache after this step (context + new)
    has_initial_state: torch.Tensor   # bool [N] context > 0: GDN continues from the slot's states
    slots: torch.Tensor               # int32 [N] GDN state slot of each sequence
    block_tables: torch.Tensor        # int32 [N, max_blocks] KV-cache blocks of each sequence
    positions: torch.Tensor           # int64 [3, T] M-RoPE positions (T, H, W streams)
    slot_mapping: torch.Tensor        # int64 [T] flat KV-cache slot of each new token
    logits_indices: torch.Tensor | None  # int64 [M] tokens whose logits are returned (None: all)
    num_decodes: int                  # host int: leading sequences that are single-token decode steps
    prefill_cu_seqlens: torch.Tensor  # int32 [N - num_decodes + 1] offsets of the rest, from their first token
    num_tokens: int                   # host int: T

    @classmethod
    def build(cls, query_lens: list[int], context_lens: list[int], slots: list[int], block_tables: torch.Tensor,
              block_size: int, device: torch.device | str, positions: torch.Tensor | None = None,
              logits: str | list[int] = "last", num_slots: int | None = None,
              num_blocks: int | None = None) -> ForwardBatch:
        """Builds and validates the metadata from host lists.

        Args:
            query_lens: new tokens of each sequence (>= 1); context_lens: tokens already cached (>= 0).
            slots: distinct GDN slot per sequence; block_tables: int32 ``[N, max_blocks]`` (any device).
            positions: optional int ``[3, T]`` M-RoPE positions; default ``context + i`` on all three streams.
            logits: ``"last"`` (last new token of each sequence), ``"all"``, or explicit token indices.
            num_slots, num_blocks: cache sizes, to range-check slots and block tables.
        """
        n = len(query_lens)
        if n == 0 or len(context_lens) != n or len(slots) != n:
            raise ValueError(f"query_lens, context_lens and slots must have one entry per sequence (N >= 1), got "
                             f"{len(query_lens)}, {len(context_lens)}, {len(slots)}")
        if min(query_lens) < 1 or min(context_lens) < 0:
            raise ValueError(f"query_lens must be >= 1 and context_lens >= 0, got {query_lens}, {context_lens}")
        if len(set(slots)) != n or min(slots) < 0 or (num_slots is not None and max(slots) >= num_slots):
            raise ValueError(f"slots must be distinct and in [0, num_slots={num_slots}), got {slots}")
        bt = block_tables.to(device=device, dtype=torch.int32)
        if bt.dim() != 2 or bt.shape[0] != n:
            raise ValueError(f"block_tables must have shape [N={n}, max_blocks], got {list(block_tables.shape)}")
        seq_lens = [c + q for c, q in zip(context_lens, query_lens)]
        bt_host = block_tables.cpu()
        for i, s in enumerate(seq_lens):
            need = (s + block_size - 1) // block_size
            used = bt_host[i, :need]
            if need > bt.shape[1] or (used.numel() and (int(used.min()) < 0 or (
                    num_blocks is not None and int(used.max()) >= num_blocks))):
                raise ValueError(f"block_tables row {i} must hold {need} valid blocks (in [0, num_blocks="
                                 f"{num_blocks})) for {s} tokens of block size {block_size}, got {used.tolist()}")
        num_decodes = 0
        while num_decodes < n and query_lens[num_decodes] == 1 and context_lens[num_decodes] > 0:
            num_decodes += 1
        T = sum(query_lens)
        pos = torch.cat([torch.arange(c, c + q) for c, q in zip(context_lens, query_lens)])   # cache positions
        seq = torch.repeat_interleave(torch.arange(n), torch.tensor(query_lens))
        slot_mapping = bt_host[seq, pos // block_size].long() * block_size + pos % block_size
        if positions is None:
            positions = pos[None].expand(3, T)
        elif tuple(positions.shape) != (3, T):
            raise ValueError(f"positions must have shape [3, T={T}], got {list(positions.shape)}")
        cu = torch.tensor([0] + query_lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        if logits == "last":
            idx = cu[1:].long() - 1
        elif logits == "all":
            idx = None
        else:
            idx = torch.as_tensor(logits, dtype=torch.long)
            if idx.dim() != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= T)):
                raise ValueError(f"logits indices must be a list of token indices in [0, {T}), got {logits}")
        dev = torch.device(device)
        return cls(cu_seqlens=cu.to(dev), seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
                   has_initial_state=torch.tensor(context_lens, device=dev) > 0,
                   slots=torch.tensor(slots, dtype=torch.int32, device=dev), block_tables=bt,
                   positions=positions.to(device=dev, dtype=torch.long), slot_mapping=slot_mapping.to(dev),
                   logits_indices=None if idx is None else idx.to(dev), num_decodes=num_decodes,
                   prefill_cu_seqlens=(cu[num_decodes:] - num_decodes).to(dev), num_tokens=T)
