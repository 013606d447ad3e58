"""OpenAI request bodies -> what the engine needs: prompts, ``SamplingParams`` and the response options.

Fields follow the OpenAI API and vLLM's extensions of it (``top_k``, ``min_p``, ``repetition_penalty``,
``min_tokens``, ``ignore_eos``, ``stop_token_ids``, ``skip_special_tokens``, ``include_stop_str_in_output``,
``allowed_token_ids``, ``chat_template_kwargs``, ``return_token_ids``, ``structured_outputs`` and the older
``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar``; OpenAI's ``response_format``). Unset
sampling fields stay unset, so the checkpoint's ``generation_config.json`` fills them, as in ``LLM.generate``.
``tool_choice`` "required" or a named function constrains the reply (tool_choice.py). Fields we cannot honour are
refused when set to anything but their neutral value (``suffix``, ``best_of`` other than ``n``, ``functions``),
rather than ignored; other unknown fields (``user``, ``metadata``, ...) are ignored, as vLLM does.

Tests: tests/engine/test_serve.py, test_serve_chat.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.sampling_params import SamplingParams
from ..engine.structured import StructuredOutputs
from .tool_choice import ForcedTools, forced_tools

MAX_LOGPROBS = 20  # OpenAI's limit for chat top_logprobs; vLLM's default cap for completions logprobs
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's (and vLLM's) default for /v1/completions

# vLLM extensions passed to SamplingParams as they are (validated there)
_EXTRA_SAMPLING = ("top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
                   "skip_special_tokens", "include_stop_str_in_output", "allowed_token_ids")
# fields that change what the model must produce and that the engine cannot do yet
_UNSUPPORTED = ("functions", "function_call", "prompt_embeds")
# vLLM's older spellings of structured outputs -> StructuredOutputs fields
_GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, ``param`` the offending field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass
class Options:
    """What shapes the response rather than the sampling."""

    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts
    logprobs: int | None = None  # completions: top-N per token; chat: top_logprobs (with logprobs=true)
    echo: bool = False  # completions: the prompt text (and its logprobs) before the completion
    drop_output: bool = False  # completions max_tokens=0 with echo: score the prompt, return no new tokens
    return_token_ids: bool = False  # vLLM's extension: the prompt's and the output's token ids in the response
    prompt_logprobs: bool = False  # vLLM's extension: the prompt tokens' logprobs in the (non-streamed) response
    tools: list | None = None
    forced_tools: ForcedTools | None = None  # tool_choice "required" or a named function (tool_choice.py)
    template_kwargs: dict = field(default_factory=dict)


def expect_type(value: Any, kind: type | tuple, name: str, what: str) -> Any:
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise RequestError(f"'{name}' must be {what}, got {value!r}", name)
    return value


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for name in _UNSUPPORTED:
        if body.get(name) not in (None, False):
            raise RequestError(f"'{name}' is not supported by qwen35_native", name)
    n = body.get("n", 1)
    if body.get("best_of") not in (None, n):
        raise RequestError(f"'best_of' must equal 'n' ({n}) or be left out: qwen35_native returns every sample",
                           "best_of")


def _stream_options(body: Mapping[str, Any], options: Options) -> None:
    options.stream = bool(expect_type(body.get("stream", False), bool, "stream", "a boolean"))
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, Mapping):
            raise RequestError(f"'stream_options' must be an object, got {so!r}", "stream_options")
        if not options.stream:
            raise RequestError("'stream_options' is only allowed with stream=true", "stream_options")
        options.include_usage = bool(expect_type(so.get("include_usage", False), bool,
                                                 "stream_options.include_usage", "a boolean"))
    options.return_token_ids = bool(expect_type(body.get("return_token_ids", False), bool, "return_token_ids",
                                                "a boolean"))
    options.prompt_logprobs = body.get("prompt_logprobs") is not None
    if options.prompt_logprobs and options.stream:
        raise RequestError("'prompt_logprobs' is not supported with stream=true; send stream=false", "prompt_logprobs")


def sampling_params(body: Mapping[str, Any], max_tokens: int | None, logprobs: int | None,
                    prompt_logprobs: int | None = None) -> SamplingParams:
    """The request's SamplingParams; a value SamplingParams refuses becomes a RequestError naming the field."""
    _refuse_unsupported(body)
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "logprobs": logprobs, "prompt_logprobs": prompt_logprobs}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop", "n"):
        if body.get(name) is not None:
            kwargs[name] = body[name]
    for name in _EXTRA_SAMPLING:
        if body.get(name) is not None:
            kwargs[name] = body[name]
    asked = _logprobs_count(body.get("prompt_logprobs"), "prompt_logprobs")
    if asked is not None:  # the larger of the asked number and echo's
        kwargs["prompt_logprobs"] = asked if prompt_logprobs is None else max(asked, prompt_logprobs)
    if body.get("logit_bias"):
        kwargs["logit_bias"] = _logit_bias(body["logit_bias"])
    structured = structured_outputs(body)
    if structured is not None:
        kwargs["structured_outputs"] = structured
    if isinstance(kwargs.get("stop"), list) and len(kwargs["stop"]) == 0:
        kwargs["stop"] = None
    try:
        return SamplingParams(**kwargs)
    except ValueError as e:
        message = str(e).replace("qwen35_native.SamplingParams: ", "")
        raise RequestError(message, message.split(" ", 1)[0]) from None


def structured_outputs(body: Mapping[str, Any]) -> StructuredOutputs | None:
    """``response_format`` (OpenAI: ``json_schema``, ``json_object``, ``text``), ``structured_outputs`` (vLLM: a dict
    of one of json / regex / choice / grammar / json_object) or vLLM's older ``guided_*`` fields."""
    found: list[tuple[str, dict]] = []
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, Mapping) else None
        schema = fmt.get("json_schema") if isinstance(fmt, Mapping) else None
        if kind == "json_schema" and isinstance(schema, Mapping) and isinstance(schema.get("schema"), Mapping):
            found.append(("response_format", {"json": schema["schema"]}))
        elif kind == "json_object":
            found.append(("response_format", {"json_object": True}))
        elif kind != "text":
            raise RequestError("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                               "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}, got "
                               f"{fmt!r}"[:300], "response_format")
    so = body.get("structured_outputs")
    if so is not None:
        if not isinstance(so, Mapping):
            raise RequestError(f"'structured_outputs' must be an object, got {so!r}"[:300], "structured_outputs")
        found.append(("structured_outputs", dict(so)))
    found += [(name, {field: body[name]}) for name, field in _GUIDED.items() if body.get(name) is not None]
    if not found:
        return None
    if len(found) > 1:
        raise RequestError(f"give one structured output, got {[name for name, _ in found]}", found[1][0])
    name, fields = found[0]
    try:
        return StructuredOutputs(**fields)
    except (TypeError, ValueError) as e:
        raise RequestError(str(e).replace("qwen35_native.", ""), name) from None


def _logit_bias(value: Any) -> dict[int, Any]:
    """JSON object keys are strings: {"1234": -100} -> {1234: -100}."""
    if isinstance(value, Mapping):
        out = {}
        for key, bias in value.items():
            token = int(key) if isinstance(key, str) and key.isdigit() else key
            if not isinstance(token, int) or isinstance(token, bool):
                break
            out[token] = bias
        else:
            return out
    raise RequestError(f"'logit_bias' must map token ids to numbers in [-100, 100], got {value!r}"[:300],
                       "logit_bias")


def _max_tokens(body: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RequestError(f"'{name}' must be an integer >= 0, got {value!r}", name)
    return value


def _logprobs_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LOGPROBS:
        raise RequestError(f"'{name}' must be an integer in [0, {MAX_LOGPROBS}], got {value!r}", name)
    return value


# --------------------------------------------------------------------------------------------------------------
@dataclass
class CompletionRequest:
    prompts: list  # each a string or a list of token ids
    params: SamplingParams
    options: Options


def _prompts(value: Any) -> list:
    def ids(v):
        return isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v)

    if isinstance(value, str):
        return [value]
    if ids(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) or ids(p) for p in value):
        return list(value)
    raise RequestError(f"'prompt' must be a string, a list of token ids, or a non-empty list of those, got "
                       f"{value!r}"[:300], "prompt")


def parse_completion(body: Mapping[str, Any]) -> CompletionRequest:
    """``POST /v1/completions``."""
    if body.get("suffix"):
        raise RequestError("'suffix' is not supported by qwen35_native (no fill-in-the-middle)", "suffix")
    options = Options()
    _stream_options(body, options)
    options.echo = bool(expect_type(body.get("echo", False), bool, "echo", "a boolean"))
    options.logprobs = _logprobs_count(body.get("logprobs"), "logprobs")
    max_tokens = _max_tokens(body, "max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS)
    if max_tokens == 0:
        if not options.echo:
            raise RequestError("'max_tokens' 0 is only allowed with echo=true (scoring the prompt)", "max_tokens")
        options.drop_output, max_tokens = True, 1  # one token is generated and not returned
    prompt_logprobs = options.logprobs if options.echo else None
    params = sampling_params(body, max_tokens, options.logprobs, prompt_logprobs)
    return CompletionRequest(_prompts(body.get("prompt")), params, options)


# --------------------------------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    messages: list
    params: SamplingParams
    options: Options


def _media_url(part: Mapping[str, Any], name: str) -> None:
    value = part.get(name)
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str) or not url.startswith("data:"):
        raise RequestError(f"an '{part.get('type')}' content part must carry a data: URL (the server reads no "
                           f"local files and fetches nothing), got {str(url)[:80]!r}", "messages")


def _check_content(content: Any) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(f"a message's 'content' must be a string or a list of parts, got {content!r}"[:300],
                           "messages")
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind in ("image_url", "image"):
            _media_url(part, kind)
            continue
        raise RequestError(f"content parts must be {{'type': 'text', 'text': ...}} or {{'type': 'image_url', "
                           f"'image_url': {{'url': 'data:...'}}}}, got {str(part)[:200]}", "messages")


def _message(m: Any) -> dict[str, Any]:
    """A copy the chat template can read: tool-call arguments given as JSON strings (OpenAI's form) become dicts."""
    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
        raise RequestError(f"each message must be an object with a 'role', got {m!r}"[:300], "messages")
    _check_content(m.get("content"))
    out = dict(m)
    calls = m.get("tool_calls")
    if calls:
        converted = []
        for call in calls:
            fn = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise RequestError(f"a tool call must be {{'type': 'function', 'function': {{'name': ..., "
                                   f"'arguments': ...}}}}, got {call!r}"[:300], "messages")
            args = fn.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError as e:
                    raise RequestError(f"tool call arguments of '{fn['name']}' are not valid JSON: {e}",
                                       "messages") from None
            converted.append({**call, "function": {**fn, "arguments": args}})
        out["tool_calls"] = converted
    return out


def _tools(body: Mapping[str, Any]) -> tuple[list | None, ForcedTools | None]:
    """(the tools the prompt shows, the forced choice of tool_choice "required" or a named function)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is not None and choice != "none":
        if not isinstance(tools, list) or not all(isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
                                                  and isinstance(t["function"].get("name"), str) for t in tools):
            raise RequestError("'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\": ..., "
                               "\"parameters\": ...}}", "tools")
        tools = list(tools) or None
    else:  # as vLLM: tool_choice none keeps the tools out of the prompt
        tools = None
    try:
        return tools, forced_tools(choice, tools)
    except ValueError as e:
        raise RequestError(str(e), "tool_choice") from None


def parse_chat(body: Mapping[str, Any]) -> ChatRequest:
    """``POST /v1/chat/completions``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of messages", "messages")
    messages = [_message(m) for m in messages]
    options = Options()
    _stream_options(body, options)
    if expect_type(body.get("logprobs", False), bool, "logprobs", "a boolean"):
        options.logprobs = _logprobs_count(body.get("top_logprobs"), "top_logprobs") or 0
    elif body.get("top_logprobs") is not None:
        raise RequestError("'top_logprobs' needs logprobs=true", "top_logprobs")
    max_tokens = _max_tokens(body, "max_completion_tokens", None)
    max_tokens = _max_tokens(body, "max_tokens", None) if max_tokens is None else max_tokens
    if max_tokens == 0:
        raise RequestError("'max_tokens' must be >= 1", "max_tokens")
    options.tools, options.forced_tools = _tools(body)
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise RequestError(f"'chat_template_kwargs' must be an object, got {kwargs!r}", "chat_template_kwargs")
    reserved = sorted(set(kwargs) & {"tools", "chat_template", "add_generation_prompt", "continue_final_message",
                                     "conversation", "messages"})
    if reserved:
        raise RequestError(f"'chat_template_kwargs' must not set {reserved}: the server sets them",
                           "chat_template_kwargs")
    options.template_kwargs = dict(kwargs)
    for name, default in (("add_generation_prompt", True), ("continue_final_message", False)):  # vLLM's
        options.template_kwargs[name] = bool(expect_type(body.get(name, default), bool, name, "a boolean"))
    if options.template_kwargs["continue_final_message"] and options.template_kwargs["add_generation_prompt"]:
        raise RequestError("'continue_final_message' needs 'add_generation_prompt': false", "continue_final_message")
    params = sampling_params(body, max_tokens, options.logprobs)
    if options.forced_tools is not None:
        if params.structured_outputs is not None:
            raise RequestError("a forced 'tool_choice' constrains the reply already: leave out 'response_format', "
                               "'structured_outputs' and 'guided_*'", "tool_choice")
        params = dataclasses.replace(params, structured_outputs=options.forced_tools.structured_outputs())
    return ChatRequest(messages, params, options)
