"""Repetition, frequency and presence penalties (vLLM/OpenAI semantics) and the per-sequence token state they read.

Which tokens count:
- repetition penalty (HF/vLLM): every token id that appears in the prompt as the model consumed it (chat-template
  and vision placeholder tokens included) or in the output generated so far. A positive logit is divided by the
  penalty, a negative (or zero) one multiplied by it.
- frequency penalty (OpenAI/vLLM): the penalty times the number of times a token id appears in the output so far.
- presence penalty (OpenAI/vLLM): every token id that appears in the output generated so far; the penalty is
  subtracted once, however often the token appeared.
Repetition is applied first, then frequency, then presence (vLLM's order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_mask(name: str, mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    if mask is None:
        raise ValueError(f"qwen35_native.sample: {name} must be given when a row has that penalty, got None")
    if mask.dtype != torch.bool or list(mask.shape) != list(logits.shape) or mask.device != logits.device:
        raise ValueError(f"qwen35_native.sample: {name} must be a bool tensor of shape {list(logits.shape)} on "
                         f"{logits.device}, got {mask.dtype} {list(mask.shape)} on {mask.device}")
    return mask


def _check_counts(counts: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    if counts is None:
        raise ValueError("qwen35_native.sample: output_counts must be given when a row has a frequency penalty, "
                         "got None")
    if counts.dtype != torch.int32 or list(counts.shape) != list(logits.shape) or counts.device != logits.device:
        raise ValueError(f"qwen35_native.sample: output_counts must be an int32 tensor of shape {list(logits.shape)} "
                         f"on {logits.device}, got {counts.dtype} {list(counts.shape)} on {counts.device}")
    return counts


def apply_penalties(logits: torch.Tensor, presence_penalty: torch.Tensor | None,
                    repetition_penalty: torch.Tensor | None, prompt_mask: torch.Tensor | None,
                    output_mask: torch.Tensor | None, frequency_penalty: torch.Tensor | None = None,
                    output_counts: torch.Tensor | None = None) -> torch.Tensor:
    """Returns penalised fp32 logits (out of place). ``logits`` [B, V] fp32; ``presence_penalty``,
    ``repetition_penalty`` and ``frequency_penalty`` [B] fp32 or None (not applied); masks [B, V] bool:
    ``prompt_mask`` tokens of the prompt, ``output_mask`` tokens of the output so far; ``output_counts`` [B, V]
    int32: how often each token occurs in the output so far."""
    if repetition_penalty is not None:
        seen = _check_mask("prompt_mask", prompt_mask, logits) | _check_mask("output_mask", output_mask, logits)
        factor = torch.where(seen, repetition_penalty[:, None], torch.ones((), device=logits.device))
        logits = torch.where(logits > 0, logits / factor, logits * factor)
    if frequency_penalty is not None:
        logits = logits - frequency_penalty[:, None] * _check_counts(output_counts, logits).float()
    if presence_penalty is not None:
        logits = logits - presence_penalty[:, None] * _check_mask("output_mask", output_mask, logits)
    return logits


class TokenPresence:
    """Per-slot bool masks, on the device, of the token ids seen in each sequence's prompt and output, and (once a
    request has a frequency penalty, :meth:`enable_counts`) per-slot counts of its output tokens: the state the
    penalties read. ``start`` uploads a prompt once; ``append`` records a step's sampled tokens on the device
    (no host sync); ``masks`` / ``counts_of`` gather the rows of a batch. Memory: 2 x slots x vocab bytes, plus
    4 x slots x vocab with counts."""

    def __init__(self, num_slots: int, vocab_size: int, device: torch.device | str = "cpu"):
        self.vocab_size = vocab_size
        self.prompt = torch.zeros(num_slots, vocab_size, dtype=torch.bool, device=device)
        self.output = torch.zeros(num_slots, vocab_size, dtype=torch.bool, device=device)
        self.counts: torch.Tensor | None = None  # int32 [slots, vocab]; rows are exact for slots started since

    def enable_counts(self) -> None:
        """Allocates the output counts. Only slots started afterwards have exact rows, so call it before starting
        the first sequence with a frequency penalty."""
        if self.counts is None:
            self.counts = torch.zeros_like(self.output, dtype=torch.int32)

    def _check_ids(self, ids: torch.Tensor, what: str) -> None:
        # Cheap host-side range check only for host tensors; device tensors are trusted (checking would sync).
        if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"qwen35_native.TokenPresence: {what} must be in [0, {self.vocab_size}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")

    def start(self, slot: int, prompt_ids: Sequence[int] | torch.Tensor, output_ids: Sequence[int] = ()) -> None:
        """Resets ``slot`` for a new sequence with this prompt (and output so far, for a resumed sequence)."""
        for mask, ids, what in ((self.prompt, prompt_ids, "prompt ids"), (self.output, output_ids, "output ids")):
            ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
            self._check_ids(ids, what)
            mask[slot].zero_()
            mask[slot, ids.to(mask.device, non_blocking=True)] = True
            if mask is self.output and self.counts is not None:
                self.counts[slot].zero_()
                self.counts[slot].index_add_(0, ids.to(mask.device), torch.ones_like(ids, dtype=torch.int32,
                                                                                      device=mask.device))

    def append(self, slots: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Marks ``token_ids[i]`` as generated by sequence ``slots[i]`` (both [B] int64, on the masks' device)."""
        self._check_ids(token_ids, "token ids")
        self.output.index_put_((slots, token_ids), torch.ones((), dtype=torch.bool, device=self.output.device))
        if self.counts is not None:  # accumulate: a batch may hold several tokens of one sequence (drafts)
            self.counts.index_put_((slots, token_ids), torch.ones((), dtype=torch.int32, device=self.counts.device),
                                   accumulate=True)

    def masks(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_mask, output_mask), each [B, V] bool, for the sequences in ``slots`` ([B] int64)."""
        return self.prompt.index_select(0, slots), self.output.index_select(0, slots)

    def counts_of(self, slots: torch.Tensor) -> torch.Tensor:
        """Output counts [B, V] int32 of the sequences in ``slots`` (needs :meth:`enable_counts`)."""
        if self.counts is None:
            raise RuntimeError("qwen35_native: internal error: output counts were never enabled")
        return self.counts.index_select(0, slots)
