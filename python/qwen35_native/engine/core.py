"""The engine loop: requests in, one scheduled step at a time, per-sequence updates out.

``add_request`` validates a prompt (token ids) and its parameters, resolves unset fields from the checkpoint's
generation config, assigns each of the ``n`` samples its seed (``seed + i``, or drawn: from the engine's seeded
generator when the engine has a seed) and queues the samples as sequences. ``step`` schedules, runs the model
runner, feeds each sampled token to the sequence's :class:`StopChecker` (stop ids, stop strings, length) and
frees finished sequences at once. Requests may be added between any two steps.

Tests: tests/engine/test_generate.py, test_scheduler.py.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Any

from .model_runner import ModelRunner, StepPlan
from .outputs import CompletionOutput, RequestMetrics, RequestOutput, TokenLogprob
from .prompt_logprobs import PromptScoring
from .sampling import HostSamplerOutput, draw_seed
from .sampling_params import SamplingParams
from .scheduler import Scheduler, SchedulerOutput
from .sequence import Sequence
from .spec_decode import SpecStats, SpecStepOutput
from .stopping import StopChecker
from .structured import GrammarBackend


@dataclass(eq=False)
class Request:
    request_id: int
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams  # resolved; ``n`` samples
    seqs: list[Sequence]
    metrics: RequestMetrics
    updates: deque = field(default_factory=deque)  # SequenceUpdates not yet consumed by a stream

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.seqs)


@dataclass
class SequenceUpdate:
    """What one step did to one sequence: the token it sampled and the text that completed."""

    request: Request
    seq: Sequence
    token_ids: list[int]
    text: str | None  # None without a tokenizer
    logprobs: list[TokenLogprob] | None
    finished: bool


class LLMEngine:
    def __init__(self, runner: ModelRunner, scheduler: Scheduler, *, max_model_len: int, tokenizer=None,
                 generation_config: dict[str, Any] | None = None, eos_ids: SequenceABC[int] = (),
                 seed: int | None = None):
        self.runner, self.scheduler = runner, scheduler
        self.speculative = getattr(runner, "speculative", None)
        self.spec_stats = SpecStats()  # drafts proposed and accepted (speculative decoding)
        self.max_model_len = max_model_len
        self.tokenizer = tokenizer
        self.generation_config = generation_config or {}
        self.eos_ids = list(eos_ids)
        self.vocab_size = runner.vocab_size
        self._rng = random.Random(seed) if seed is not None else None
        self._request_ids = itertools.count()
        self._seq_ids = itertools.count()
        self.num_steps = 0
        self.grammars: GrammarBackend | None = None  # structured outputs: created with the first such request

    @property
    def prefix_stats(self):
        """Prompt tokens admitted and found cached (a ``PrefixStats``), or None when prefix caching is off."""
        prefix = getattr(self.scheduler, "prefix", None)
        return prefix.stats if prefix is not None else None

    def _draw_seed(self) -> int:
        return self._rng.getrandbits(63) if self._rng is not None else draw_seed()

    def check_prompt(self, prompt_ids: Any) -> list[int]:
        if isinstance(prompt_ids, (str, bytes)) or not isinstance(prompt_ids, SequenceABC):
            raise TypeError(f"qwen35_native.LLM: a prompt must be a string or a list of token ids, got "
                            f"{type(prompt_ids).__name__}")
        ids = list(prompt_ids)
        if not ids:
            raise ValueError("qwen35_native.LLM: prompt is empty (need at least one token)")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise TypeError("qwen35_native.LLM: token-id prompts must be lists of ints")
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise ValueError(f"qwen35_native.LLM: prompt token ids must be in [0, vocab_size={self.vocab_size}), got "
                             f"min {min(ids)} max {max(ids)}")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"qwen35_native.LLM: prompt has {len(ids)} tokens but the context holds max_model_len="
                             f"{self.max_model_len} tokens (prompt plus at least one generated token)")
        return ids

    def resolve(self, params: SamplingParams | None) -> SamplingParams:
        if params is None:
            params = SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"qwen35_native.LLM: sampling_params must be SamplingParams, got {type(params).__name__}")
        return params if params.is_resolved else params.resolved(self.generation_config)

    def add_request(self, prompt_ids: SequenceABC[int], params: SamplingParams | None = None,
                    prompt: str | None = None, multimodal=None, grammar_after: int | None = None) -> Request:
        """Queues one prompt (token ids); returns the :class:`Request` whose sequences the steps advance.
        ``multimodal``: the prompt's ``MultimodalPrompt`` (``model.prepare_multimodal``) when it has images or
        videos: its M-RoPE positions, ``rope_delta`` and vision features go with every sample. ``grammar_after``:
        with ``structured_outputs``, a token id (``</think>``) before which the grammar does not apply: a chat
        reply that starts inside a think block reasons freely and is constrained from the token after it (vLLM's
        structured outputs with a reasoning parser)."""
        ids = self.check_prompt(prompt_ids)
        if multimodal is not None and multimodal.input_ids.tolist() != ids:
            raise ValueError("qwen35_native.LLM: the multimodal prompt was prepared for other token ids")
        params = self.resolve(params)
        self._check_token_edits(params)
        spec = params.structured_outputs
        if spec is not None:
            self._grammar_backend().compile(spec)  # a bad schema, regex or grammar fails before anything is queued
        room = self.max_model_len - len(ids)
        seqs = []
        request_id = next(self._request_ids)
        for i in range(params.n):
            p = params.for_sample(i, default_seed=None if params.seed is not None else self._draw_seed())
            checker = StopChecker(p, self.eos_ids, self.tokenizer, max_new_tokens=room)
            seqs.append(Sequence(next(self._seq_ids), request_id, i, ids, p, checker,
                                 logprobs=[] if p.logprobs is not None else None, multimodal=multimodal,
                                 position_offset=0 if multimodal is None else multimodal.rope_delta,
                                 prompt_logprobs=None if p.prompt_logprobs is None else [None] * len(ids),
                                 matcher=None if spec is None else self.grammars.matcher(spec),
                                 grammar_after=None if spec is None else grammar_after))
        request = Request(request_id, prompt, ids, params, seqs, RequestMetrics(time.perf_counter()))
        for seq in seqs:
            seq.request = request
            self.scheduler.add(seq)
        return request

    def _grammar_backend(self) -> GrammarBackend:
        if self.grammars is None:
            if self.tokenizer is None:
                raise ValueError("qwen35_native.SamplingParams: structured_outputs needs the checkpoint's tokenizer "
                                 "(tokenizer.json): grammars are over the tokens' text")
            self.grammars = GrammarBackend(self.tokenizer, self.vocab_size, self.eos_ids)
        return self.grammars

    def _check_token_edits(self, params: SamplingParams) -> None:
        for name, ids in (("logit_bias", params.logit_bias or ()),
                          ("allowed_token_ids", params.allowed_token_ids or ())):
            bad = sorted(i for i in ids if i >= self.vocab_size)
            if bad:
                raise ValueError(f"qwen35_native.SamplingParams: {name} token ids must be in [0, vocab_size="
                                 f"{self.vocab_size}), got {bad[:8]}")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def abort(self, request: Request) -> None:
        """Stops a request's unfinished sequences and frees their cache."""
        for seq in request.seqs:
            if not seq.finished:
                self.scheduler.finish(seq)

    # ------------------------------------------------------------------------------------------------------------
    def step(self) -> list[SequenceUpdate]:
        out = self.scheduler.schedule()
        if not out.scheduled:
            if self.scheduler.has_unfinished():
                raise RuntimeError("qwen35_native: internal error: sequences wait but none could be scheduled")
            return []
        return self.run_scheduled(out)

    def run_scheduled(self, out: SchedulerOutput) -> list[SequenceUpdate]:
        """Runs one schedule (``scheduler.schedule()``) and feeds the sampled tokens to the sequences."""
        plan = self.plan(out)
        if plan.is_decode_only or plan.num_verify == len(plan.query_lens):  # CUDA graphs pad with free slots
            plan.free_slots = self.scheduler.slots.free_indices()
        result = self.runner.execute(plan)
        self.num_steps += 1
        if plan.prompt_scoring:
            results = self.runner.take_prompt_logprobs()
            if len(results) != len(plan.prompt_scoring):
                raise RuntimeError("qwen35_native: internal error: the step did not score the prompt positions it "
                                   "was asked to (prompt_logprobs)")
            for s, scored in zip(plan.prompt_scoring, results):
                seq = out.scheduled[s.row].seq
                seq.prompt_logprobs[s.first + 1:s.first + 1 + len(scored)] = scored
        if isinstance(result, SpecStepOutput):
            # verifying sequences lead the plan and all sample: their sample rows are 0 .. num_verify - 1
            sampled, emitted, drafts, accepted = result.sampled, result.rows, result.drafts, result.accepted
            self.spec_stats.num_verify_steps += bool(plan.num_verify)
            self.spec_stats.num_drafts += sum(len(d) for d in plan.drafts)
            self.spec_stats.num_accepted += sum(accepted[:plan.num_verify])
        else:
            sampled, drafts, accepted = result, None, None
            emitted = None if sampled is None else [[k] for k in range(len(plan.sample_rows))]
        for i, s in enumerate(out.scheduled):  # a verifying sequence keeps its pending token and accepted drafts
            s.seq.num_computed += s.num_new if i >= plan.num_verify else accepted[i] + 1
        if out.state_saves:
            self.scheduler.commit(out)
        return [] if sampled is None else self._process(out, plan, sampled, emitted, drafts)

    def plan(self, out: SchedulerOutput) -> StepPlan:
        plan = StepPlan([], [], [], [], [], [], [], [])
        offsets, multimodal, rules = [], [], []
        plan.table_keys = []
        if self.speculative is not None:
            plan.mtp_next = []
        for i, s in enumerate(out.scheduled):
            seq = s.seq
            fed = seq.num_computed + (1 if s.is_verify else s.num_new)
            plan.token_ids += seq.tokens(seq.num_computed, fed)
            if s.is_verify:
                plan.token_ids += seq.draft_ids
                plan.drafts.append(list(seq.draft_ids))
                plan.num_verify += 1
            if plan.mtp_next is not None:  # the token after the last one fed, when the step does not sample it
                plan.mtp_next.append(-1 if s.samples else seq.tokens(fed, fed + 1)[0])
            if seq.prompt_logprobs is not None and seq.num_computed < len(seq.prompt_ids) - 1:
                last = min(seq.num_computed + s.num_new, len(seq.prompt_ids) - 1)   # positions scored: < last
                plan.prompt_scoring.append(PromptScoring(i, seq.num_computed, len(plan.token_ids) - s.num_new,
                                                         seq.prompt_ids[seq.num_computed + 1:last + 1],
                                                         seq.params.prompt_logprobs))
            plan.query_lens.append(s.num_new)
            plan.context_lens.append(seq.num_computed)
            plan.slots.append(seq.slot)
            plan.block_tables.append(seq.blocks)
            plan.table_keys.append((seq.seq_id, seq.num_preemptions))  # its blocks only grow until preempted
            offsets.append(seq.position_offset)
            multimodal.append(seq.multimodal)
            if s.samples:
                plan.sample_rows.append(i)
                plan.sample_params.append(seq.params)
                plan.sample_steps.append(len(seq.output_ids))
                rules.append(self._min_tokens_rule(seq))
        plan.min_tokens = rules if any(r is not None for r in rules) else None
        seqs = [out.scheduled[row].seq for row in plan.sample_rows]
        matchers = [seq.matcher if seq.grammar_active else None for seq in seqs]
        if any(m is not None for m in matchers):  # structured outputs: each row's allowed next tokens
            plan.token_bitmask = self.grammars.bitmask(matchers)
        plan.position_offsets = offsets if any(offsets) else None
        plan.multimodal = multimodal if any(m is not None for m in multimodal) else None
        plan.presence_starts = [(seq.slot, seq.prompt_ids, list(seq.output_ids), seq.params.frequency_penalty != 0.0)
                                for seq in out.admitted if seq.needs_penalties]
        plan.state_restores = list(out.state_restores)
        rows = {id(s.seq): i for i, s in enumerate(out.scheduled)}
        ends = {id(s.seq): s.seq.num_computed + s.num_new for s in out.scheduled}
        plan.state_saves = [(seq.slot, state) for seq, point, state in out.state_saves if point == ends[id(seq)]]
        plan.gdn_snapshots = [(rows[id(seq)], point - seq.num_computed, state) for seq, point, state in out.state_saves
                              if point < ends[id(seq)]]   # inside the chunk: taken by the GDN layers themselves
        return plan

    def _min_tokens_rule(self, seq: Sequence) -> tuple[int, list[int]] | None:
        """(min_tokens, the ids that would stop the sequence) while it has fewer outputs than that, else None."""
        p = seq.params
        if len(seq.output_ids) >= p.min_tokens:
            return None
        ids = list(dict.fromkeys([*p.stop_token_ids, *([] if p.ignore_eos else self.eos_ids)]))
        return (p.min_tokens, ids) if ids else None

    def _process(self, out: SchedulerOutput, plan: StepPlan, sampled: HostSamplerOutput, emitted: list[list[int]],
                 drafts: list[list[int]] | None) -> list[SequenceUpdate]:
        """Feeds each sampled row's tokens (1, or 1 + accepted drafts) to its sequence until one finishes it."""
        now = time.perf_counter()
        updates = []
        for r, row in enumerate(plan.sample_rows):
            seq = out.scheduled[row].seq
            tokens, logprobs, finished = [], [] if seq.logprobs is not None else None, False
            for k in emitted[r]:
                token = sampled.token_ids[k]
                tokens.append(token)
                if logprobs is not None:
                    n = seq.params.logprobs
                    logprobs.append(TokenLogprob(token, sampled.logprobs[k], sampled.ranks[k],
                                                 list(zip(sampled.top_ids[k][:n], sampled.top_logprobs[k][:n]))))
                    seq.logprobs.append(logprobs[-1])
                finished = seq.checker.append(token)
                if seq.grammar_active and not finished:
                    finished = self._advance_grammar(seq, token)
                elif seq.matcher is not None and token == seq.grammar_after:
                    seq.grammar_after = None  # the think block closed: the grammar applies from the next token
                if finished:
                    break
            if drafts is not None:
                seq.draft_ids = [] if finished else self._usable_draft(seq, drafts[r])
            text = seq.checker.take_new_text() if self.tokenizer is not None else None
            request = seq.request
            if request.metrics.first_token_time is None:
                request.metrics.first_token_time = now
            if finished:
                self.scheduler.finish(seq)
                if request.finished:
                    request.metrics.finish_time = now
            update = SequenceUpdate(request, seq, tokens, text, logprobs, finished)
            request.updates.append(update)
            updates.append(update)
        return updates

    def _advance_grammar(self, seq: Sequence, token: int) -> bool:
        """Feeds a sampled token to the sequence's grammar matcher; True when the grammar is complete (the sequence
        then stops, also with ``ignore_eos``)."""
        if not seq.matcher.accept_token(token):
            raise RuntimeError(f"qwen35_native: internal error: token {token} was sampled but its grammar does not "
                               f"allow it (structured_outputs)")
        if seq.matcher.is_terminated():
            seq.checker.force_stop()
            return True
        return False

    def _usable_draft(self, seq: Sequence, draft: list[int]) -> list[int]:
        """The draft, unless verifying it would run past the context (its K/V need positions up to num_tokens - 1
        + k) or the sequence can take only one more token anyway. Sequences with a grammar take none: a draft
        outside it could not be verified against their masks."""
        if seq.matcher is not None:
            return []
        room = seq.checker.max_new_tokens
        if seq.num_tokens + len(draft) > self.max_model_len or (
                room is not None and len(seq.output_ids) + 1 >= room):
            return []
        return draft

    def output(self, request: Request) -> RequestOutput:
        outs = [CompletionOutput(s.sample_index, list(s.output_ids), s.checker.finish_reason, s.checker.stop_reason,
                                 s.logprobs, s.checker.text if self.tokenizer is not None else None)
                for s in request.seqs]
        first = request.seqs[0].prompt_logprobs
        return RequestOutput(request.prompt, request.prompt_ids, outs, request.metrics,
                             None if first is None else list(first))
