"""Engine outputs -> OpenAI response objects: completion and chat choices, their logprobs, usage.

Logprobs are the engine's raw ``log_softmax`` values (before penalties and temperature, as vLLM's default). A
token's text is its id decoded alone (special tokens kept), so a character split over several byte-level tokens
shows as replacement characters in ``tokens`` / ``token`` (its ``bytes`` are those of that text), as in vLLM.
JSON has no infinity: a logprob of -inf is sent as -9999.0 (vLLM's choice).

Tests: tests/engine/test_serve.py, test_serve_chat.py; tests/parallel/test_llm_tp.py (two ranks).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..engine.outputs import ChatCompletion, TokenLogprob

MIN_LOGPROB = -9999.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def _lp(value: float) -> float:
    return value if math.isfinite(value) else MIN_LOGPROB


class TokenTexts:
    """Token id -> its text alone, cached (the same ids recur across requests)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            if len(self._cache) < 1 << 20:
                self._cache[token_id] = text
        return text


def completion_logprobs(texts: TokenTexts, token_ids: Sequence[int], entries: Sequence[TokenLogprob | None],
                        text_offset: int = 0) -> dict[str, Any]:
    """The legacy completions form: parallel lists ``tokens``, ``token_logprobs``, ``top_logprobs`` (a dict token
    text -> logprob, the sampled token always included), ``text_offset`` (character offsets from ``text_offset``).
    An entry of None (a prompt's first token) has logprob None and top None."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token_id, entry in zip(token_ids, entries):
        text = texts(token_id)
        out["tokens"].append(text)
        out["text_offset"].append(text_offset)
        text_offset += len(text)
        if entry is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(_lp(entry.logprob))
        top = {texts(t): _lp(lp) for t, lp in entry.top}
        top.setdefault(text, _lp(entry.logprob))
        out["top_logprobs"].append(top)
    return out


def prompt_logprobs(texts: TokenTexts, token_ids: Sequence[int],
                    entries: Sequence[TokenLogprob | None]) -> list[dict[str, Any] | None]:
    """vLLM's ``prompt_logprobs`` form: per prompt token, None for the first, else ``{token id: {"logprob", "rank",
    "decoded_token"}}`` for the N most likely tokens and the prompt's own."""
    out: list[dict[str, Any] | None] = []
    for token_id, entry in zip(token_ids, entries):
        if entry is None:
            out.append(None)
            continue
        top = {str(t): {"logprob": _lp(lp), "rank": k + 1, "decoded_token": texts(t)}
               for k, (t, lp) in enumerate(entry.top)}
        top.setdefault(str(token_id), {"logprob": _lp(entry.logprob), "rank": entry.rank,
                                       "decoded_token": texts(token_id)})
        out.append(top)
    return out


def merge_completion_logprobs(first: dict[str, list], second: dict[str, list]) -> dict[str, list]:
    return {key: first[key] + second[key] for key in first}


def chat_logprobs(texts: TokenTexts, entries: Sequence[TokenLogprob], top: int) -> dict[str, Any]:
    """The chat form: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}``."""
    def item(token_id: int, logprob: float) -> dict[str, Any]:
        text = texts(token_id)
        return {"token": text, "logprob": _lp(logprob), "bytes": list(text.encode("utf-8"))}

    return {"content": [{**item(e.token_id, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top[:top]]}
                        for e in entries]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_finish_reason(reply: ChatCompletion, named_choice: bool = False) -> str | None:
    """OpenAI's "tool_calls" when the reply ended by itself with tool calls, except for a call forced by a named
    tool_choice (OpenAI and vLLM say "stop" then)."""
    called = reply.tool_calls and reply.finish_reason == "stop" and not named_choice
    return "tool_calls" if called else reply.finish_reason


def chat_message(reply: ChatCompletion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text if reply.text or not reply.tool_calls
                               else None, "reasoning_content": reply.reasoning}
    if reply.tool_calls:
        message["tool_calls"] = [call.to_openai() for call in reply.tool_calls]
    return message


def chat_choice(reply: ChatCompletion, index: int, texts: TokenTexts, top: int | None,
                named_choice: bool = False) -> dict[str, Any]:
    return {"index": index, "message": chat_message(reply),
            "logprobs": None if top is None or reply.logprobs is None else chat_logprobs(texts, reply.logprobs, top),
            "finish_reason": chat_finish_reason(reply, named_choice)}
