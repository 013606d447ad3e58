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

With prefix caching (``prefix_cache.py``) a waiting sequence is admitted after its longest cached prefix (shared
blocks, its GDN state restored from a snapshot), the prompt's save points a prefill chunk reaches get a snapshot of
the state there (taken inside the step, model/gdn_splits.py, or after it when the chunk ends there), and ``commit``
registers what a step saved. Cached blocks nobody uses count as free. The other
samples of a request (n > 1) wait while its first sample computes their common prompt, and then resume from it;
later requests may be admitted past them meanwhile.

Tests: tests/engine/test_scheduler.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .prefix_cache import BlockPool, FreeList, PrefixCache
from .sequence import Sequence, SequenceStatus

__all__ = ["FreeList", "ScheduledSequence", "Scheduler", "SchedulerOutput"]


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
    # prefix caching: (snapshot, slot) copied before the forward for sequences resuming a cached prefix, and
    # (sequence, save point, snapshot): the sequence's state at a save point its chunk reaches (inside the step or
    # at its end)
    state_restores: list[tuple[int, int]] = field(default_factory=list)
    state_saves: list[tuple[Sequence, int, int]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new for s in self.scheduled)


class Scheduler:
    def __init__(self, num_blocks: int, block_size: int, max_num_seqs: int, max_num_batched_tokens: int,
                 lookahead: int = 0, max_model_len: int | None = None, prefix_states: int = 0):
        """``prefix_states``: GDN state snapshots for prefix caching (``prefix_cache.py``); 0 turns it off."""
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(f"qwen35_native.LLM: max_num_batched_tokens must be >= max_num_seqs={max_num_seqs} (every "
                             f"running sequence decodes one token per step), got {max_num_batched_tokens}")
        self.block_size = block_size
        self.lookahead, self.max_model_len = lookahead, max_model_len
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.blocks = BlockPool(num_blocks)
        self.prefix = PrefixCache(self.blocks, block_size, prefix_states) if prefix_states else None
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
        used = 0  # tokens of ``scheduled`` (recounted when a preemption drops some)
        for seq in decodes + prefills:
            budget = self.max_num_batched_tokens - used
            if seq.status is not SequenceStatus.RUNNING or budget == 0:
                continue  # preempted earlier in this loop
            num_new = min(seq.num_pending, budget)
            if seq.num_pending == 1 and seq.draft_ids:
                if budget > len(seq.draft_ids):
                    num_new += len(seq.draft_ids)
                else:
                    seq.draft_ids = []
            num_preempted = len(preempted)
            if self._reserve(seq, seq.num_computed + num_new, scheduled, preempted):
                scheduled.append(ScheduledSequence(seq, num_new))
            if len(preempted) != num_preempted:
                used = sum(s.num_new for s in scheduled)
            elif scheduled and scheduled[-1].seq is seq:
                used += num_new
        out = SchedulerOutput(scheduled, [], preempted)
        if not preempted:
            self._admit(out)
        # stable: verification steps, then decode steps, then prefill chunks, priority order kept
        scheduled.sort(key=lambda s: 0 if s.is_verify else 1 if s.is_decode else 2)
        if self.prefix is not None:
            self._plan_saves(out)
        return out

    def _admit(self, out: SchedulerOutput) -> None:
        """Admits waiting sequences in order while the budget, a slot and their first chunk's blocks allow; with
        prefix caching a sequence starts after its longest cached prefix, and one whose sibling sample is computing
        their common prompt is passed over until that sibling saved it."""
        budget, i = self.max_num_batched_tokens - out.num_tokens, 0
        while i < len(self.waiting) and budget > 0 and self.slots.num_free:
            seq = self.waiting[i]
            if self.prefix is not None and self._sibling_computes_prompt(seq):
                i += 1
                continue
            hit = self.prefix.match(seq) if self.prefix is not None and not seq.scores_prompt else None
            start, shared = (hit.num_tokens, hit.blocks) if hit is not None else (0, [])
            num_new = min(seq.num_tokens - start, budget)
            need = self.blocks_for(self.reserved_tokens(start + num_new)) - len(shared)
            if need + sum(self.blocks.is_unused(b) for b in shared) > self.blocks.num_free:
                break  # shared blocks nobody uses are counted free until this sequence takes them
            del self.waiting[i]
            if self.prefix is not None:
                self.prefix.use(seq, hit)
            seq.slot = self.slots.take(1)[0]
            seq.blocks = list(shared) + self.blocks.take(need)
            seq.num_computed = start
            if hit is not None:
                out.state_restores.append((hit.state, seq.slot))
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.admitted.append(seq)
            out.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new

    def _sibling_computes_prompt(self, seq: Sequence) -> bool:
        """True while another sample of ``seq``'s request prefills the prompt up to a save point not yet saved:
        ``seq`` then resumes there instead of computing the same tokens beside it (n > 1)."""
        points = self.prefix.save_points(seq) if seq.request is not None else []
        return bool(points) and any(r.request is seq.request and r.num_computed < points[-1] for r in self.running)

    def _plan_saves(self, out: SchedulerOutput) -> None:
        for s in out.scheduled:
            start, end = s.seq.num_computed, s.seq.num_computed + s.num_new
            if s.is_verify or start + 1 >= len(s.seq.prompt_ids):  # save points lie inside the prompt
                continue
            for point in self.prefix.save_points(s.seq):
                if start < point <= end and point < len(s.seq.prompt_ids):
                    state = self.prefix.reserve_state()
                    if state is not None:
                        out.state_saves.append((s.seq, point, state))

    def commit(self, out: SchedulerOutput) -> None:
        """After the step ran (the sequences' ``num_computed`` advanced): registers the saved prefixes."""
        for seq, point, state in out.state_saves:
            self.prefix.commit(seq, point, state)

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
