"""Prefix caching: a prompt that starts like an earlier one reuses its cached KV blocks and GDN state.

Attention layers need the K/V of every earlier position; a KV block is shared by reference once its tokens are
known (vLLM's automatic prefix caching). The Gated DeltaNet layers carry their whole past in one state per
sequence, so a prefix can only be resumed where that state was kept: at a block boundary at which a snapshot of
the sequence's GDN states (conv and recurrent, every layer) was copied into one of ``num_states`` extra GDN slots.
Each prompt keeps one at its *save point* ``P``, the last block boundary before its last token, and one at its
*branch point*, where it leaves the blocks earlier prompts cached (the end of a shared system prompt, rounded down
to a block). A prefill chunk that reaches such a point takes the snapshot inside its step (the GDN layers run their
prefill op in rounds cut there and copy the state, model/gdn_splits.py; at the chunk's end the runner copies it
after the forward), and then the blocks before the point and the snapshot are registered under the prefix's hash.
A later prompt that shares those blocks resumes there: its first tokens are neither computed nor stored again
(vLLM's "align" mode for hybrid models resumes the same way; it ends the chunk at the point instead of cutting
only the GDN op).
Uses: a repeated prompt, the next turn of a chat (its prompt extends the previous one), a system prompt shared
from the third prompt on (the first caches blocks, the second the state where it branches off), best-of and
evaluation runs, and a preempted sequence recomputing its own prompt.

Exactness. Block ``j``'s hash chains the hash of block ``j - 1``, the block's tokens and the token after the block:
the MTP head's row at a block's last position embeds that next token, and its K/V live in the same block. Every
position whose K/V or state is reused therefore saw the same tokens at the same positions, so a resumed sequence
computes what it would have computed from scratch with its prefill chunked at that point (the same values up to
floating-point rounding, as for any chunked prefill). A multimodal prompt caches only blocks before its first
vision token (text positions there are the plain 0, 1, 2, ...).

Memory. Blocks whose last user finished stay cached until a new block is needed (least recently released first:
they are counted as free). Snapshots are evicted least recently used first when a new save point needs a slot.
Hashes are 128-bit BLAKE2b digests.

Tests: tests/engine/test_prefix_cache.py.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass


class FreeList:
    """Free indices of a fixed pool (KV blocks or GDN slots); most recently freed first."""

    def __init__(self, size: int):
        self.size = size
        self._free = list(range(size - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def take(self, count: int) -> list[int]:
        if count > len(self._free):
            raise RuntimeError(f"qwen35_native: internal error: {count} indices requested, {len(self._free)} free")
        taken = self._free[len(self._free) - count:][::-1]
        del self._free[len(self._free) - count:]
        return taken

    def free_indices(self) -> list[int]:
        return list(self._free)

    def give(self, indices: list[int]) -> None:
        self._free.extend(reversed(indices))


class BlockPool(FreeList):
    """KV blocks with reference counts. A block registered under a prefix hash stays cached when its last user
    lets go: it counts as free, and is reused (its hash dropped) only when no never-cached block is left, least
    recently released first. Without registrations it behaves exactly as a :class:`FreeList`."""

    def __init__(self, size: int):
        super().__init__(size)
        self._refs = [0] * size
        self._hash_of: dict[int, bytes] = {}
        self._block_of: dict[bytes, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, unused; least recently released first

    @property
    def num_free(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_cached(self) -> int:
        return len(self._hash_of)

    def take(self, count: int) -> list[int]:
        if count > self.num_free:
            raise RuntimeError(f"qwen35_native: internal error: {count} blocks requested, {self.num_free} free")
        taken = super().take(min(count, len(self._free)))
        while len(taken) < count:
            block, _ = self._evictable.popitem(last=False)
            del self._block_of[self._hash_of.pop(block)]
            taken.append(block)
        for block in taken:
            self._refs[block] = 1
        return taken

    def give(self, indices: list[int]) -> None:
        plain = []
        for block in indices:
            self._refs[block] -= 1
            if self._refs[block] < 0:
                raise RuntimeError(f"qwen35_native: internal error: KV block {block} released twice")
            if self._refs[block] == 0:
                if block in self._hash_of:
                    self._evictable[block] = None
                else:
                    plain.append(block)
        super().give(plain)

    def lookup(self, block_hash: bytes) -> int | None:
        return self._block_of.get(block_hash)

    def is_unused(self, block: int) -> bool:
        return self._refs[block] == 0

    def acquire(self, block: int) -> None:
        """One more user of a cached block (a hit)."""
        if self._refs[block] == 0:
            del self._evictable[block]
        self._refs[block] += 1

    def register(self, block: int, block_hash: bytes) -> None:
        """Marks a computed, full block as holding the prefix ``block_hash`` (no-op when either is known)."""
        if block_hash not in self._block_of and block not in self._hash_of:
            self._block_of[block_hash] = block
            self._hash_of[block] = block_hash


def prefix_block_hashes(token_ids: list[int], block_size: int, limit: int | None = None) -> list[bytes]:
    """Chained hashes of the full blocks of ``token_ids[:limit]`` whose next token is also in ``[:limit]``."""
    n = len(token_ids) if limit is None else min(limit, len(token_ids))
    hashes, parent = [], b""
    for end in range(block_size, n, block_size):  # end < n: the token after the block is known
        h = hashlib.blake2b(parent, digest_size=16)
        h.update(array("q", token_ids[end - block_size:end + 1]).tobytes())
        parent = h.digest()
        hashes.append(parent)
    return hashes


@dataclass
class PrefixStats:
    """Counts over the engine's lifetime: prompt tokens of admitted sequences, and those found cached."""

    num_queried_tokens: int = 0
    num_hit_tokens: int = 0

    @property
    def hit_rate(self) -> float | None:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else None


@dataclass
class PrefixHit:
    blocks: list[int]  # cached KV blocks of the first ``num_tokens`` tokens
    num_tokens: int
    state: int  # the GDN snapshot at ``num_tokens``


class PrefixCache:
    """The scheduler's view: which prefix a waiting sequence can resume, where a prompt saves its state, and the
    snapshots (indices ``0 .. num_states - 1``; the runner maps them to GDN slots)."""

    def __init__(self, pool: BlockPool, block_size: int, num_states: int):
        if num_states < 1:
            raise ValueError(f"qwen35_native: prefix caching needs at least one GDN state snapshot, got {num_states}")
        self.pool, self.block_size, self.num_states = pool, block_size, num_states
        self._states: OrderedDict[bytes, int] = OrderedDict()  # prefix hash -> snapshot; least recently used first
        self._free_states = list(range(num_states - 1, -1, -1))
        self.stats = PrefixStats()

    def hashes(self, seq) -> list[bytes]:
        if seq.prefix_hashes is None:
            limit = None
            if seq.multimodal is not None and seq.multimodal.vision_index.numel():
                limit = int(seq.multimodal.vision_index.min())
            seq.prefix_hashes = prefix_block_hashes(seq.prompt_ids, self.block_size, limit)
        return seq.prefix_hashes

    def match(self, seq) -> PrefixHit | None:
        """The longest cached prefix of ``seq``'s prompt that ends at a snapshot."""
        blocks, best = [], None
        for j, h in enumerate(self.hashes(seq)):
            block = self.pool.lookup(h)
            if block is None:
                break
            blocks.append(block)
            state = self._states.get(h)
            if state is not None:
                best = PrefixHit(list(blocks), (j + 1) * self.block_size, state)
        return best

    def use(self, seq, hit: PrefixHit | None) -> None:
        """Counts an admission; a hit's blocks gain a user and its snapshot becomes the most recently used."""
        self.stats.num_queried_tokens += len(seq.prompt_ids)
        if hit is None:
            return
        self.stats.num_hit_tokens += hit.num_tokens
        for block in hit.blocks:
            self.pool.acquire(block)
        self._states.move_to_end(self.hashes(seq)[hit.num_tokens // self.block_size - 1])

    def save_points(self, seq) -> list[int]:
        """Block boundaries at which ``seq`` saves its state, ascending, leaving out those already saved: where its
        prompt leaves the cached blocks of earlier prompts (its *branch point*: after a shared system prompt, say,
        so that the next prompt sharing it resumes there) and its save point (the last block boundary before the
        prompt's last token)."""
        hashes = self.hashes(seq)
        branch = 0
        while branch < len(hashes) and self.pool.lookup(hashes[branch]) is not None:
            branch += 1
        return [n * self.block_size for n in sorted({branch, len(hashes)} - {0}) if hashes[n - 1] not in self._states]

    def reserve_state(self) -> int | None:
        """A snapshot for a new save point: a free one, else the least recently used one (dropped)."""
        if self._free_states:
            return self._free_states.pop()
        if self._states:
            return self._states.popitem(last=False)[1]
        return None  # every snapshot is being written this step

    def commit(self, seq, point: int, state: int) -> None:
        """After the step that computed ``seq`` up to ``point`` and copied its state into ``state``."""
        hashes = self.hashes(seq)[:point // self.block_size]
        for block, h in zip(seq.blocks, hashes):
            self.pool.register(block, h)
        if hashes[-1] in self._states:  # another sequence saved the same prefix in the same step
            self._free_states.append(state)
        else:
            self._states[hashes[-1]] = state
