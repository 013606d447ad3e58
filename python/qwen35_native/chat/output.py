"""One parsed assistant reply: reasoning, answer text and tool calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .reasoning import split_reasoning
from .tool_calls import ToolCall, parse_tool_calls


@dataclass
class ChatOutput:
    text: str  # the answer, without think block and tool-call markup
    reasoning: str | None = None  # None when the reply had no think block
    tool_calls: list[ToolCall] = field(default_factory=list)

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation for the next turn (the template drops the
        reasoning of turns before the last user query by itself)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [call.to_message() for call in self.tool_calls]
        return message


def parse_chat_output(text: str, prompt_opened_think: bool = False,
                      tools: Sequence[Mapping[str, Any]] | None = None) -> ChatOutput:
    """Splits the reasoning off (``split_reasoning``), then parses tool calls in the answer (calls written inside
    the think block are reasoning, not calls). ``prompt_opened_think``: ``prompt_opens_think(prompt)``."""
    reasoning, answer = split_reasoning(text, prompt_opened_think)
    answer, calls = parse_tool_calls(answer, tools)
    return ChatOutput(answer, reasoning, calls)
