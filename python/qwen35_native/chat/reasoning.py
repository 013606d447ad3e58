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
