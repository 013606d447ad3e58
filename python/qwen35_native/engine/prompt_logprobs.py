"""Prompt logprobs (vLLM's ``SamplingParams.prompt_logprobs``): the log-probability of every prompt token given the
tokens before it, its rank, and the ``prompt_logprobs`` most likely tokens at that position, from the raw
``log_softmax`` of the model's logits (as ``logprobs`` reports generated tokens). What evaluation harnesses score
log-likelihoods with.

A request asking for them has its first sample score each prompt position as its prefill feeds it (in chunks, like
any prefill): the step's plan names the batch rows to score and the tokens they predict, the runner projects those
rows' final hidden states to logits a few rows at a time (a ``[rows, vocab]`` fp32 block, not the whole prompt's)
and hands the results back with :meth:`ModelRunner.take_prompt_logprobs`. Such a sequence never resumes from the
prefix cache, whose prefix it would not score; it still saves its prefix for others.

Tests: tests/engine/test_prompt_logprobs.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .outputs import TokenLogprob

ROWS_PER_PASS = 128  # logits rows projected at once: 128 x 248k vocab x 4 bytes = 127 MB at the released vocab


@dataclass
class PromptScoring:
    """One sequence's share of a step: batch tokens ``start .. start + len(targets) - 1`` predict ``targets``
    (prompt tokens ``first + 1 ..``); ``num_top`` most likely tokens each."""

    row: int  # the sequence's index in the plan
    first: int  # prompt position of the first scored token's predecessor
    start: int
    targets: list[int]
    num_top: int


def score_prompt_rows(model, hidden: torch.Tensor, scorings: list[PromptScoring]) -> list[list[TokenLogprob]]:
    """``hidden``: the step's final-normed hidden states ``[T, H]``. Every rank of a tensor-parallel model runs the
    same calls (``compute_logits`` gathers the vocabulary shards)."""
    results = []
    for s in scorings:
        scored: list[TokenLogprob] = []
        for a in range(0, len(s.targets), ROWS_PER_PASS):
            targets = torch.tensor(s.targets[a:a + ROWS_PER_PASS], dtype=torch.long).to(hidden.device)
            rows = hidden[s.start + a:s.start + a + targets.numel()]
            logp = model.compute_logits(rows).float().log_softmax(dim=-1)        # [rows, vocab]
            picked = logp.gather(1, targets[:, None])                              # [rows, 1]
            ranks = (logp > picked).sum(dim=-1) + 1
            top_lp, top_ids = logp.topk(s.num_top, dim=-1)                          # [rows, num_top]
            host = torch.cat([picked, ranks[:, None].float(), top_lp, top_ids.float()], dim=1).cpu()
            for t, row in zip(s.targets[a:a + ROWS_PER_PASS], host.tolist()):
                n = s.num_top
                scored.append(TokenLogprob(t, row[0], int(row[1]),
                                           [(int(i), lp) for i, lp in zip(row[2 + n:], row[2:2 + n])]))
        results.append(scored)
    return results
