"""Continuous batching: which sequences run in the next step, and how many of their tokens.

Each step has a token budget (``max_num_batched_tokens``, at least ``max_num_seqs``):
1. running sequences in the decode phase (one pending token) are scheduled first, oldest admission first;
2. running sequences with a partly prefilled prompt get the next chunk, ``min(pending, budget left)`` tokens;
3. waiting sequences are admitted in arrival order while the budget, a GDN state slot (at most ``max_num_seqs``
   running) and the KV blocks of their first chunk are available; a prompt longer than the budget is prefilled in
   chunks over the following steps.
The forward pass sees the scheduled sequences with the decode steps first (the model's decode ops take them).
With speculative decoding, a sequence in the decode phase that holds drafts feeds them too (1 + k tokens, drafts
dropped when the budget has no room for them); those verification steps come first of all. With k > 1 drafts the
MTP head drafts k - 1 positions past what a step feeds, so every reservation holds ``lookahead = k - 1`` more
tokens (at most ``max_model_len``).

KV blocks are allocated as tokens enter the cache and freed as soon as a sequence finishes. When a running sequence
needs a block and none is free, the most recently admitted running sequence is preempted: its blocks and slot are
freed and it goes back to the front of the waiting queue, to be recomputed (prompt + output so far) when admitted
again. Its tokens do not change: sampling is counter-based on (seed, step). A sequence alone always fits, because
``max_model_len`` is capped by the cache's capacity, so preemption always makes progress.

Tests: tests/engine/test_scheduler.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .sequence import Sequence, SequenceStatus


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


@dataclass
class ScheduledSequence:
    seq: Sequence
    num_new: int  # tokens fed this step: seq.tokens(seq.num_computed, seq.num_computed + num_new)

    @property
    def is_decode(self) -> bool:
        return self.num_new == 1 and self.seq.num_computed > 0

    @property
    def is_verify(self) -> bool:
        """A decode step that also feeds the sequence's drafts (speculative decoding)."""
        return self.num_new > 1 and self.seq.num_pending == 1 and self.seq.num_computed > 0

    @property
    def samples(self) -> bool:
        """True when this step reaches the sequence's last token, so its logits give the next token."""
        return self.seq.num_computed + self.num_new >= self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence]  # decode steps first
    admitted: list[Sequence]  # newly given a slot this step (the runner resets their per-slot state)
    preempted: list[Sequence]

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new for s in self.scheduled)


class Scheduler:
    def __init__(self, num_blocks: int, block_size: int, max_num_seqs: int, max_num_batched_tokens: int,
                 lookahead: int = 0, max_model_len: int | None = None):
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(f"qwen35_native.LLM: max_num_batched_tokens must be >= max_num_seqs={max_num_seqs} (every "
                             f"running sequence decodes one token per step), got {max_num_batched_tokens}")
        self.block_size = block_size
        self.lookahead, self.max_model_len = lookahead, max_model_len
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.blocks = FreeList(num_blocks)
        self.slots = FreeList(max_num_seqs)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: the last one is preempted first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def blocks_for(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def reserved_tokens(self, num_tokens: int) -> int:
        """Tokens to hold blocks for when a step brings a sequence to ``num_tokens`` (plus the draft lookahead)."""
        if not self.lookahead:
            return num_tokens
        total = num_tokens + self.lookahead
        return total if self.max_model_len is None else max(num_tokens, min(total, self.max_model_len))

    def schedule(self) -> SchedulerOutput:
        scheduled: list[ScheduledSequence] = []
        preempted: list[Sequence] = []
        decodes = [s for s in self.running if s.num_pending == 1]
        prefills = [s for s in self.running if s.num_pending > 1]
        for seq in decodes + prefills:
            budget = self.max_num_batched_tokens - sum(s.num_new for s in scheduled)  # preemption may refund
            if seq.status is not SequenceStatus.RUNNING or budget == 0:
                continue  # preempted earlier in this loop
            num_new = min(seq.num_pending, budget)
            if seq.num_pending == 1 and seq.draft_ids:
                if budget > len(seq.draft_ids):
                    num_new += len(seq.draft_ids)
                else:
                    seq.draft_ids = []
            if self._reserve(seq, seq.num_computed + num_new, scheduled, preempted):
                scheduled.append(ScheduledSequence(seq, num_new))
        budget = self.max_num_batched_tokens - sum(s.num_new for s in scheduled)
        admitted = []
        while self.waiting and budget > 0 and self.slots.num_free and not preempted:
            seq = self.waiting[0]
            num_new = min(seq.num_pending, budget)
            need = self.blocks_for(self.reserved_tokens(seq.num_computed + num_new))
            if need > self.blocks.num_free:
                break
            self.waiting.popleft()
            seq.slot = self.slots.take(1)[0]
            seq.blocks = self.blocks.take(need)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
            scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
        # stable: verification steps, then decode steps, then prefill chunks, priority order kept
        scheduled.sort(key=lambda s: 0 if s.is_verify else 1 if s.is_decode else 2)
        return SchedulerOutput(scheduled, admitted, preempted)

    def _reserve(self, seq: Sequence, num_tokens: int, scheduled: list[ScheduledSequence],
                 preempted: list[Sequence]) -> bool:
        """Gives ``seq`` the blocks to hold ``num_tokens``, preempting from the back of the running list when
        needed. False when ``seq`` itself had to be preempted."""
        need = self.blocks_for(self.reserved_tokens(num_tokens)) - len(seq.blocks)
        while need > self.blocks.num_free:
            victim = self.running[-1]
            self.preempt(victim)
            preempted.append(victim)
            scheduled[:] = [s for s in scheduled if s.seq is not victim]
            if victim is seq:
                return False
        if need > 0:
            seq.blocks.extend(self.blocks.take(need))
        return True

    def preempt(self, seq: Sequence) -> None:
        self._release(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_computed = 0
        seq.draft_ids = []
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        """Frees a finished sequence's slot and blocks at once."""
        if seq.status is SequenceStatus.RUNNING:
            self._release(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED

    def _release(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.give(seq.blocks)
        self.slots.give([seq.slot])
        seq.blocks, seq.slot = [], None
