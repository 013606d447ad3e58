"""When a sequence stops, and its text: stop token ids, stop strings, ``max_tokens``.

Checked after every sampled token, in vLLM's order:
1. a stop token: ``stop_token_ids``, plus the eos ids (generation_config ``eos_token_id``, else the tokenizer's eos)
   unless ``ignore_eos`` (which ignores only the eos ids). finish_reason "stop"; ``stop_reason`` is the token id
   for a ``stop_token_ids`` hit and None for eos. The token stays in ``token_ids``; its text is not added to
   ``text`` (unless ``include_stop_str_in_output``).
2. a stop string in the newly detokenized text (the earliest occurrence wins): finish_reason "stop",
   ``stop_reason`` the string; ``text`` is cut before it (after it with ``include_stop_str_in_output``). The tokens
   stay in ``token_ids``.
3. the length limit: ``max_tokens`` or the room left in the context, whichever is smaller: finish_reason "length".
A stop token on the last allowed step reports "stop". Before ``min_tokens`` tokens, neither stop tokens nor stop
strings end the output (vLLM's order; the sampler does not sample stop tokens or eos ids then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .detokenizer import Decoder, IncrementalDetokenizer
from .sampling_params import SamplingParams


def eos_token_ids(generation_config: Mapping[str, Any] | None, tokenizer_eos_id: int | None = None) -> list[int]:
    """The eos ids of a checkpoint: generation_config ``eos_token_id`` (an int or a list), plus the tokenizer's eos
    token id when given."""
    ids: list[int] = []
    value = (generation_config or {}).get("eos_token_id")
    for v in ([] if value is None else [value] if isinstance(value, int) else list(value)):
        if v not in ids:
            ids.append(int(v))
    if tokenizer_eos_id is not None and tokenizer_eos_id not in ids:
        ids.append(tokenizer_eos_id)
    return ids


class StopChecker:
    """Tracks one sequence's output: token ids, text, finish reason. Feed it each sampled token with
    :meth:`append`; read streaming text with :meth:`take_new_text`. Without a tokenizer only token-level stopping
    works (stop strings then raise)."""

    def __init__(self, params: SamplingParams, eos_ids: Iterable[int] = (), tokenizer: Decoder | None = None,
                 max_new_tokens: int | None = None):
        """``params``: this sequence's parameters; ``eos_ids``: see :func:`eos_token_ids`; ``max_new_tokens``:
        the room the context leaves (prompt length subtracted), None for unlimited."""
        if params.stop and tokenizer is None:
            raise ValueError("qwen35_native.StopChecker: stop strings need a tokenizer, got stop="
                             f"{list(params.stop)} and no tokenizer")
        self.params = params
        self._eos = frozenset(eos_ids)
        self._stop_ids = frozenset(params.stop_token_ids)
        limits = [v for v in (params.max_tokens, max_new_tokens) if v is not None]
        self.max_new_tokens = min(limits) if limits else None
        self._detok = IncrementalDetokenizer(tokenizer, params.skip_special_tokens) if tokenizer else None
        # While running, hold back as many characters as could be the start of a stop string.
        self._holdback = max((len(s) for s in params.stop), default=1) - 1
        self.token_ids: list[int] = []
        self.text = ""
        self._streamed = 0
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token_id: int) -> bool:
        """Records one sampled token; returns True when the sequence is now finished."""
        if self.finished:
            raise RuntimeError(f"qwen35_native.StopChecker: sequence already finished ({self.finish_reason})")
        self.token_ids.append(token_id)
        may_stop = len(self.token_ids) >= self.params.min_tokens
        if may_stop and (token_id in self._stop_ids or (token_id in self._eos and not self.params.ignore_eos)):
            self.finish_reason = "stop"
            self.stop_reason = token_id if token_id in self._stop_ids else None
            if self._detok is not None:
                self._add_text(self._detok.step(token_id) if self.params.include_stop_str_in_output else "")
                self._add_text(self._detok.flush())
            return True
        if self._detok is not None:
            self._add_text(self._detok.step(token_id))
            if self.finished:
                return True
        if self.max_new_tokens is not None and len(self.token_ids) >= self.max_new_tokens:
            if self._detok is not None:
                self._add_text(self._detok.flush())  # may still complete a stop string, which then wins
            if not self.finished:
                self.finish_reason = "length"
        return self.finished

    def force_stop(self) -> None:
        """Ends the sequence after its last token, with reason "stop" (its structured output is complete)."""
        if self.finished:
            return
        if self._detok is not None:
            self._add_text(self._detok.flush())
        if not self.finished:
            self.finish_reason = "stop"

    def _add_text(self, delta: str) -> None:
        if not delta:
            return
        start = max(0, len(self.text) - self._holdback)  # a stop string may straddle the old and new text
        self.text += delta
        if self.finished or not self.params.stop or len(self.token_ids) < self.params.min_tokens:
            return
        hits = [(i, s) for s in self.params.stop if (i := self.text.find(s, start)) >= 0]
        if hits:
            index, stop = min(hits, key=lambda h: h[0])
            self.text = self.text[:index + len(stop)] if self.params.include_stop_str_in_output else self.text[:index]
            self.finish_reason, self.stop_reason = "stop", stop

    def take_new_text(self) -> str:
        """Text added since the last call. While running it withholds the last characters that could still become
        a stop string, so streamed text never shows (part of) one."""
        end = len(self.text) if self.finished or self.params.include_stop_str_in_output else max(
            self._streamed, len(self.text) - self._holdback)
        delta = self.text[self._streamed:end]
        self._streamed = end
        return delta
