"""One sequence (one sample of one request) as the scheduler and the engine loop see it.

A sequence's tokens are its prompt followed by its output so far; ``num_computed`` of them are in the cache. Each
step feeds ``tokens[num_computed : num_computed + num_new]``; when that reaches the last token, the step samples
the next one. A preempted sequence loses its cache (``num_computed = 0``) and is recomputed from its prompt and
output when it is admitted again (its sampler state, the counter-based seed and step, carries over).

Tests: tests/engine/test_scheduler.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .outputs import TokenLogprob
from .sampling_params import SamplingParams
from .stopping import StopChecker


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request_id: int
    sample_index: int
    prompt_ids: list[int]
    params: SamplingParams  # resolved, n == 1, seed assigned
    checker: StopChecker  # output tokens, text and finish reason
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed: int = 0  # tokens whose K/V and GDN state are in the cache
    slot: int | None = None  # GDN state slot while running
    blocks: list[int] = field(default_factory=list)  # KV-cache blocks while running
    position_offset: int = 0  # M-RoPE position delta after vision tokens (0 for text)
    multimodal: Any = None  # the prompt's MultimodalPrompt (positions, vision features) when it has images/videos
    logprobs: list[TokenLogprob] | None = None
    num_preemptions: int = 0
    draft_ids: list[int] = field(default_factory=list)  # speculative decoding: drafts for the next step
    prefix_hashes: list[bytes] | None = None  # prefix caching: hashes of the prompt's blocks (prefix_cache.py)
    prompt_logprobs: list[TokenLogprob | None] | None = None  # per prompt position, when asked (prompt_logprobs.py)
    request: Any = field(default=None, repr=False)  # the engine's Request this sample belongs to
    matcher: Any = field(default=None, repr=False)  # structured outputs: its grammar matcher (structured.py)
    # structured outputs of a reply that starts inside a think block: the token that closes it (</think>); until
    # it is sampled the grammar waits (the reasoning is free), then it applies and this becomes None
    grammar_after: int | None = None

    @property
    def grammar_active(self) -> bool:
        return self.matcher is not None and self.grammar_after is None

    @property
    def output_ids(self) -> list[int]:
        return self.checker.token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.checker.token_ids)

    @property
    def num_pending(self) -> int:
        """Tokens not yet in the cache (1 for a sequence in the decode phase)."""
        return self.num_tokens - self.num_computed

    @property
    def scores_prompt(self) -> bool:
        """True while prompt positions wait for their logprobs (``prompt_logprobs``)."""
        return self.prompt_logprobs is not None and None in self.prompt_logprobs[1:]

    @property
    def needs_penalties(self) -> bool:
        p = self.params
        return p.presence_penalty != 0.0 or p.frequency_penalty != 0.0 or p.repetition_penalty != 1.0

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def tokens(self, start: int, stop: int) -> list[int]:
        """``(prompt + output)[start:stop]``."""
        n = len(self.prompt_ids)
        if stop <= n:
            return self.prompt_ids[start:stop]
        return self.prompt_ids[start:] + self.checker.token_ids[max(0, start - n):stop - n]
