"""``LLM.chat`` helpers: the conversations argument, a rendered chat left open in its last message
(``continue_final_message``), and turning completions (or a stream of them) into parsed chat replies (reasoning,
answer text, tool calls). Images and videos in messages: ``prompts.py``.

Tests: tests/engine/test_chat_llm.py, test_llm_errors.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..chat import ReasoningStream, parse_chat_output
from .outputs import ChatCompletion, ChatDelta, ChatResponse, CompletionOutput, GenerationDelta, RequestOutput


def normalize_conversations(messages: Any) -> tuple[list[list[Mapping[str, Any]]], bool]:
    """(conversations, single): one conversation (a list of message dicts) or a list of conversations."""
    if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)) and messages:
        if all(isinstance(m, Mapping) for m in messages):
            return [list(messages)], True
        if all(isinstance(c, Sequence) and not isinstance(c, (str, bytes)) and c and
               all(isinstance(m, Mapping) for m in c) for c in messages):
            return [list(c) for c in messages], False
    raise ValueError(f"qwen35_native.LLM.chat: messages must be a non-empty list of message dicts (one conversation) "
                     f"or a list of such lists, got {messages!r}")


def chat_completion(out: CompletionOutput, prompt_opened_think: bool,
                    tools: Sequence[Mapping[str, Any]] | None) -> ChatCompletion:
    parsed = parse_chat_output(out.text, prompt_opened_think, tools)
    return ChatCompletion(out.index, parsed.text, parsed.reasoning, parsed.tool_calls, out.token_ids,
                          out.finish_reason, out.text, out.logprobs)


def chat_response(out: RequestOutput, prompt_opened_think: bool,
                  tools: Sequence[Mapping[str, Any]] | None) -> ChatResponse:
    return ChatResponse(out.prompt, out.prompt_token_ids,
                        [chat_completion(o, prompt_opened_think, tools) for o in out.outputs], out.metrics)


def chat_deltas(deltas: Iterator[GenerationDelta], requests: list, opened: list[bool],
                tools: Sequence[Mapping[str, Any]] | None) -> Iterator[ChatDelta]:
    """Splits each sample's streamed text into reasoning and answer; the last delta of a sample carries the reply
    parsed from its whole text."""
    splitters: dict[tuple[int, int], ReasoningStream] = {}
    try:
        for d in deltas:
            key = (d.prompt_index, d.sample_index)
            splitter = splitters.setdefault(key, ReasoningStream(opened[d.prompt_index]))
            reasoning, text = splitter.feed(d.text or "", final=d.finished)
            response = None
            if d.finished:
                seq = requests[d.prompt_index].seqs[d.sample_index]
                out = CompletionOutput(seq.sample_index, list(seq.output_ids), seq.checker.finish_reason,
                                       seq.checker.stop_reason, seq.logprobs, seq.checker.text)
                response = chat_completion(out, opened[d.prompt_index], tools)
            yield ChatDelta(d.prompt_index, d.sample_index, d.token_ids, reasoning, text, d.finish_reason, response,
                            d.num_prompt_tokens, d.metrics, d.logprobs)
    finally:
        deltas.close()  # frees the cache of requests still running when the caller stops early


def open_final_message(text: str, conversation: Sequence[Mapping[str, Any]]) -> str:
    """The rendered chat cut right after the last message's content (found as it is rendered, stripped)."""
    content = conversation[-1].get("content") if conversation and isinstance(conversation[-1], Mapping) else None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("qwen35_native.LLM.chat: continue_final_message needs a last message with text content")
    end = text.rfind(content.strip())
    if end < 0:
        raise ValueError("qwen35_native.LLM.chat: continue_final_message: the last message's content does not "
                         "appear in the rendered chat (the template rewrites it), so it cannot be continued")
    return text[:end + len(content.strip())]
