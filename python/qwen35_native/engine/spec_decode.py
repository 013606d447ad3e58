"""Speculative decoding with the checkpoint's MTP head (``LLM(..., speculative_config={"method": "mtp",
"num_speculative_tokens": 1})``, vLLM's spelling).

Each step, a sequence in the decode phase feeds its pending token x0 and the drafts d1 .. dk the MTP head proposed
for the positions after it. The target model runs them as one verification step (the decode ops,
position by position: ``ForwardBatch.decode_width``) and samples every position as if the drafts were its own
tokens. Verification is **exact match**: draft d_j is accepted when it equals the token y_(j-1) the target samples
at the position before it. Because sampling is counter-based (a row's token is a function of its logits, its
parameters, its seed and its output position; ``sampling.py``), the tokens out of a speculative engine are the
tokens the plain engine would produce, whatever the sampling parameters (temperature, top-k/p, min-p, penalties,
logprobs): an accepted draft is the sample itself. A draft is accepted with probability p(d) under the target's
distribution p, the acceptance rate of rejection sampling with a greedy draft (vLLM's MTP proposer drafts greedily),
so nothing is lost against it either.

After verification, a sequence that accepted a < k drafts is rolled back: its KV entries past the accepted tokens
are simply overwritten later, and its GDN states are copied back from the scratch slot that holds the state after
the last accepted token (``ModelCache.copy_gdn_states``). The verification step wrote the state after each position
but the last to a scratch slot by chaining the decode op's ``out_slots``, so a step that accepts every draft copies
nothing. Then the MTP head runs over the step's rows (each row's hidden state with the embedding of the token after
it, MODEL_SPEC §3h) and proposes the next drafts greedily from the row of the last accepted token; prefill chunks
run it too, so that the head's own KV cache covers every position.

With k > 1 drafts the head runs again on its own output for each further draft (vLLM's convention), at the
positions after the last accepted token; the scheduler reserves KV blocks for those k - 1 positions too.

On CUDA, steps in which every sequence verifies drafts run in two CUDA graphs (``spec_graphs.py``); other steps
(prefill chunks, sequences without drafts) run this module's eager path.

With tensor parallelism every rank holds its shard of the head (split like any decoder layer) and runs the same
step on the plan rank 0 sends; the sampled tokens, hence the acceptances and drafts, agree on every rank.

Tests: tests/engine/test_spec_decode.py, tests/model/test_spec_verify.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .sampling import HostSamplerOutput, SamplingTensors, min_tokens_bans, sample

METHODS = ("mtp",)


@dataclass(frozen=True)
class SpeculativeConfig:
    method: str = "mtp"
    num_speculative_tokens: int = 1

    @classmethod
    def parse(cls, value: Any) -> SpeculativeConfig | None:
        """None, a SpeculativeConfig, or a dict with ``method`` and ``num_speculative_tokens`` (vLLM's keys)."""
        if value is None or isinstance(value, SpeculativeConfig):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"qwen35_native.LLM: speculative_config must be a dict like {{'method': 'mtp', "
                            f"'num_speculative_tokens': 1}}, got {type(value).__name__}")
        unknown = sorted(set(value) - {"method", "num_speculative_tokens"})
        if unknown:
            raise ValueError(f"qwen35_native.LLM: unknown speculative_config keys {unknown}; known: method, "
                             f"num_speculative_tokens")
        method = value.get("method", "mtp")
        if method not in METHODS:
            raise ValueError(f"qwen35_native.LLM: speculative_config method must be one of {list(METHODS)} (the "
                             f"checkpoint's multi-token-prediction head), got {method!r}")
        k = value.get("num_speculative_tokens", 1)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"qwen35_native.LLM: num_speculative_tokens must be a positive integer, got {k!r}")
        return cls(method, k)


@dataclass
class SpecStats:
    """Counts over the engine's lifetime: drafts proposed to verification steps, and drafts accepted."""

    num_drafts: int = 0
    num_accepted: int = 0
    num_verify_steps: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return self.num_accepted / self.num_drafts if self.num_drafts else None


def accepted_count(drafts: list[int], sampled: list[int]) -> int:
    """Drafts accepted: the longest prefix with ``drafts[j] == sampled[j]`` (``sampled[j]``: the target's token at
    the position of ``drafts[j]``, sampled after the tokens before it)."""
    a = 0
    while a < len(drafts) and drafts[a] == sampled[a]:
        a += 1
    return a


@dataclass
class SpecStepOutput:
    """A speculative step's result. ``sampled``: every sampler row (a verifying sequence has 1 + k, the others
    one); per sample row of the plan, ``rows[r]``: the sampler rows of the tokens it emits, in order (1 + accepted
    drafts for a verifying sequence); ``accepted[r]``: drafts accepted (0 for rows that did not verify);
    ``drafts[r]``: the draft proposed for the sequence's next step."""

    sampled: HostSamplerOutput
    rows: list[list[int]]
    accepted: list[int]
    drafts: list[list[int]]


@torch.inference_mode()
def execute_speculative(runner, plan) -> SpecStepOutput:
    """One step of a speculative engine (``ModelRunner.execute``): verification of the leading sequences' drafts,
    any other sequences as usual, the roll-back of rejected drafts, then the MTP head over all rows."""
    model, nv = runner.model, plan.num_verify
    k = len(plan.drafts[0]) if nv else 0
    cu = [0]
    for q in plan.query_lens:
        cu.append(cu[-1] + q)
    tokens, params, steps, slots, rows, rules, masks = [], [], [], [], [], [], []
    extra_seen = []  # (sampler row, draft token): a verified position counts the drafts before it as output
    for r, (seq, p, step) in enumerate(zip(plan.sample_rows, plan.sample_params, plan.sample_steps)):
        width = k + 1 if seq < nv else 1
        rows.append(list(range(len(tokens), len(tokens) + width)))
        for j in range(width):
            if seq < nv:
                extra_seen += [(len(tokens), d) for d in plan.drafts[seq][:j]]
            tokens.append(cu[seq + 1] - width + j)
            params.append(p)
            steps.append(step + j)
            slots.append(plan.slots[seq])
            rules.append(plan.min_tokens[r] if plan.min_tokens is not None else None)
            masks.append(r)  # a row with a grammar has no drafts: one position
    batch = runner.build_batch(plan, None, logits_tokens=tokens)
    logits, hidden = model.forward_cached(runner._ids(plan), batch, runner.cache, return_hidden=True,
                                          vision_embeds=runner._vision_embeds(plan))
    runner.score_prompts(plan, hidden)
    sampled, accepted = None, [0] * len(rows)
    if tokens:
        bitmask = None if plan.token_bitmask is None else plan.token_bitmask[masks]
        tensors = SamplingTensors.build(params, steps, runner.vocab_size, runner.device,
                                        banned=min_tokens_bans(rules, steps), bitmask=bitmask)
        slot_ids = torch.tensor(slots, dtype=torch.long).to(runner.device)
        prompt_mask, output_mask, output_counts = runner.penalty_masks(tensors, slot_ids)
        if extra_seen and (output_mask is not None or output_counts is not None):  # gathered copies: in place
            at = torch.tensor(extra_seen, dtype=torch.long).to(runner.device)
            if output_mask is not None:
                output_mask[at[:, 0], at[:, 1]] = True
            if output_counts is not None:  # a draft written twice counts twice
                output_counts.index_put_((at[:, 0], at[:, 1]), torch.ones((), dtype=torch.int32,
                                                                          device=runner.device), accumulate=True)
        sampled = sample(logits, tensors, prompt_mask, output_mask, output_counts).to_host()
        accept_drafts(runner, plan, rows, sampled, accepted, k)
    drafts = _draft(runner, plan, batch, hidden, cu, rows, accepted, sampled)
    return SpecStepOutput(sampled, [r[:a + 1] for r, a in zip(rows, accepted)], accepted, drafts)


def accept_drafts(runner, plan, rows, sampled: HostSamplerOutput, accepted: list[int], k: int) -> None:
    """Accepted drafts per verifying row; rolls the rejected ones' GDN states back; records emitted tokens for the
    penalties."""
    src, dst = [], []
    for r, seq in enumerate(plan.sample_rows):
        if seq < plan.num_verify:
            accepted[r] = a = accepted_count(plan.drafts[seq], [sampled.token_ids[i] for i in rows[r][:k]])
            if a < k:  # the state after the last accepted token is in scratch slot a of this row
                src.append(runner.scratch_slots(seq, k)[a])
                dst.append(plan.slots[seq])
    if src:
        runner.cache.copy_gdn_states(torch.tensor(src, device=runner.device),
                                     torch.tensor(dst, device=runner.device))
    if runner.presence is not None:
        emitted = [(plan.slots[seq], sampled.token_ids[i]) for r, seq in enumerate(plan.sample_rows)
                   for i in rows[r][:accepted[r] + 1]]
        pairs = torch.tensor(emitted, dtype=torch.long).to(runner.device)
        runner.presence.append(pairs[:, 0], pairs[:, 1])


def _draft(runner, plan, batch, hidden, cu, rows, accepted, sampled) -> list[list[int]]:
    """The MTP head over every row of the step (row t: hidden state of position p, embedding of the token at
    p + 1); the first draft of each sampled sequence from the row of its last accepted token, greedily (as vLLM's
    MTP proposer); then k - 1 more, each from the head run on its own output one position further (vLLM's
    convention), as far as the sequence's reserved KV blocks reach (a sequence stopped short repeats its last
    draft: any token is a valid guess)."""
    model = runner.model
    next_ids = list(plan.token_ids[1:]) + [0]
    sampled_at = {}
    for r, seq in enumerate(plan.sample_rows):
        ids = [sampled.token_ids[i] for i in rows[r]]
        if seq < plan.num_verify:  # the target's tokens at every verified position (valid up to the accepted)
            next_ids[cu[seq]:cu[seq + 1]] = ids
        else:
            next_ids[cu[seq + 1] - 1] = ids[0]
        sampled_at[r] = cu[seq] + accepted[r] if seq < plan.num_verify else cu[seq + 1] - 1
    for seq in range(len(plan.query_lens)):
        if plan.mtp_next is not None and plan.mtp_next[seq] >= 0:
            next_ids[cu[seq + 1] - 1] = plan.mtp_next[seq]
    ids = torch.tensor(next_ids, dtype=torch.long).to(runner.device)
    out = model.forward_mtp(ids, hidden, batch, runner.cache,                    # [T, H]
                            vision_embeds=runner._vision_embeds(plan, shift=1))   # images: as the target saw them
    if not sampled_at:
        return []
    at = torch.tensor([sampled_at[r] for r in range(len(rows))], dtype=torch.long).to(runner.device)
    h = out[at]                                                                  # [n, H]
    drafts = [[t] for t in model.compute_logits(h).argmax(dim=-1).tolist()]
    seqs = list(plan.sample_rows)
    # cache position of each draft row: the last accepted token (verified) or the chunk's last token
    pos = [plan.context_lens[s] + (accepted[r] if s < plan.num_verify else plan.query_lens[s] - 1)
           for r, s in enumerate(seqs)]
    for j in range(1, runner.speculative.num_speculative_tokens):
        live = [r for r, s in enumerate(seqs) if pos[r] + j < len(plan.block_tables[s]) * runner.block_size]
        if live:
            sub = _one_token_plan(plan, [seqs[r] for r in live], [pos[r] + j for r in live])
            step = model.forward_mtp(torch.tensor([drafts[r][-1] for r in live], device=runner.device),
                                     h[live], runner.build_batch(sub, None), runner.cache)   # [len(live), H]
            h = h.index_copy(0, torch.tensor(live, device=runner.device), step)
            for r, t in zip(live, model.compute_logits(step).argmax(dim=-1).tolist()):
                drafts[r].append(t)
        for d in drafts:
            d.extend(d[-1:] * (j + 1 - len(d)))
    return drafts


def _one_token_plan(plan, seqs: list[int], context: list[int]):
    """A plan of one token per sequence ``seqs[i]`` at cache position ``context[i]`` (its blocks, slot and M-RoPE
    offset): the batch of a further draft step."""
    def pick(xs):
        return None if xs is None else [xs[s] for s in seqs]

    return dataclasses.replace(plan, token_ids=[0] * len(seqs), query_lens=[1] * len(seqs), context_lens=context,
                               slots=pick(plan.slots), block_tables=pick(plan.block_tables),
                               table_keys=pick(plan.table_keys), sample_rows=[],
                               sample_params=[], sample_steps=[], position_offsets=pick(plan.position_offsets),
                               multimodal=pick(plan.multimodal), num_verify=0, drafts=[], mtp_next=None,
                               gdn_snapshots=[])   # the MTP head has no GDN layer
