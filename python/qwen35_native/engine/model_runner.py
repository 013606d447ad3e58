"""The engine's only contact with the model: caches, one forward + sample per step, CUDA graphs for decode steps.

The scheduler and engine loop are host-side bookkeeping; everything they ask of the device goes through
:meth:`ModelRunner.execute` with a :class:`StepPlan` of plain Python data (picklable, so a tensor-parallel wrapper
can broadcast it and run the same plan on every rank).

Cache layout: ``num_blocks`` KV blocks and ``num_slots`` GDN slots for the sequences, plus one padding block and
one padding slot (the last indices) that padded rows of CUDA-graph batches read and write, so padding never
touches a real sequence's state.

Tests: tests/engine/test_generate.py, test_cuda_graphs.py; bench: bench/e2e.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..model import ForwardBatch
from ..model.mrope import sequence_positions
from ..model.multimodal import concat_vision_embeds
from .block_tables import BlockTableMirror
from .penalties import TokenPresence
from .prompt_logprobs import score_prompt_rows
from .sampling import HostSamplerOutput, SamplerOutput, SamplingTensors, min_tokens_bans, sample
from .sampling_params import SamplingParams
from .spec_decode import SpeculativeConfig, execute_speculative

logger = logging.getLogger("qwen35_native")


@dataclass
class StepPlan:
    """One step: sequences packed along the token axis, decode steps first."""

    token_ids: list[int]  # new tokens of every sequence, packed
    query_lens: list[int]  # new tokens per sequence
    context_lens: list[int]  # tokens already cached per sequence
    slots: list[int]  # GDN state slot per sequence
    block_tables: list[list[int]]  # KV blocks per sequence (at least enough for context + new tokens)
    sample_rows: list[int]  # sequences whose last new token's logits are sampled, ascending
    sample_params: list[SamplingParams]  # resolved, seeded; one per sampled row
    sample_steps: list[int]  # tokens each sampled sequence has generated so far
    position_offsets: list[int] | None = None  # M-RoPE delta per sequence (None: all 0, text only)
    # sequences starting (or restarting) in a slot that need penalty state: (slot, prompt ids, output ids)
    # (slot, prompt ids, output ids, needs output counts) of sequences with penalties admitted this step
    presence_starts: list[tuple[int, list[int], list[int], bool]] = field(default_factory=list)
    free_slots: list[int] = field(default_factory=list)  # GDN slots no sequence holds (CUDA-graph padding)
    # per sequence: its MultimodalPrompt (prompt M-RoPE positions, vision features) or None; None: text only
    multimodal: list | None = None
    # speculative decoding (spec_decode.py): the leading ``num_verify`` sequences feed their pending token and
    # their drafts (``drafts[i]``) and sample every one of those positions; ``mtp_next[i]``: the token after
    # sequence i's last fed token when it is known already (a prompt chunk that does not sample), else -1
    num_verify: int = 0
    drafts: list[list[int]] = field(default_factory=list)
    mtp_next: list[int] | None = None
    # prefix caching (prefix_cache.py): GDN states copied (snapshot index, slot) before the forward and (slot,
    # snapshot index) after it
    state_restores: list[tuple[int, int]] = field(default_factory=list)
    state_saves: list[tuple[int, int]] = field(default_factory=list)
    # (sequence, offset in its new tokens, snapshot index): the GDN state inside a prefill chunk, taken during the
    # forward (model/gdn_splits.py)
    gdn_snapshots: list[tuple[int, int, int]] = field(default_factory=list)
    # prompt logprobs (prompt_logprobs.py): batch rows to score, per sequence that asks
    prompt_scoring: list = field(default_factory=list)
    # per sequence, what identifies its block list across steps (block_tables.py); None: rebuild the tables
    table_keys: list | None = None
    # per sampled row, (min_tokens, ids it must not sample before that many outputs) or None; None when no row has
    # one still to reach (such steps never run as CUDA graphs)
    min_tokens: list | None = None
    # structured outputs: int32 [len(sample_rows), ceil(vocab / 32)] allowed-token bitmask rows (all ones: free)
    token_bitmask: torch.Tensor | None = None

    @property
    def num_decodes(self) -> int:
        n = 0
        while n < len(self.query_lens) and self.query_lens[n] == 1 and self.context_lens[n] > 0:
            n += 1
        return n

    @property
    def is_decode_only(self) -> bool:
        return self.num_decodes == len(self.query_lens)

    @property
    def feeds_prompt_of_multimodal(self) -> bool:
        """True when a multimodal sequence feeds prompt tokens this step (positions from its rope index, maybe
        vision features): such a step never runs as a CUDA graph."""
        return self.multimodal is not None and any(
            m is not None and c < m.input_ids.numel() for m, c in zip(self.multimodal, self.context_lens))


class ModelRunner:
    def __init__(self, model, num_blocks: int, block_size: int, num_slots: int, max_model_len: int,
                 cuda_graphs: bool | None = None, graph_batch_sizes: list[int] | None = None,
                 speculative: SpeculativeConfig | None = None, prefix_states: int = 0):
        """``cuda_graphs``: True (capture decode steps; a failed capture is an error), None (the same on CUDA, but
        a failed capture logs a warning and the engine stays eager), False (eager only). ``speculative``: verify
        MTP drafts (``spec_decode.py``; with CUDA graphs, ``spec_graphs.py`` holds the verification steps).
        ``prefix_states``: GDN slots for the state snapshots of prefix caching (``prefix_cache.py``)."""
        self.model = model
        self.device = model.device
        self.vocab_size = model.text_config.vocab_size
        self.block_size = block_size
        self.num_blocks, self.num_slots = num_blocks, num_slots
        self.max_blocks_per_seq = (max_model_len + block_size - 1) // block_size
        self.speculative = speculative
        # GDN slots: the sequences', one padding slot, then k scratch slots per sequence for verification steps,
        # then the prefix cache's snapshots
        spec_k = speculative.num_speculative_tokens if speculative else 0
        self.scratch_base = num_slots + 1
        self.prefix_base = self.scratch_base + num_slots * spec_k
        self.cache = model.allocate_cache(num_blocks + 1, block_size, self.prefix_base + prefix_states,
                                          with_mtp=speculative is not None)
        self.pad_block, self.pad_slot = num_blocks, num_slots
        self.tables = BlockTableMirror(num_slots + 1, self.max_blocks_per_seq, self.pad_block)
        self._clear_padding()
        self.presence: TokenPresence | None = None
        self._scored_prompts: list = []  # the last step's prompt logprobs (take_prompt_logprobs)
        self.graphs = self.spec_graphs = None
        if cuda_graphs is None:
            cuda_graphs = None if self.device.type == "cuda" else False
        if cuda_graphs is not False:
            if self.device.type != "cuda":
                raise ValueError(f"qwen35_native.LLM: cuda_graphs=True needs a CUDA device, got {self.device}")
            sizes = graph_batch_sizes or default_graph_sizes(num_slots)
            if speculative is not None:  # every decode step verifies drafts: those steps are the graphs
                from .spec_graphs import SpecGraphs

                self.spec_graphs = SpecGraphs(self, sizes, strict=cuda_graphs is True)
            else:
                from .cuda_graphs import DecodeGraphs

                self.graphs = DecodeGraphs(self, sizes, strict=cuda_graphs is True)

    def _clear_padding(self) -> None:
        """Zeroes the padding block and every GDN slot: padding rows of CUDA-graph batches run on the padding slot
        and on slots no sequence holds, and must compute on finite values (a NaN routed through a MoE kernel is
        not something to rely on). Sequences never read a slot's old contents."""
        for k, v in [*self.cache.kv.values(), *self.cache.mtp_kv.values()]:
            k[self.pad_block].zero_()
            v[self.pad_block].zero_()
        for i in self.cache.conv:
            self.cache.conv[i].zero_()
            self.cache.ssm[i].zero_()

    @property
    def graphs_active(self) -> bool:
        return any(g is not None and g.enabled for g in (self.graphs, self.spec_graphs))

    # ------------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> HostSamplerOutput | None:
        """Runs one step: the forward over the plan's tokens, then samples the ``sample_rows``. Returns the sampled
        tokens (and logprobs) in ``sample_rows`` order, or None when no row samples (prefill chunks only); with
        speculative decoding a ``SpecStepOutput`` (tokens per row, accepted drafts, next drafts)."""
        self._start_presence(plan)
        self._copy_states([self.prefix_base + i for i, _ in plan.state_restores], [s for _, s in plan.state_restores])
        out = self._execute(plan)
        self._copy_states([s for s, _ in plan.state_saves], [self.prefix_base + i for _, i in plan.state_saves])
        return out

    def _execute(self, plan: StepPlan):
        if self.speculative is not None:
            graphs = self.spec_graphs is not None and plan.min_tokens is None
            out = self.spec_graphs.run(plan) if graphs else None
            return out if out is not None else execute_speculative(self, plan)
        if self.graphs is not None and plan.is_decode_only and len(plan.sample_rows) == len(plan.query_lens) \
                and not plan.feeds_prompt_of_multimodal and plan.min_tokens is None:
            out = self.graphs.run(plan)
            if out is not None:
                return out
        return self._execute_eager(plan)

    def take_prompt_logprobs(self) -> list:
        """The prompt logprobs the last ``execute`` computed, one list per ``plan.prompt_scoring`` entry."""
        out, self._scored_prompts = self._scored_prompts, []
        return out

    def score_prompts(self, plan: StepPlan, hidden: torch.Tensor) -> None:
        if plan.prompt_scoring:
            self._scored_prompts = score_prompt_rows(self.model, hidden, plan.prompt_scoring)

    def _copy_states(self, src: list[int], dst: list[int]) -> None:
        if src:
            index = torch.tensor(src + dst, dtype=torch.long).to(self.device)
            self.cache.copy_gdn_states(index[:len(src)], index[len(src):])

    def _start_presence(self, plan: StepPlan) -> None:
        if not plan.presence_starts:
            return
        if self.presence is None:  # first request with penalties: per-slot token masks from now on
            self.presence = TokenPresence(self.num_slots + 1, self.vocab_size, self.device)
        if any(counts for *_, counts in plan.presence_starts):  # first frequency penalty: output counts too
            self.presence.enable_counts()
        for slot, prompt_ids, output_ids, _ in plan.presence_starts:
            self.presence.start(slot, prompt_ids, output_ids)

    def build_batch(self, plan: StepPlan, logits_rows: list[int] | None,
                    logits_tokens: list[int] | None = None) -> ForwardBatch:
        """The forward's metadata; logits for the last token of each sequence in ``logits_rows`` (None: every
        token), or for the tokens ``logits_tokens``. A plan verifying drafts runs its leading sequences as decode
        steps of width 1 + k, each with its k scratch GDN slots."""
        n = len(plan.query_lens)
        table = self.tables.table(plan.slots, plan.block_tables, plan.table_keys)
        positions = None
        if plan.position_offsets is not None or plan.multimodal is not None:
            offsets = plan.position_offsets or [0] * n
            mms = plan.multimodal or [None] * n
            positions = torch.cat([sequence_positions(c, q, d, None if m is None else m.positions) for c, q, d, m
                                   in zip(plan.context_lens, plan.query_lens, offsets, mms)], dim=1)   # [3, T]
        cu = [0]
        for q in plan.query_lens:
            cu.append(cu[-1] + q)
        logits = "all" if logits_rows is None else [cu[r + 1] - 1 for r in logits_rows]
        if logits_tokens is not None:
            logits = logits_tokens
        spec = {}
        if plan.num_verify:
            k = len(plan.drafts[0])
            spec = dict(decode_width=k + 1, spec_scratch=[self.scratch_slots(i, k) for i in range(plan.num_verify)])
        snapshots = [(row, offset, self.prefix_base + index) for row, offset, index in plan.gdn_snapshots]
        return ForwardBatch.build(plan.query_lens, plan.context_lens, plan.slots, table, self.block_size,
                                  self.device, positions=positions, logits=logits, num_slots=self.cache.num_slots,
                                  num_blocks=self.num_blocks + 1, gdn_snapshots=snapshots or None, **spec)

    def scratch_slots(self, row: int, k: int) -> list[int]:
        """The k scratch GDN slots of the ``row``-th verifying sequence of a step."""
        base = self.scratch_base + row * k
        return list(range(base, base + k))

    def _vision_embeds(self, plan: StepPlan, shift: int = 0):
        """(batch token indices, features) of the vision pad tokens this step feeds, or None. ``shift=1``: for the
        MTP head, whose row of position p embeds the token at p + 1 (the chunk's last row: the next, unfed one)."""
        if not plan.feeds_prompt_of_multimodal:
            return None
        parts, offset = [], 0
        for m, c, q in zip(plan.multimodal, plan.context_lens, plan.query_lens):
            if m is not None:
                parts.append(m.embeds_for(c + shift, c + q + shift, offset=offset))
            offset += q
        return concat_vision_embeds(parts)

    def _execute_eager(self, plan: StepPlan) -> HostSamplerOutput | None:
        batch = self.build_batch(plan, plan.sample_rows)  # no sampled rows: prefill chunks only, no logits
        logits = self.model.forward_cached(self._ids(plan), batch, self.cache, return_hidden=bool(plan.prompt_scoring),
                                           vision_embeds=self._vision_embeds(plan))   # [M, vocab]
        if plan.prompt_scoring:
            logits, hidden = logits
            self.score_prompts(plan, hidden)
        if not plan.sample_rows:
            return None
        tensors = SamplingTensors.build(plan.sample_params, plan.sample_steps, self.vocab_size, self.device,
                                        banned=min_tokens_bans(plan.min_tokens, plan.sample_steps),
                                        bitmask=plan.token_bitmask)
        slots = torch.tensor([plan.slots[r] for r in plan.sample_rows], dtype=torch.long).to(self.device)
        out = sample(logits, tensors, *self.penalty_masks(tensors, slots))
        self.record_sampled(slots, out)
        return out.to_host()

    def _ids(self, plan: StepPlan) -> torch.Tensor:
        return torch.tensor(plan.token_ids, dtype=torch.long).to(self.device, non_blocking=True)

    def penalty_masks(self, tensors: SamplingTensors, slots: torch.Tensor):
        """(prompt_mask, output_mask, output_counts) of the rows' sequences: what ``sample`` reads after the
        tensors; None for what no row's penalties need."""
        if not (tensors.any_presence or tensors.any_repetition or tensors.any_frequency):
            return None, None, None
        if self.presence is None:
            raise RuntimeError("qwen35_native: internal error: a row has penalties but no token presence state")
        masks = self.presence.masks(slots) if tensors.any_presence or tensors.any_repetition else (None, None)
        return (*masks, self.presence.counts_of(slots) if tensors.any_frequency else None)

    def record_sampled(self, slots: torch.Tensor, out: SamplerOutput) -> None:
        if self.presence is not None:
            self.presence.append(slots, out.token_ids)


def default_graph_sizes(max_batch: int) -> list[int]:
    """Decode batch sizes captured (lazily): 1, 2, 4, 8, then every multiple of 16, up to ``max_batch``."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_batch] + list(range(16, max_batch, 16))
    return sorted(set(sizes + [max_batch]))
