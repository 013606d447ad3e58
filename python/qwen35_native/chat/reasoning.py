"""Splitting a model's output into reasoning (the think block) and the answer.

Qwen3.5 thinks inside ``<think>...</think>``. In thinking mode the chat template's generation prompt already opens
the block (``<|im_start|>assistant\\n<think>\\n``), so the output usually starts inside it and contains only the
closing tag; a model may also write the opening tag itself. Rules, on the detokenized text:
- ``</think>`` present: the text before the first one (after an opening ``<think>`` if there is one) is the
  reasoning, the rest is the answer.
- no ``</think>``, and the output opens a think block or the prompt left one open: everything after the opening
  tag is reasoning (the block never closed, e.g. the length limit hit while thinking) and the answer is empty.
- otherwise there is no reasoning (None) and everything is the answer.
Reasoning is stripped of surrounding whitespace; the answer loses the newlines that follow ``</think>``.
"""

from __future__ import annotations

THINK_START = "<think>"
THINK_END = "</think>"


def prompt_opens_think(prompt: str, start: str = THINK_START, end: str = THINK_END) -> bool:
    """True when ``prompt`` (the rendered chat prompt) ends inside an unclosed think block."""
    return prompt.rfind(start) > prompt.rfind(end)


def split_reasoning(text: str, prompt_opened_think: bool = False, start: str = THINK_START,
                    end: str = THINK_END) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a model output; see the module docstring for the rules."""
    head = text.lstrip()
    opened = head.startswith(start)
    if opened:
        text = head[len(start):]
    if end in text:
        reasoning, _, answer = text.partition(end)
        return reasoning.strip(), answer.lstrip("\n")
    if opened or prompt_opened_think:
        return text.strip(), ""
    return None, text


class ReasoningStream:
    """Splits streamed reply text into (reasoning, answer) pieces as it arrives, for display. Inside a think block
    (opened by the prompt or by the reply's first non-blank text) text is reasoning until ``</think>``; then it is
    answer text, without the newlines that follow the tag. A possible partial tag at the end of a piece is held
    back until the next one. The split of the whole reply by :func:`split_reasoning` is authoritative (it also
    treats text before a ``</think>`` that no open tag preceded as reasoning, which a stream cannot know early)."""

    def __init__(self, prompt_opened_think: bool = False, start: str = THINK_START, end: str = THINK_END):
        self._start, self._end = start, end
        self._state = "reasoning" if prompt_opened_think else "head"  # head: before the first non-blank text
        self._buffer = ""
        self._strip_newlines = False

    def feed(self, text: str, final: bool = False) -> tuple[str, str]:
        """Returns the (reasoning, answer) text that is certain after adding ``text``; ``final`` flushes."""
        self._buffer += text
        reasoning = answer = ""
        while True:
            if self._state == "head":
                head = self._buffer.lstrip()
                if head.startswith(self._start):
                    self._buffer, self._state = head[len(self._start):], "reasoning"
                elif head and not self._start.startswith(head[:len(self._start)]) or final:
                    self._state = "answer"
                else:
                    return reasoning, answer  # only blanks or a partial "<think>" so far
            elif self._state == "reasoning":
                index = self._buffer.find(self._end)
                if index >= 0:
                    reasoning += self._buffer[:index]
                    self._buffer, self._state, self._strip_newlines = self._buffer[index + len(self._end):], \
                        "answer", True
                    continue
                keep = 0 if final else _partial_suffix(self._buffer, self._end)
                reasoning += self._buffer[:len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep:]
                return reasoning, answer
            else:
                if self._strip_newlines:
                    self._buffer = self._buffer.lstrip("\n")
                    self._strip_newlines = not self._buffer and not final
                answer += self._buffer
                self._buffer = ""
                return reasoning, answer


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
