"""What ``LLM.generate`` and ``LLM.chat`` return, and what their streams yield.

- :class:`RequestOutput`: one prompt; ``.outputs`` holds one :class:`CompletionOutput` per sample (``n``), and
  ``.text`` / ``.token_ids`` / ``.finish_reason`` / ``.logprobs`` are those of the first sample.
- :class:`GenerationDelta`: one streamed piece of one sample (the tokens of one engine step and their new text).
- :class:`ChatResponse` / :class:`ChatDelta`: the same for ``chat``, with the reply split into reasoning, answer text
  and tool calls (``parse_chat_output``).
Without tokenizer files the engine still generates from token ids; reading ``.text`` then raises a ``ValueError``
that says so.

Tests: tests/engine/test_generate.py, test_chat_llm.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..chat import ChatOutput, ToolCall

NO_TOKENIZER = ("qwen35_native: this model was loaded without tokenizer files (no tokenizer.json), so outputs carry "
                "only .token_ids; load a checkpoint with a tokenizer to get .text")


@dataclass
class TokenLogprob:
    """Raw log-probabilities (``log_softmax`` of the model's logits, before penalties and temperature) at one
    generated position: the sampled token's, its rank (1 = most likely), and the ``logprobs`` most likely tokens."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class RequestMetrics:
    """Wall-clock times (``time.perf_counter``) of one request."""

    arrival_time: float
    first_token_time: float | None = None  # when the first sample's first token was sampled
    finish_time: float | None = None  # when the last sample finished

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time


@dataclass
class CompletionOutput:
    index: int  # sample index in [0, n)
    token_ids: list[int]
    finish_reason: str | None  # "stop" (stop token or string), "length" (max_tokens or context full)
    stop_reason: int | str | None = None  # the stop token id (stop_token_ids) or stop string that ended it
    logprobs: list[TokenLogprob] | None = None  # one entry per generated token when ``logprobs`` was requested
    _text: str | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        if self._text is None:
            raise ValueError(NO_TOKENIZER)
        return self._text

    def __repr__(self) -> str:
        text = repr(self._text) if self._text is not None else "<no tokenizer>"
        return (f"CompletionOutput(index={self.index}, text={text}, token_ids={self.token_ids}, "
                f"finish_reason={self.finish_reason!r})")


@dataclass
class RequestOutput:
    prompt: str | None  # the prompt text (None when the prompt was given as token ids)
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    metrics: RequestMetrics
    # ``prompt_logprobs``: per prompt token, its logprob given the tokens before it (None for the first token)
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def logprobs(self) -> list[TokenLogprob] | None:
        return self.outputs[0].logprobs


@dataclass
class GenerationDelta:
    """New tokens of one sample since the previous delta. ``text`` is the newly completed text (possibly empty:
    incomplete UTF-8 characters and possible starts of a stop string are held back); None without a tokenizer."""

    prompt_index: int  # position of the prompt in the ``generate`` call
    sample_index: int  # in [0, n)
    token_ids: list[int]
    text: str | None
    finish_reason: str | None = None  # set on the sample's last delta
    logprobs: list[TokenLogprob] | None = None
    num_prompt_tokens: int = 0
    metrics: RequestMetrics | None = field(default=None, repr=False)  # the request's (live) timings

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class ChatCompletion:
    """One sample of a chat reply, parsed."""

    index: int
    text: str  # the answer, without the think block and tool-call markup
    reasoning: str | None  # the think block's content (None when the reply had none)
    tool_calls: list[ToolCall]
    token_ids: list[int]
    finish_reason: str | None
    raw_text: str  # the detokenized reply as generated
    logprobs: list[TokenLogprob] | None = None

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation for the next turn."""
        return ChatOutput(self.text, self.reasoning, self.tool_calls).to_message()


@dataclass
class ChatResponse:
    """One conversation's reply: ``.text``, ``.reasoning``, ``.tool_calls``, ``.token_ids`` of the first sample;
    ``.outputs`` has every sample (``n``)."""

    prompt: str  # the rendered chat prompt
    prompt_token_ids: list[int]
    outputs: list[ChatCompletion]
    metrics: RequestMetrics

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def reasoning(self) -> str | None:
        return self.outputs[0].reasoning

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.outputs[0].tool_calls

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    def to_message(self) -> dict[str, Any]:
        return self.outputs[0].to_message()


@dataclass
class ChatDelta:
    """New text of one chat sample, already split: ``reasoning`` (inside the think block) and ``text`` (the
    answer). The split while streaming follows the think tags as they arrive; the final :class:`ChatResponse`
    (``response``, on the sample's last delta) is parsed from the whole reply and is authoritative."""

    conversation_index: int
    sample_index: int
    token_ids: list[int]
    reasoning: str
    text: str
    finish_reason: str | None = None
    response: ChatCompletion | None = None
    num_prompt_tokens: int = 0
    metrics: RequestMetrics | None = field(default=None, repr=False)
    logprobs: list[TokenLogprob] | None = None  # of ``token_ids``, when ``logprobs`` was requested

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
