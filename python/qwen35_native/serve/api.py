"""The OpenAI endpoints on an :class:`EngineLoop`: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Each handler parses the body (``protocol.py``), submits one job to the engine loop and returns either a
:class:`JSONResponse` or a :class:`StreamResponse` whose chunks the HTTP layer sends as server-sent events.
Closing a stream early (the client went away) cancels the job, which frees its cache at the next step.

Choices are numbered as vLLM numbers them: prompt ``i``'s sample ``j`` of ``n`` is choice ``i * n + j``.

Tests: tests/engine/test_serve.py, test_serve_chat.py; tests/parallel/test_llm_tp.py (two ranks).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from ..chat.reasoning import _partial_suffix
from ..chat.tool_call_stream import ToolCallStream
from ..engine.chat_stream import chat_deltas, chat_response, open_final_message
from .engine_loop import EngineLoop, Job
from .protocol import ChatRequest, CompletionRequest, RequestError, expect_type, parse_chat, parse_completion
from .responses import (
    TokenTexts,
    chat_choice,
    chat_finish_reason,
    chat_logprobs,
    completion_logprobs,
    merge_completion_logprobs,
    new_id,
    now,
    prompt_logprobs,
    usage,
)
from .tool_choice import apply_forced

TOOL_CALL_START = "<tool_call>"


@dataclass
class JSONResponse:
    status: int
    body: dict[str, Any]


class StreamResponse:
    """The chunks of a streamed response. ``close()`` (whether or not iteration started) cancels the job unless
    every chunk was taken."""

    def __init__(self, chunks: Iterator[dict[str, Any]], cancel):
        self._chunks, self._cancel, self._done = chunks, cancel, False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._chunks
        self._done = True

    def close(self) -> None:
        self._chunks.close()
        if not self._done:
            self._cancel()


def as_request_error(kind: str, error: Exception) -> RequestError:
    """A job's failure as the error the client gets: bad input is a 400, anything else the server's fault."""
    if isinstance(error, RequestError):
        return error
    if kind == "error" and isinstance(error, (ValueError, TypeError, FileNotFoundError, jinja2.TemplateError)):
        return RequestError(str(error))  # raised while preparing the prompt: the request's content
    return RequestError(f"{type(error).__name__}: {error}", status=500, kind="internal_server_error")


class OpenAIServing:
    def __init__(self, loop: EngineLoop, model_name: str, tokenizer, max_model_len: int):
        self.loop, self.model_name, self.tokenizer = loop, model_name, tokenizer
        self.max_model_len = max_model_len
        self.texts = TokenTexts(tokenizer)

    def metrics_text(self) -> str:
        return self.loop.metrics.render(self.loop.llm.engine)

    def models(self) -> JSONResponse:
        return JSONResponse(200, {"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": now(), "owned_by": "qwen35_native",
             "root": self.model_name, "max_model_len": self.max_model_len}]})

    def _check_model(self, body: Mapping[str, Any]) -> None:
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise RequestError(f"The model `{model}` does not exist (this server serves `{self.model_name}`).",
                               "model", 404, "not_found_error")

    # ------------------------------------------------------------------------------------------------------------
    def _started(self, job: Job) -> list:
        kind, payload = self.loop.next_event(job)
        if kind != "started":
            raise as_request_error(kind, payload)
        return payload

    def _deltas(self, job: Job):
        """The job's deltas as they come; returns (StopIteration value) its outputs."""
        while True:
            kind, payload = self.loop.next_event(job)
            if kind == "delta":
                yield payload
            elif kind == "done":
                return payload
            else:
                raise as_request_error(kind, payload)

    def _outputs(self, job: Job) -> list:
        deltas = self._deltas(job)
        while True:
            try:
                next(deltas)
            except StopIteration as stop:
                return stop.value

    def _streamed(self, job: Job, chunks: Iterator[dict[str, Any]]) -> StreamResponse:
        return StreamResponse(chunks, lambda: self.loop.cancel(job))

    # ------------------------------------------------------------------------------------------------------------
    def completions(self, body: Mapping[str, Any]) -> JSONResponse | StreamResponse:
        self._check_model(body)
        req = parse_completion(body)
        if req.options.stream and req.options.echo and req.options.logprobs is not None:
            raise RequestError("echo with logprobs is not supported with stream=true; send stream=false", "echo")

        def prepare(llm):
            return [llm.prompts.prepare(p) for p in req.prompts], [req.params] * len(req.prompts)

        job = self.loop.submit(prepare)
        requests = self._started(job)
        if req.options.stream:
            return self._streamed(job, self._completion_stream(job, req, requests))
        return JSONResponse(200, self._completion_body(req, self._outputs(job)))

    def _prompt_text(self, prompt: str | None, prompt_ids: list[int]) -> str:
        return prompt if prompt is not None else self.tokenizer.decode(prompt_ids, skip_special_tokens=False)

    def _completion_body(self, req: CompletionRequest, outputs: list) -> dict[str, Any]:
        opts, n = req.options, req.params.n
        choices, generated = [], 0
        for i, out in enumerate(outputs):
            prompt_text = self._prompt_text(out.prompt, out.prompt_token_ids) if opts.echo else ""
            for o in out.outputs:
                ids, text, entries = (([], "", []) if opts.drop_output else (o.token_ids, o.text, o.logprobs or []))
                generated += len(ids)
                logprobs = None
                if opts.logprobs is not None:
                    logprobs = completion_logprobs(self.texts, ids, entries, len(prompt_text))
                    if opts.echo:
                        scored = completion_logprobs(self.texts, out.prompt_token_ids, out.prompt_logprobs or [])
                        logprobs = merge_completion_logprobs(scored, logprobs)
                choice = {"index": i * n + o.index, "text": prompt_text + text, "logprobs": logprobs,
                          "finish_reason": "length" if opts.drop_output else o.finish_reason,
                          "stop_reason": None if opts.drop_output else o.stop_reason}
                if opts.return_token_ids:
                    choice.update(prompt_token_ids=list(out.prompt_token_ids), token_ids=list(ids))
                if opts.prompt_logprobs:
                    choice["prompt_logprobs"] = prompt_logprobs(self.texts, out.prompt_token_ids,
                                                                out.prompt_logprobs or [])
                choices.append(choice)
        prompt_tokens = sum(len(out.prompt_token_ids) for out in outputs)
        return {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": self.model_name,
                "choices": sorted(choices, key=lambda c: c["index"]), "usage": usage(prompt_tokens, generated)}

    def _completion_stream(self, job: Job, req: CompletionRequest, requests: list) -> Iterator[dict[str, Any]]:
        opts, n = req.options, req.params.n
        head = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": self.model_name}
        offsets: dict[int, int] = {}
        generated = 0
        for d in self._deltas(job):
            index = d.prompt_index * n + d.sample_index
            text, ids, entries = ("", [], []) if opts.drop_output else (d.text or "", d.token_ids, d.logprobs or [])
            first = index not in offsets
            if first:
                offsets[index] = 0
                if opts.echo:
                    r = requests[d.prompt_index]
                    text = self._prompt_text(r.prompt, r.prompt_ids) + text
            generated += len(ids)
            logprobs = None
            if opts.logprobs is not None:
                logprobs = completion_logprobs(self.texts, ids, entries, offsets[index])
                offsets[index] += sum(len(t) for t in logprobs["tokens"])
            finish = ("length" if opts.drop_output else d.finish_reason) if d.finished else None
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None}
            if opts.return_token_ids:
                choice["token_ids"] = list(ids)
                if first:
                    choice["prompt_token_ids"] = list(requests[d.prompt_index].prompt_ids)
            if text or logprobs and logprobs["tokens"] or finish or opts.return_token_ids and (ids or first):
                yield {**head, "choices": [choice]}
        if opts.include_usage:
            yield {**head, "choices": [], "usage": usage(sum(len(r.prompt_ids) for r in requests), generated)}

    # ------------------------------------------------------------------------------------------------------------
    def tokenize(self, body: Mapping[str, Any]) -> JSONResponse:
        """vLLM's ``POST /tokenize``: a ``prompt`` (``add_special_tokens``, default true) or chat ``messages``
        (rendered as ``/v1/chat/completions`` renders them; text only) -> ``{"count", "max_model_len", "tokens"}``."""
        self._check_model(body)
        if ("prompt" in body) == ("messages" in body):
            raise RequestError("give either 'prompt' or 'messages'", "prompt")
        if "prompt" in body:
            if not isinstance(body["prompt"], str):
                raise RequestError(f"'prompt' must be a string, got {body['prompt']!r}"[:300], "prompt")
            add = expect_type(body.get("add_special_tokens", True), bool, "add_special_tokens", "a boolean")
            tokens = self.tokenizer.encode(body["prompt"], add_special_tokens=add)
        else:
            req = parse_chat({name: body.get(name) for name in ("messages", "tools", "chat_template_kwargs",
                                                                "add_generation_prompt", "continue_final_message")
                              if body.get(name) is not None})
            if any(isinstance(m.get("content"), list) and any(p.get("type") != "text" for p in m["content"])
                   for m in req.messages):
                raise RequestError("/tokenize takes text messages only (image tokens depend on the image's size)",
                                   "messages")
            kwargs = dict(req.options.template_kwargs)
            open_last = kwargs.pop("continue_final_message")
            try:
                text = self.tokenizer.apply_chat_template(req.messages, tools=req.options.tools, **kwargs)
                text = open_final_message(text, req.messages) if open_last else text
            except (ValueError, TypeError, jinja2.TemplateError) as e:
                raise RequestError(str(e), "messages") from None
            tokens = self.tokenizer.encode(text, add_special_tokens=False)
        return JSONResponse(200, {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens})

    def detokenize(self, body: Mapping[str, Any]) -> JSONResponse:
        """vLLM's ``POST /detokenize``: ``tokens`` -> ``{"prompt": text}`` (special tokens kept)."""
        self._check_model(body)
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                   for t in tokens):
            raise RequestError(f"'tokens' must be a list of token ids, got {tokens!r}"[:300], "tokens")
        return JSONResponse(200, {"prompt": self.tokenizer.decode(tokens, skip_special_tokens=False)})

    def chat(self, body: Mapping[str, Any]) -> JSONResponse | StreamResponse:
        self._check_model(body)
        req = parse_chat(body)
        opened: list[bool] = []

        def prepare(llm):
            item, opens_think = llm.prepare_chat(req.messages, tools=req.options.tools, **req.options.template_kwargs)
            opened.append(opens_think)
            return [item], [req.params], opened

        job = self.loop.submit(prepare)
        requests = self._started(job)
        if req.options.stream:
            return self._streamed(job, self._chat_stream(job, req, requests, opened))
        out = self._outputs(job)[0]
        forced = req.options.forced_tools
        reply = chat_response(out, opened[0], None if forced else req.options.tools)
        if forced is not None:
            for c in reply.outputs:
                apply_forced(c, forced)
        named = forced is not None and forced.name is not None
        choices = [chat_choice(c, c.index, self.texts, req.options.logprobs, named) for c in reply.outputs]
        body = {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": self.model_name,
                "choices": choices,
                "usage": usage(len(out.prompt_token_ids), sum(len(c.token_ids) for c in reply.outputs))}
        if req.options.prompt_logprobs:
            body["prompt_logprobs"] = prompt_logprobs(self.texts, out.prompt_token_ids, out.prompt_logprobs or [])
        if req.options.return_token_ids:
            body["prompt_token_ids"] = list(out.prompt_token_ids)
            for choice, c in zip(choices, reply.outputs):
                choice["token_ids"] = list(c.token_ids)
        return JSONResponse(200, body)

    def _chat_stream(self, job: Job, req: ChatRequest, requests: list, opened: list[bool]):
        opts = req.options
        head = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": now(),
                "model": self.model_name}
        answers: dict[int, AnswerStream] = {}
        tool_streams: dict[int, ToolCallStream] = {}
        generated = 0
        forced = opts.forced_tools
        for d in chat_deltas(self._deltas(job), requests, opened, None if forced else opts.tools):
            index = d.sample_index
            if index not in answers:  # a forced call's JSON answer is held back whole: the calls go out parsed
                answers[index] = AnswerStream(hold_tool_calls=opts.tools is not None, hold_all=forced is not None)
                tool_streams[index] = ToolCallStream(opts.tools)
                start = {**head, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None}]}
                if opts.return_token_ids:
                    start["prompt_token_ids"] = list(requests[0].prompt_ids)
                yield start
            generated += len(d.token_ids)
            delta: dict[str, Any] = {}
            if d.reasoning:
                delta["reasoning_content"] = d.reasoning
            answer, tools = answers[index], tool_streams[index]
            content = answer.feed(d.text, final=d.finished)
            calls = tools.feed(answer.held[len(tools.text):])   # each call as it is written
            finish = None
            if d.finished:
                reply = d.response
                if forced is not None:
                    apply_forced(reply, forced)
                content += answer.remainder(reply.text)
                streamed = len(tools.calls)  # calls the parse found that the stream did not (forced ones): whole
                calls += [{"index": k, **call.to_openai()} for k, call in enumerate(reply.tool_calls) if k >= streamed]
                finish = chat_finish_reason(reply, forced is not None and forced.name is not None)
            if calls:
                delta["tool_calls"] = calls
            if content:
                delta["content"] = content
            logprobs = None if opts.logprobs is None or not d.logprobs else \
                chat_logprobs(self.texts, d.logprobs, opts.logprobs)
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            if opts.return_token_ids:
                choice["token_ids"] = list(d.token_ids)
            if delta or logprobs or finish or opts.return_token_ids and d.token_ids:
                yield {**head, "choices": [choice]}
        if opts.include_usage:
            yield {**head, "choices": [], "usage": usage(len(requests[0].prompt_ids), generated)}


class AnswerStream:
    """The answer text of a streamed chat reply as it may be sent: with tools, everything from the first
    ``<tool_call>`` on is held back (``held``: the calls go out parsed, as tool-call deltas), and so is a possible
    partial tag."""

    def __init__(self, hold_tool_calls: bool, hold_all: bool = False):
        self.hold = hold_tool_calls
        self.hold_all = hold_all  # a forced tool call: nothing goes out before the reply is parsed
        self.sent = ""
        self.held = ""  # the text from the first <tool_call> on (the tool-call stream parses it)
        self._pending = ""
        self._stopped = False

    def feed(self, piece: str, final: bool = False) -> str:
        if self._stopped:
            self.held += piece
            return ""
        if self.hold_all:
            return ""
        self._pending += piece
        start = self._pending.find(TOOL_CALL_START) if self.hold else -1
        if start >= 0:
            out, self._stopped, self.held, self._pending = self._pending[:start], True, self._pending[start:], ""
        else:
            keep = 0 if final or not self.hold else _partial_suffix(self._pending, TOOL_CALL_START)
            out, self._pending = self._pending[:len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        self.sent += out
        return out

    def remainder(self, final_text: str) -> str:
        """What the parsed reply's text adds to what was sent (text after the tool calls), if it extends it."""
        return final_text[len(self.sent):] if final_text.startswith(self.sent) else ""
