"""Incremental detokenization that emits only complete UTF-8 text.

Byte-level BPE can split one multi-byte character across tokens; decoding such a prefix yields U+FFFD. The
detokenizer keeps a small window of token ids: it decodes ``ids[prefix:]`` and ``ids[prefix:read]`` and emits the
difference only when the window does not end in an incomplete character, then slides the window. Concatenating every
``step`` result and the final ``flush`` equals ``decode(all ids)`` for byte-level tokenizers.
"""

from __future__ import annotations

from typing import Protocol

_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Per-sequence streaming decoder over any tokenizer with ``decode(ids, skip_special_tokens=...)``
    (``qwen35_native.chat.Tokenizer`` or a ``tokenizers.Tokenizer``)."""

    def __init__(self, tokenizer: Decoder, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.token_ids: list[int] = []
        self._prefix = 0  # window start: text of ids[:prefix] is final
        self._read = 0  # ids[:read] have been emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def step(self, token_id: int) -> str:
        """Adds one token; returns the newly completed text (possibly empty)."""
        self.token_ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Emits whatever is still held back (an incomplete character decodes to U+FFFD, as a full decode would)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self.token_ids):
            return ""
        emitted = self._decode(self.token_ids[self._prefix:self._read])
        window = self._decode(self.token_ids[self._prefix:])
        if not final and (len(window) <= len(emitted) or window.endswith(_REPLACEMENT)):
            return ""  # incomplete character (or nothing visible yet): wait for more tokens
        # Window text must extend the already emitted text; a decoder that rewrites earlier characters would break
        # this, byte-level BPE never does.
        delta = window[len(emitted):]
        self._prefix, self._read = self._read, len(self.token_ids)
        return delta
