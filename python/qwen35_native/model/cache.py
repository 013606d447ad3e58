"""Caches and batch metadata of the cached forward (DESIGN.md §4). The engine owns both; the model reads and writes
the caches in place.

- :class:`ModelCache`: per full-attention layer a paged KV cache ``k, v [num_blocks, block_size, Hkv, D]`` (model
  dtype, K after k_norm and RoPE); per GDN layer a conv state ``[num_slots, conv_dim, W-1]`` (model dtype) and a
  recurrent state ``[num_slots, Hv, K, V]`` (float32). Allocate with :meth:`ModelCache.allocate`.
- :class:`ForwardBatch`: N sequences packed along the token axis (prefill chunks and decode steps together). The
  leading sequences with one new token and a cached context form the decode part (``num_decodes``) and run the
  decode ops; list decode steps first to use them. Everything else runs the prefill ops, which are correct for any
  mix (a decode step listed after a prefill chunk is simply a one-token prefill continuing from its cache).
  Speculative decoding verifies drafts with ``decode_width = w > 1``: the leading sequences then each feed w tokens
  (the pending token and w - 1 drafts) through the decode ops, one position at a time, and the GDN state after
  position j < w - 1 is written to the scratch slot ``spec_scratch[i, j]`` (the decode op's ``out_slots``), so that
  the engine can roll a sequence back to the state after its last accepted token (``copy_gdn_states``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import TextConfig
from .gdn_splits import batch_rounds

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
    mtp_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # MTP layer -> (k, v)

    @staticmethod
    def bytes_per_block(cfg: TextConfig, block_size: int, dtype: torch.dtype, mtp_layers: int = 0) -> int:
        per_layer = 2 * block_size * cfg.num_key_value_heads * cfg.head_dim * dtype.itemsize
        return per_layer * (len(cfg.layer_indices("full_attention")) + mtp_layers)

    @staticmethod
    def bytes_per_slot(cfg: TextConfig, dtype: torch.dtype) -> int:
        conv = cfg.conv_dim * (cfg.linear_conv_kernel_dim - 1) * dtype.itemsize
        ssm = cfg.linear_num_value_heads * cfg.linear_key_head_dim * cfg.linear_value_head_dim * 4
        return (conv + ssm) * len(cfg.layer_indices("linear_attention"))

    @classmethod
    def allocate(cls, cfg: TextConfig, num_blocks: int, block_size: int, num_slots: int,
                 device: torch.device | str, dtype: torch.dtype, mtp_layers: int = 0) -> ModelCache:
        """Uninitialised caches (sequences starting from scratch never read stale contents); ``mtp_layers``: KV
        caches of the MTP head's layers too (speculative decoding), paged like the others."""
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
        mtp_kv = {j: (torch.empty(kv_shape, dtype=dtype, device=device), torch.empty(kv_shape, dtype=dtype,
                                                                                 device=device))
                  for j in range(mtp_layers)}
        return cls(kv, conv, ssm, num_blocks, block_size, num_slots, mtp_kv)

    def copy_gdn_states(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """GDN conv and recurrent states of slots ``src`` -> slots ``dst`` (int64 [n] on the cache's device), every
        layer: rolls sequences back to the state a verification step left in a scratch slot."""
        for i in self.conv:
            self.conv[i].index_copy_(0, dst, self.conv[i].index_select(0, src))
            self.ssm[i].index_copy_(0, dst, self.ssm[i].index_select(0, src))


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
    decode_width: int = 1             # host int: tokens per decode sequence (w > 1: speculative verification)
    spec_scratch: torch.Tensor | None = None         # int32 [num_decodes, w - 1] GDN slots after positions < w - 1
    decode_seq_lens: torch.Tensor | None = None      # int32 [num_decodes * w] keys seen by each decode token
    decode_block_tables: torch.Tensor | None = None  # int32 [num_decodes * w, max_blocks] (rows repeated)
    gdn_rounds: list | None = None    # GDN state snapshots inside prefill chunks: the prefill op's rounds (gdn_splits)

    @property
    def num_decode_tokens(self) -> int:
        return self.num_decodes * self.decode_width

    def decode_attention_lens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(seq_lens, block_tables) of the decode tokens as single-token sequences: token j of a verified sequence
        with context c sees c + j + 1 keys (its own and the drafts before it), as a decode step at that length."""
        if self.decode_width == 1:
            return self.seq_lens[:self.num_decodes], self.block_tables[:self.num_decodes]
        return self.decode_seq_lens, self.decode_block_tables

    @classmethod
    def build(cls, query_lens: list[int], context_lens: list[int], slots: list[int], block_tables: torch.Tensor,
              block_size: int, device: torch.device | str, positions: torch.Tensor | None = None,
              logits: str | list[int] = "last", num_slots: int | None = None,
              num_blocks: int | None = None, decode_width: int = 1,
              spec_scratch: list[list[int]] | None = None,
              gdn_snapshots: list[tuple[int, int, int]] | None = None) -> ForwardBatch:
        """Builds and validates the metadata from host lists.

        Args:
            query_lens: new tokens of each sequence (>= 1); context_lens: tokens already cached (>= 0).
            slots: distinct GDN slot per sequence; block_tables: int32 ``[N, max_blocks]`` (any device).
            positions: optional int ``[3, T]`` M-RoPE positions; default ``context + i`` on all three streams.
            logits: ``"last"`` (last new token of each sequence), ``"all"``, or explicit token indices.
            num_slots, num_blocks: cache sizes, to range-check slots and block tables.
            decode_width: w > 1 verifies drafts: the leading ``len(spec_scratch)`` sequences are the decode part,
                each with ``query_lens == w``, a context, and w - 1 scratch GDN slots (``spec_scratch[i]``, distinct
                from every sequence's slot).
            gdn_snapshots: ``(sequence, offset, slot)``: the GDN states of a prefill sequence after ``offset`` of
                its new tokens, copied into the free GDN slot ``slot`` (gdn_splits.py).
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
        if not isinstance(decode_width, int) or decode_width < 1:
            raise ValueError(f"decode_width must be an int >= 1, got {decode_width!r}")
        num_decodes = _count_decodes(query_lens, context_lens, decode_width, spec_scratch)
        scratch = _check_scratch(spec_scratch, decode_width, num_decodes, slots, num_slots)
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
        nd_tokens = num_decodes * decode_width
        extra = {}
        if gdn_snapshots:
            extra["gdn_rounds"] = batch_rounds(gdn_snapshots, query_lens, context_lens, slots, num_decodes, num_slots,
                                               dev)
        if decode_width > 1:
            lens = [c + j + 1 for c in context_lens[:num_decodes] for j in range(decode_width)]
            extra.update(spec_scratch=scratch.to(dev),
                         decode_seq_lens=torch.tensor(lens, dtype=torch.int32, device=dev),
                         decode_block_tables=bt[:num_decodes].repeat_interleave(decode_width, dim=0))
        return cls(cu_seqlens=cu.to(dev), seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
                   has_initial_state=torch.tensor(context_lens, device=dev) > 0,
                   slots=torch.tensor(slots, dtype=torch.int32, device=dev), block_tables=bt,
                   positions=positions.to(device=dev, dtype=torch.long), slot_mapping=slot_mapping.to(dev),
                   logits_indices=None if idx is None else idx.to(dev), num_decodes=num_decodes,
                   prefill_cu_seqlens=(cu[num_decodes:] - nd_tokens).to(dev), num_tokens=T,
                   decode_width=decode_width, **extra)


def _count_decodes(query_lens: list[int], context_lens: list[int], width: int, spec_scratch) -> int:
    """Leading sequences that run the decode ops: one-token steps with a context, or with ``width`` > 1 exactly the
    ``len(spec_scratch)`` verifying ones (a prefill chunk of ``width`` tokens after them is no verification)."""
    n = len(query_lens)
    if width == 1:
        count = 0
        while count < n and query_lens[count] == 1 and context_lens[count] > 0:
            count += 1
        return count
    count = len(spec_scratch or [])
    if count > n or any(q != width or c == 0 for q, c in zip(query_lens[:count], context_lens[:count])):
        raise ValueError(f"the {count} sequences verifying drafts (one row of spec_scratch each) must lead, each "
                         f"with query_len decode_width={width} and a context, got query_lens {query_lens[:count]} "
                         f"and context_lens {context_lens[:count]}")
    return count


def _check_scratch(spec_scratch, width: int, num_decodes: int, slots: list[int],
                   num_slots: int | None) -> torch.Tensor | None:
    if width == 1:
        if spec_scratch is not None:
            raise ValueError("spec_scratch is only for decode_width > 1")
        return None
    rows = [list(r) for r in (spec_scratch or [])]
    if len(rows) != num_decodes or any(len(r) != width - 1 for r in rows):
        raise ValueError(f"spec_scratch must hold decode_width - 1 = {width - 1} slots for each of the "
                         f"{num_decodes} sequences verifying drafts, got {rows}")
    flat = [s for r in rows for s in r]
    if len(set(flat)) != len(flat) or set(flat) & set(slots) or (flat and (min(flat) < 0 or (
            num_slots is not None and max(flat) >= num_slots))):
        raise ValueError(f"spec_scratch slots must be distinct, unused by the sequences and in [0, num_slots="
                         f"{num_slots}), got {rows}")
    return torch.tensor(rows, dtype=torch.int32).reshape(num_decodes, width - 1)
