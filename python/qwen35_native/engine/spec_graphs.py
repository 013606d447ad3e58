"""CUDA graphs of speculative decoding steps (``spec_decode.py``) whose sequences all verify their k drafts.

A step is two graphs around one host decision:
1. **verify** (key: padded batch size G and the sampler's flags): the target over G x (1 + k) tokens through the
   decode ops (``ForwardBatch.decode_width``), with the GDN states chained through the scratch slots, then the
   sampler over every position (the penalties of position j count the drafts before it: a scatter of static draft
   marks);
2. on the host: the sampled tokens, the accepted drafts, the roll-back copies and the penalty state (as the eager
   path: ``spec_decode.accept_drafts``);
3. **draft** (key: G): the MTP head over the G x (1 + k) rows with the sampled tokens as next tokens, the first
   draft from the row of each sequence's last accepted token (a static index), then k - 1 one-token steps of the
   head on its own output; a sequence whose reserved KV blocks end earlier computes those rows on the padding block
   and the host drops them (the eager path's rule: repeat the last draft).
Padding rows b..G-1 take token 0 at positions 0..k of the runner's padding KV block, a GDN slot no sequence holds
(the padding slot, then free slots) and their own scratch slots, and a greedy sampler row, as ``DecodeGraphs``.

The first step of a key runs eagerly on the static buffers and is then captured (``DecodeGraphs``' scheme and
failure handling: a capture that fails logs a warning and speculative steps stay eager, or raises with ``strict``).
Off CUDA (tests), ``capture=False`` runs the same static-buffer path eagerly.

Tests: tests/engine/test_spec_graphs.py (static path on the CPU; -m gpu capture).
"""

from __future__ import annotations

import logging

import torch

from ..model import ForwardBatch
from .cuda_graphs import describe_failure, warm_up_and_capture
from .sampling import SamplerOutput, SamplingTensors, pad_rows, sample
from .spec_decode import SpecStepOutput, accept_drafts

logger = logging.getLogger("qwen35_native")


class SpecGraphs:
    def __init__(self, runner, sizes: list[int], strict: bool = False, capture: bool = True):
        if not sizes or min(sizes) < 1 or max(sizes) > runner.num_slots:
            raise ValueError(f"qwen35_native.LLM: CUDA graph batch sizes must be in [1, max_num_seqs="
                             f"{runner.num_slots}], got {sizes}")
        self.runner, self.sizes, self.strict, self.capture = runner, sorted(set(sizes)), strict, capture
        self.k = k = runner.speculative.num_speculative_tokens
        self.enabled, self.disabled_reason, self.replays = True, None, 0
        G, W, w, dev = self.sizes[-1], runner.max_blocks_per_seq, k + 1, runner.device
        T, H, V = G * w, runner.model.text_config.hidden_size, runner.vocab_size
        long = dict(dtype=torch.long, device=dev)
        i32 = dict(dtype=torch.int32, device=dev)
        self.ids = torch.zeros(T, **long)
        self.positions_flat = torch.zeros(3 * T, **long)
        self.slot_mapping = torch.zeros(T, **long)
        self.seq_lens, self.slots = torch.ones(G, **i32), torch.zeros(G, **i32)
        self.scratch = torch.zeros(G, k, **i32)
        self.block_tables = torch.zeros(G, W, **i32)
        self.token_lens, self.token_tables = torch.ones(T, **i32), torch.zeros(T, W, **i32)
        self.cu_seqlens = torch.arange(G + 1, **i32) * w
        self.has_initial_state = torch.ones(G, dtype=torch.bool, device=dev)
        self.prefill_cu_seqlens = torch.zeros(1, **i32)
        self.sampler_rows = pad_rows(T, V).to(dev)
        self.row_slots = torch.zeros(T, **long)
        # position j's marks (see _fill_verify): k cells per row, each set or written back as it is
        self.mark_ids = torch.zeros(T, k, **long)
        self.mark_valid = torch.zeros(T, k, dtype=torch.bool, device=dev)
        self.mark_counts = torch.zeros(T, k, dtype=torch.int32, device=dev)  # 1 per draft, 0 per repeated filler
        self.hidden = torch.zeros(T, H, dtype=runner.model.dtype, device=dev)
        self.next_ids, self.draft_rows = torch.zeros(T, **long), torch.zeros(G, **long)
        # the further draft steps j = 1 .. k - 1: one token per sequence
        self.step_positions = torch.zeros(max(k - 1, 1), 3 * G, **long)
        self.step_mapping = torch.zeros(max(k - 1, 1), G, **long)
        self.step_lens = torch.ones(max(k - 1, 1), G, **i32)
        self.step_cu = torch.arange(G + 1, **i32)
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph | None, object]] = {}

    def size_for(self, batch: int) -> int | None:
        return next((s for s in self.sizes if s >= batch), None)

    # ------------------------------------------------------------------------------------------------------------
    def run(self, plan) -> SpecStepOutput | None:
        """A plan whose sequences all verify k drafts and sample; None when it cannot run here (the caller runs
        the eager path)."""
        r, b, k = self.runner, len(plan.query_lens), self.k
        if not self.enabled or plan.num_verify != b or plan.sample_rows != list(range(b)) or \
                any(len(d) != k for d in plan.drafts):
            return None
        G = self.size_for(b)
        pad_slots = ([r.pad_slot] + list(plan.free_slots))[:G - b] if G is not None else []
        if G is None or len(pad_slots) < G - b:
            return None
        w = k + 1
        if r.block_size < w:  # padding rows put their w tokens in the padding block
            return None
        params = [p for p in plan.sample_params for _ in range(w)]
        steps = [s + j for s in plan.sample_steps for j in range(w)]
        host_rows, flags = SamplingTensors.pack(params, steps, r.vocab_size)
        if flags.any_token_edits:  # logit biases, allow-lists, grammars: per-row token lists, eager steps
            return None
        flags = flags._replace(any_greedy=True)
        self._fill_verify(plan, G, host_rows, pad_slots)
        out = self._replay(("verify", G, flags), lambda: self._verify(G, flags))
        result = SamplerOutput(*(None if t is None else t[:b * w] for t in
                                 (out.token_ids, out.logprobs, out.ranks, out.top_logprobs, out.top_ids)))
        sampled = result.to_host()
        rows = [list(range(i * w, (i + 1) * w)) for i in range(b)]
        accepted = [0] * b
        accept_drafts(r, plan, rows, sampled, accepted, k)
        live = self._fill_draft(plan, G, sampled, accepted)
        drafts = self._replay(("draft", G), lambda: self._draft(G))[:b].tolist()
        for i in range(b):  # a sequence whose blocks end early repeats its last computed draft
            drafts[i] = drafts[i][:live[i]] + drafts[i][live[i] - 1:live[i]] * (k - live[i])
        return SpecStepOutput(sampled, [row[:a + 1] for row, a in zip(rows, accepted)], accepted, drafts)

    def _replay(self, key, body):
        entry = self.graphs.get(key)
        if entry is not None and entry[0] is not None:
            entry[0].replay()
            self.replays += 1
            return entry[1]
        if not self.capture:
            self.graphs[key] = (None, None)
            self.replays += 1
            return body()
        out, graph, static_out = warm_up_and_capture(body, self.pool)
        if graph is None:
            reason = f"CUDA graph capture of the speculative step ({key[0]}, batch size {key[1]}) failed: " \
                     f"{describe_failure(static_out)}"
            if self.strict:
                raise RuntimeError(f"qwen35_native.LLM: {reason}; pass cuda_graphs=None or False") from static_out
            self.enabled, self.disabled_reason = False, reason
            logger.warning("qwen35_native: %s; speculative steps run eagerly", reason)
            return out
        self.graphs[key] = (graph, static_out)
        logger.info("qwen35_native: captured the speculative %s step for batch size %d", key[0], key[1])
        return out

    # ------------------------------------------------------------------------------------------------------------
    def _verify_batch(self, G: int) -> ForwardBatch:
        T, w = G * (self.k + 1), self.k + 1
        return ForwardBatch(cu_seqlens=self.cu_seqlens[:G + 1], seq_lens=self.seq_lens[:G],
                            has_initial_state=self.has_initial_state[:G], slots=self.slots[:G],
                            block_tables=self.block_tables[:G], positions=self.positions_flat[:3 * T].view(3, T),
                            slot_mapping=self.slot_mapping[:T], logits_indices=None, num_decodes=G,
                            prefill_cu_seqlens=self.prefill_cu_seqlens, num_tokens=T, decode_width=w,
                            spec_scratch=self.scratch[:G], decode_seq_lens=self.token_lens[:T],
                            decode_block_tables=self.token_tables[:T])

    def _verify(self, G: int, flags):
        """Graph 1: the verification forward and the sampler over every position, on static buffers."""
        r, T = self.runner, G * (self.k + 1)
        logits, hidden = r.model.forward_cached(self.ids[:T], self._verify_batch(G), r.cache, return_hidden=True)
        self.hidden[:T].copy_(hidden)
        tensors = SamplingTensors.from_packed(self.sampler_rows[:T], flags, r.vocab_size)
        prompt_mask, output_mask, output_counts = r.penalty_masks(tensors, self.row_slots[:T])
        ids = self.mark_ids[:T]  # position j has generated the drafts before it (gathered copies: in place)
        if output_mask is not None:
            output_mask.scatter_(1, ids, output_mask.gather(1, ids) | self.mark_valid[:T])
        if output_counts is not None:
            output_counts.scatter_add_(1, ids, self.mark_counts[:T])
        return sample(logits, tensors, prompt_mask, output_mask, output_counts)

    def _draft(self, G: int) -> torch.Tensor:
        """Graph 2: the MTP head over the rows, the first draft per sequence, then k - 1 steps on its output."""
        r, T, model = self.runner, G * (self.k + 1), self.runner.model
        out = model.forward_mtp(self.next_ids[:T], self.hidden[:T], self._verify_batch(G), r.cache)
        h = out.index_select(0, self.draft_rows[:G])
        d = model.compute_logits(h).argmax(dim=-1)
        drafts = [d]
        for j in range(self.k - 1):
            batch = ForwardBatch(cu_seqlens=self.step_cu[:G + 1], seq_lens=self.step_lens[j, :G],
                                 has_initial_state=self.has_initial_state[:G], slots=self.slots[:G],
                                 block_tables=self.block_tables[:G],
                                 positions=self.step_positions[j, :3 * G].view(3, G),
                                 slot_mapping=self.step_mapping[j, :G], logits_indices=None, num_decodes=G,
                                 prefill_cu_seqlens=self.prefill_cu_seqlens, num_tokens=G)
            h = model.forward_mtp(d, h, batch, r.cache)
            d = model.compute_logits(h).argmax(dim=-1)
            drafts.append(d)
        return torch.stack(drafts, dim=1)                                        # [G, k]

    # ------------------------------------------------------------------------------------------------------------
    def _fill_verify(self, plan, G: int, host_rows: torch.Tensor, pad_slots: list[int]) -> None:
        r, b, k, bs = self.runner, len(plan.query_lens), self.k, self.runner.block_size
        w, T = k + 1, G * (k + 1)
        offsets = plan.position_offsets or [0] * b
        ctx = list(plan.context_lens) + [0] * (G - b)
        table = r.tables.table(plan.slots, plan.block_tables, plan.table_keys)     # [b, width]
        width = table.shape[1]
        tables = list(plan.block_tables) + [[r.pad_block]] * (G - b)
        ids = list(plan.token_ids) + [0] * ((G - b) * w)
        pos = [ctx[i] + j + (offsets[i] if i < b else 0) for i in range(G) for j in range(w)]
        mapping = [tables[i][(ctx[i] + j) // bs] * bs + (ctx[i] + j) % bs for i in range(G) for j in range(w)]
        slots = list(plan.slots) + pad_slots
        marks = [[d for d in (plan.drafts[i] if i < b else [])[:j]] for i in range(G) for j in range(w)]
        dev = r.device
        self.ids[:T].copy_(torch.tensor(ids))
        self.positions_flat[:3 * T].view(3, T).copy_(torch.tensor(pos)[None].expand(3, T))
        self.slot_mapping[:T].copy_(torch.tensor(mapping))
        self.seq_lens[:G].copy_(torch.tensor([c + w for c in ctx], dtype=torch.int32))
        self.slots[:G].copy_(torch.tensor(slots, dtype=torch.int32))
        self.scratch[:G].copy_(torch.tensor([r.scratch_slots(i, k) for i in range(G)], dtype=torch.int32))
        self.block_tables[:b, :width].copy_(table)
        self.block_tables[b:G, :width].fill_(r.pad_block)
        self.token_lens[:T].copy_(torch.tensor([c + j + 1 for c in ctx for j in range(w)], dtype=torch.int32))
        self.token_tables[:T, :width].copy_(self.block_tables[:G, :width].repeat_interleave(w, dim=0))
        rows = pad_rows(T, r.vocab_size)
        rows[:b * w] = host_rows
        self.sampler_rows[:T].copy_(rows.to(dev))
        self.row_slots[:T].copy_(torch.tensor([s for s in slots for _ in range(w)]))
        # a row with drafts to mark repeats its first one (every write to a cell sets it); a row without writes
        # column 0 back as it is: no cell gets two different values from one scatter
        self.mark_ids[:T].copy_(torch.tensor([m + m[:1] * (k - len(m)) if m else [0] * k for m in marks]))
        self.mark_valid[:T].copy_(torch.tensor([[bool(m)] * k for m in marks]))
        self.mark_counts[:T].copy_(torch.tensor([[int(j < len(m)) for j in range(k)] for m in marks]))

    def _fill_draft(self, plan, G: int, sampled, accepted: list[int]) -> list[int]:
        """Static inputs of the draft graph; returns how many drafts each sequence's blocks have room for."""
        r, b, k, bs = self.runner, len(plan.query_lens), self.k, self.runner.block_size
        w, T = k + 1, G * (k + 1)
        nxt = list(sampled.token_ids[:b * w]) + [0] * ((G - b) * w)
        self.next_ids[:T].copy_(torch.tensor(nxt))
        acc = accepted + [0] * (G - b)
        self.draft_rows[:G].copy_(torch.tensor([i * w + acc[i] for i in range(G)]))
        offsets = plan.position_offsets or [0] * b
        live = []
        for i in range(G):
            base = plan.context_lens[i] + acc[i] if i < b else 0
            room = len(plan.block_tables[i]) * bs if i < b else 0
            live.append(1 + sum(1 for j in range(1, k) if base + j < room))
        for j in range(k - 1):
            pos, mapping, lens = [], [], []
            for i in range(G):
                p = (plan.context_lens[i] + acc[i] if i < b else 0) + j + 1
                if i < b and j + 1 < live[i]:
                    t = plan.block_tables[i]
                    pos.append(p + offsets[i])
                    mapping.append(t[p // bs] * bs + p % bs)
                    lens.append(p + 1)
                else:  # nothing to draft here: a harmless row on the padding block
                    pos.append(0)
                    mapping.append(r.pad_block * bs)
                    lens.append(1)
            self.step_positions[j, :3 * G].view(3, G).copy_(torch.tensor(pos)[None].expand(3, G))
            self.step_mapping[j, :G].copy_(torch.tensor(mapping))
            self.step_lens[j, :G].copy_(torch.tensor(lens, dtype=torch.int32))
        return live[:b]
