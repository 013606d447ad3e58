"""``q35.LLM``: load a checkpoint, then ``generate`` (prompts -> completions) and ``chat`` (conversations -> parsed
replies), each optionally streaming (DESIGN.md §4).

    llm = q35.LLM("path/to/checkpoint")                      # device: CUDA when available, else the CPU
    out = llm.generate(["The capital of France is"], q35.SamplingParams(temperature=0, max_tokens=16))[0]
    out.text, out.token_ids, out.finish_reason
    reply = llm.chat([{"role": "user", "content": "Hi!"}], q35.SamplingParams.thinking(max_tokens=512))
    reply.reasoning, reply.text, reply.tool_calls
    for delta in llm.generate("Once upon a time", stream=True): print(delta.text, end="", flush=True)
    llm.chat([{"role": "user", "content": [{"type": "image", "image": "cat.jpg"}, {"type": "text", "text": "?"}]}])

The engine (``llm.engine``) batches every request continuously; ``generate`` and ``chat`` run it until their own
requests finish. They may be called from several threads at once: each call's requests join the running batch,
every engine step is taken under ``llm.engine_lock`` (by whichever waiting thread gets it first), and each call
returns its own outputs (the OpenAI server's engine thread shares the lock the same way). Under torchrun the other
ranks mirror rank 0's calls in order, so there make them from one thread.

Tensor parallelism (``tensor_parallel_size=N > 1``, ``qwen35_native.parallel``): from a plain Python process this
process becomes rank 0 and starts N-1 worker processes (stopped by ``llm.shutdown()``, ``with q35.LLM(...) as
llm``, or at exit); under ``torchrun --nproc-per-node N`` every rank runs the script and joins the world. Rank 0
schedules and samples; under torchrun, ``generate`` / ``chat`` on ranks > 0 follow rank 0's call (their own
arguments are ignored) and return rank 0's results.

Tests: tests/engine/test_generate.py, test_chat_llm.py, test_llm_errors.py; bench: bench/e2e.py.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..chat import THINK_END, Tokenizer, prompt_opens_think
from ..model import Qwen35ForCausalLM, from_pretrained
from ..model.cache import KV_BLOCK_SIZE
from .chat_stream import chat_deltas, chat_response, normalize_conversations, open_final_message
from .core import LLMEngine, Request
from .model_runner import ModelRunner, default_graph_sizes
from .outputs import ChatDelta, ChatResponse, GenerationDelta, RequestOutput
from .prompts import PreparedPrompt, PromptPreparer, media_from_messages
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sizing import plan_cache
from .spec_decode import SpeculativeConfig
from .stopping import eos_token_ids

logger = logging.getLogger("qwen35_native")

__all__ = ["LLM"]


def take_deltas(request: Request, index: int) -> Iterator[GenerationDelta]:
    """The request's updates not yet consumed, as deltas of prompt ``index`` (consumes them)."""
    while request.updates:
        u = request.updates.popleft()
        yield GenerationDelta(index, u.seq.sample_index, u.token_ids, u.text,
                              u.seq.checker.finish_reason if u.finished else None, u.logprobs,
                              len(request.prompt_ids), request.metrics)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"qwen35_native.LLM: {path} is not valid JSON: {e}") from e


def _check_tp(tensor_parallel_size: Any, moe_parallel: Any, model: Any) -> None:
    if not isinstance(tensor_parallel_size, int) or isinstance(tensor_parallel_size, bool) or \
            tensor_parallel_size < 1:
        raise ValueError(f"qwen35_native.LLM: tensor_parallel_size must be a positive integer, got "
                         f"{tensor_parallel_size!r}")
    if moe_parallel not in ("tp", "ep"):
        raise ValueError(f"qwen35_native.LLM: moe_parallel must be 'tp' or 'ep', got {moe_parallel!r}")
    if tensor_parallel_size > 1 and not isinstance(model, (str, os.PathLike)):
        raise ValueError("qwen35_native.LLM: tensor_parallel_size > 1 needs a checkpoint directory (each rank "
                         "loads its own shard), not a model object")


class LLM:
    def __init__(self, model: str | os.PathLike | Qwen35ForCausalLM, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, backend: str | None = None, tensor_parallel_size: int = 1,
                 max_num_seqs: int | None = None, max_model_len: int | None = None, block_size: int = KV_BLOCK_SIZE,
                 num_blocks: int | None = None, gpu_memory_utilization: float = 0.9,
                 max_num_batched_tokens: int | None = None, cuda_graphs: bool | None = None,
                 cuda_graph_sizes: list[int] | None = None, seed: int | None = None,
                 tokenizer: Tokenizer | bool | None = None, generation_config: Mapping[str, Any] | None = None,
                 progress: bool | None = None, moe_parallel: str = "tp",
                 speculative_config: Mapping[str, Any] | None = None, enable_prefix_caching: bool = False):
        """
        Args:
            model: a checkpoint directory, or a model already built (``q35.from_pretrained`` or random weights).
            device, dtype, backend: as ``q35.from_pretrained`` (device default: CUDA when available, else CPU).
            tensor_parallel_size: ranks of tensor parallelism (module docstring; ``qwen35_native.parallel``).
            max_num_seqs, max_model_len, block_size, num_blocks, gpu_memory_utilization, max_num_batched_tokens:
                cache and batch sizes (``engine/sizing.py``).
            cuda_graphs: decode steps in CUDA graphs: None = on for CUDA (a failed capture warns and stays
                eager), True = on (a failed capture is an error), False = off. Off on the CPU.
            cuda_graph_sizes: decode batch sizes to capture (default 1, 2, 4, 8, 16, 32, ... up to max_num_seqs).
            seed: seeds the per-request seeds drawn for requests without one (None: fresh randomness).
            tokenizer: None = load the checkpoint's tokenizer files when present; False = none; or a Tokenizer.
            generation_config: overrides the checkpoint's ``generation_config.json`` (defaults of unset fields).
            progress: progress bar while loading weights (default: when stderr is a terminal).
            moe_parallel: with tensor parallelism, ``"tp"`` splits every expert's intermediate dim across the ranks,
                ``"ep"`` splits the experts (expert parallelism).
            speculative_config: ``{"method": "mtp", "num_speculative_tokens": 1}`` drafts with the checkpoint's MTP
                head and verifies the drafts (``engine/spec_decode.py``): the same tokens, fewer steps when drafts
                are accepted. With CUDA graphs, steps where every sequence verifies drafts run in graphs
                (``engine/spec_graphs.py``).
            enable_prefix_caching: prompts that start like an earlier prompt reuse its cached KV blocks and GDN
                state instead of computing them again (``engine/prefix_cache.py``; ``max_num_seqs`` GDN state
                snapshots; ``llm.engine.prefix_stats`` counts the hits). The same tokens either way, up to the
                rounding of a prefill chunked where the cached prefix ends.
        """
        _check_tp(tensor_parallel_size, moe_parallel, model)
        if not isinstance(enable_prefix_caching, bool):
            raise TypeError(f"qwen35_native.LLM: enable_prefix_caching must be True or False, got "
                            f"{enable_prefix_caching!r}")
        speculative = SpeculativeConfig.parse(speculative_config)
        self._tp = None
        self.engine_lock = threading.RLock()  # held while a thread queues, steps or aborts requests
        try:
            self._init(model, device=device, dtype=dtype, backend=backend, tensor_parallel_size=tensor_parallel_size,
                       max_num_seqs=max_num_seqs, max_model_len=max_model_len, block_size=block_size,
                       num_blocks=num_blocks, gpu_memory_utilization=gpu_memory_utilization,
                       max_num_batched_tokens=max_num_batched_tokens, cuda_graphs=cuda_graphs,
                       cuda_graph_sizes=cuda_graph_sizes, seed=seed, tokenizer=tokenizer,
                       generation_config=generation_config, progress=progress, moe_parallel=moe_parallel,
                       speculative=speculative, prefix_caching=enable_prefix_caching)
        except BaseException:
            if self._tp is not None:  # stop the workers at once, leave the process groups
                from ..parallel.engine import abort_rank

                abort_rank(self._tp)
            raise

    def _init(self, model, *, device, dtype, backend, tensor_parallel_size, max_num_seqs, max_model_len, block_size,
              num_blocks, gpu_memory_utilization, max_num_batched_tokens, cuda_graphs, cuda_graph_sizes, seed,
              tokenizer, generation_config, progress, moe_parallel, speculative, prefix_caching):
        path = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_dir():
                raise FileNotFoundError(f"qwen35_native.LLM: model directory {str(path)!r} does not exist")
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"qwen35_native.LLM: {str(path)!r} is not a checkpoint directory (no "
                                        f"config.json)")
            if tensor_parallel_size > 1:
                from ..parallel.engine import load_rank

                self._tp, model = load_rank(str(path), tensor_parallel_size, device, dtype=dtype, backend=backend,
                                            moe_parallel=moe_parallel, progress=progress,
                                            load_mtp=speculative is not None, llm_args=dict(
                                                dtype=dtype, backend=backend, moe_parallel=moe_parallel,
                                                max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                                                block_size=block_size, num_blocks=num_blocks,
                                                gpu_memory_utilization=gpu_memory_utilization,
                                                max_num_batched_tokens=max_num_batched_tokens,
                                                cuda_graphs=cuda_graphs, cuda_graph_sizes=cuda_graph_sizes,
                                                speculative_config=None if speculative is None else vars(speculative),
                                                enable_prefix_caching=prefix_caching))
            else:
                device = torch.device(device) if device is not None else torch.device(
                    "cuda" if torch.cuda.is_available() else "cpu")
                model = from_pretrained(str(path), device=device, dtype=dtype, backend=backend, progress=progress,
                                        load_mtp=speculative is not None)
        elif isinstance(model, Qwen35ForCausalLM):
            if device is not None or dtype is not None or backend is not None:
                raise ValueError("qwen35_native.LLM: device, dtype and backend are fixed by a model passed as an "
                                 "object; pass a checkpoint directory to choose them")
        else:
            raise TypeError(f"qwen35_native.LLM: model must be a checkpoint directory or a Qwen35ForCausalLM, got "
                            f"{type(model).__name__}")
        self.model, self.path = model, path
        if speculative is not None and (model.mtp is None or not len(model.mtp.layers)):
            why = ("its config has mtp_num_hidden_layers = 0" if not model.text_config.mtp_num_hidden_layers else
                   "it was built without its MTP head (q35.from_pretrained(..., load_mtp=True))")
            raise ValueError(f"qwen35_native.LLM: speculative_config method 'mtp' needs the model's MTP head, and "
                             f"{why}")
        self.tokenizer = self._load_tokenizer(tokenizer)
        if generation_config is None and path is not None and (path / "generation_config.json").is_file():
            generation_config = _read_json(path / "generation_config.json")
        self.generation_config = dict(generation_config or {})
        graphs = cuda_graphs is not False and model.device.type == "cuda"
        plan = plan_cache(model, max_num_seqs=max_num_seqs, max_model_len=max_model_len, block_size=block_size,
                          num_blocks=num_blocks, gpu_memory_utilization=gpu_memory_utilization,
                          max_num_batched_tokens=max_num_batched_tokens, cuda_graphs=graphs, speculative=speculative,
                          prefix_caching=prefix_caching)
        if self._tp is not None:
            plan = self._tp.agree_cache_plan(plan)
        self.cache_plan = plan
        runner = ModelRunner(model, plan.num_blocks, plan.block_size, plan.max_num_seqs, plan.max_model_len,
                             cuda_graphs=cuda_graphs,
                             graph_batch_sizes=cuda_graph_sizes or default_graph_sizes(plan.max_num_seqs),
                             speculative=speculative, prefix_states=plan.prefix_states)
        if self._tp is not None:
            from ..parallel.engine import finish_rank

            runner = finish_rank(self._tp, runner)
        lookahead = speculative.num_speculative_tokens - 1 if speculative is not None else 0
        scheduler = Scheduler(plan.num_blocks, plan.block_size, plan.max_num_seqs, plan.max_num_batched_tokens,
                              lookahead=lookahead, max_model_len=plan.max_model_len, prefix_states=plan.prefix_states)
        eos = eos_token_ids(self.generation_config, self.tokenizer.eos_token_id if self.tokenizer else None)
        eos += [i for i in eos_token_ids({"eos_token_id": model.text_config.eos_token_id}) if i not in eos]
        self.engine = LLMEngine(runner, scheduler, max_model_len=plan.max_model_len, tokenizer=self.tokenizer,
                                generation_config=self.generation_config, eos_ids=eos, seed=seed)
        self.prompts = PromptPreparer(self)
        logger.info("qwen35_native: engine ready: max_model_len %d, max_num_seqs %d, %d KV blocks x %d tokens, "
                    "%d tokens per step, CUDA graphs %s, speculative decoding %s, prefix caching %s",
                    plan.max_model_len, plan.max_num_seqs, plan.num_blocks, plan.block_size,
                    plan.max_num_batched_tokens,
                    "on" if runner.graphs is not None or getattr(runner, "spec_graphs", None) is not None else "off",
                    speculative or "off", f"on ({plan.prefix_states} state snapshots)" if plan.prefix_states else "off")

    def _load_tokenizer(self, tokenizer):
        if tokenizer is False:
            return None
        if tokenizer is not None and tokenizer is not True:
            return tokenizer
        if self.path is not None and (self.path / "tokenizer.json").is_file():
            return Tokenizer.from_pretrained(self.path)
        if tokenizer is True:
            raise FileNotFoundError(f"qwen35_native.LLM: no tokenizer.json in {self.path}")
        return None

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def rank(self) -> int:
        """This process's tensor-parallel rank (0 without tensor parallelism); rank 0 owns the outputs."""
        return 0 if self._tp is None else self._tp.ctx.rank

    @property
    def tensor_parallel_size(self) -> int:
        return 1 if self._tp is None else self._tp.ctx.world_size

    def shutdown(self) -> None:
        """Ends tensor parallelism: rank 0 stops its workers (or, under torchrun, releases the other ranks); a
        torchrun rank > 0 runs rank 0's steps until rank 0 shuts down. Then the process groups are destroyed. A
        no-op without tensor parallelism; idempotent; also run at interpreter exit."""
        if self._tp is not None:
            self._tp.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def require_tokenizer(self, what: str) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(f"qwen35_native.LLM: {what} needs a tokenizer, and this model has no tokenizer files "
                             f"(tokenizer.json); pass prompts as lists of token ids")
        return self.tokenizer

    # ------------------------------------------------------------------------------------------------------------
    def _params(self, sampling_params: Any, count: int) -> list[SamplingParams | None]:
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            return [sampling_params] * count
        if isinstance(sampling_params, Sequence) and len(sampling_params) == count:
            return list(sampling_params)
        raise ValueError(f"qwen35_native.LLM: sampling_params must be None, one SamplingParams, or a list of one per "
                         f"prompt ({count}), got {sampling_params!r}")

    def add_requests(self, prompts: list[PreparedPrompt], params: list,
                     opened_think: Sequence[bool] | None = None) -> list[Request]:
        """Queues one request per prepared prompt (``self.prompts.prepare``, :meth:`prepare_chat`) and returns them;
        ``llm.engine.step()`` then advances every queued request. All or none: a bad one (checked before any runs)
        aborts those already queued. ``opened_think``: per prompt, whether it opened a think block
        (:meth:`prepare_chat`): its ``structured_outputs`` then apply after the reply's ``</think>``."""
        resolved = [self.engine.resolve(p) for p in params]
        think_end = self.tokenizer.token_to_id(THINK_END) if self.tokenizer is not None else None
        opened_think = opened_think or [False] * len(prompts)
        requests: list[Request] = []
        with self.engine_lock:
            try:
                for prompt, p, opened in zip(prompts, resolved, opened_think):
                    requests.append(self.engine.add_request(prompt.token_ids, p, prompt.text, prompt.multimodal,
                                                            grammar_after=think_end if opened else None))
            except Exception:
                self._abort(requests)
                raise
        return requests

    def _abort(self, requests: list[Request]) -> None:
        with self.engine_lock:
            for r in requests:
                self.engine.abort(r)

    def _step_until(self, done) -> None:
        """One engine step, unless ``done()`` became true while this thread waited for the lock (another thread's
        step may have finished this call's requests)."""
        with self.engine_lock:
            if not done():
                self.engine.step()

    def _run(self, requests: list[Request]) -> None:
        def done():
            return all(r.finished for r in requests)

        try:
            while not done():
                self._step_until(done)
        except BaseException:
            self._abort(requests)
            raise
        for r in requests:
            r.updates.clear()

    def generate(self, prompts: str | Sequence[int] | Mapping[str, Any] | Sequence[str | Sequence[int] | Mapping],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 stream: bool = False) -> list[RequestOutput] | Iterator[GenerationDelta]:
        """Completes each prompt (a string, a token-id list, or a dict with images / videos: ``engine/prompts.py``).
        Returns one :class:`RequestOutput` per prompt, in order; with ``stream=True`` an iterator of
        :class:`GenerationDelta` (new tokens and text of one sample, as each step produces them)."""
        if self._tp is not None:
            return self._tp.call(lambda: self._generate(prompts, sampling_params, stream), stream)
        return self._generate(prompts, sampling_params, stream)

    def _generate(self, prompts, sampling_params, stream):
        items = self.prompts.prepare_all(prompts)
        requests = self.add_requests(items, self._params(sampling_params, len(items)))
        if stream:
            return self._stream(requests)
        self._run(requests)
        return [self.engine.output(r) for r in requests]

    def _stream(self, requests: list[Request]) -> Iterator[GenerationDelta]:
        try:
            while True:
                for index, r in enumerate(requests):
                    yield from take_deltas(r, index)
                if all(r.finished for r in requests):
                    return
                self._step_until(lambda: any(r.updates for r in requests))
        finally:  # the caller stopped early (or a step failed): free what is still running
            self._abort(requests)

    # ------------------------------------------------------------------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             enable_thinking: bool = True, tools: Sequence[Mapping[str, Any]] | None = None, stream: bool = False,
             chat_template: str | None = None,
             **template_kwargs: Any) -> ChatResponse | list[ChatResponse] | Iterator[ChatDelta]:
        """Replies to one conversation (a list of message dicts) or to each of a list of conversations.

        The conversation is rendered with the checkpoint's chat template (``enable_thinking``, ``tools``, other
        template variables; ``add_generation_prompt=False, continue_final_message=True`` continues the last
        message, as in vLLM), generated from, and the reply parsed into
        reasoning (the think block), answer text and tool calls. Returns a :class:`ChatResponse` (a list of them
        for a list of conversations); with ``stream=True`` an iterator of :class:`ChatDelta`. Message contents may be
        strings or lists of parts: text, images and videos (``engine/prompts.py``).
        """
        if self._tp is not None:
            return self._tp.call(lambda: self._chat(messages, sampling_params, enable_thinking, tools, stream,
                                                    chat_template, template_kwargs), stream)
        return self._chat(messages, sampling_params, enable_thinking, tools, stream, chat_template, template_kwargs)

    def prepare_chat(self, conversation: Sequence[Mapping[str, Any]], *, enable_thinking: bool = True,
                     tools: Sequence[Mapping[str, Any]] | None = None, chat_template: str | None = None,
                     add_generation_prompt: bool = True, continue_final_message: bool = False,
                     **template_kwargs: Any) -> tuple[PreparedPrompt, bool]:
        """One conversation rendered with the chat template and turned into a prompt (vision inputs preprocessed),
        and whether the rendered prompt opened a think block (the reply then starts inside it). With
        ``continue_final_message`` the prompt ends right after the last message's content (no end of turn)."""
        tokenizer = self.require_tokenizer("chat")
        if continue_final_message and add_generation_prompt:
            raise ValueError("qwen35_native.LLM.chat: continue_final_message=True needs add_generation_prompt=False "
                             "(the reply continues the last message instead of starting a new one)")
        text = tokenizer.apply_chat_template(conversation, tools=tools, add_generation_prompt=add_generation_prompt,
                                             chat_template=chat_template, enable_thinking=enable_thinking,
                                             **template_kwargs)
        if continue_final_message:
            text = open_final_message(text, conversation)
        media = media_from_messages(conversation)
        prompt = {"prompt": text, "multi_modal_data": media} if media["image"] or media["video"] else text
        item = self.prompts.prepare(prompt, add_special_tokens=False)
        item.text = text  # the rendered conversation (before vision tokens are spelled out)
        return item, prompt_opens_think(text)

    def _chat(self, messages, sampling_params, enable_thinking, tools, stream, chat_template, template_kwargs):
        self.require_tokenizer("chat")
        conversations, single = normalize_conversations(messages)
        prepared = [self.prepare_chat(c, enable_thinking=enable_thinking, tools=tools, chat_template=chat_template,
                                      **template_kwargs) for c in conversations]
        items, opened = [p[0] for p in prepared], [p[1] for p in prepared]
        requests = self.add_requests(items, self._params(sampling_params, len(items)), opened)
        if stream:
            return chat_deltas(self._stream(requests), requests, opened, tools)
        self._run(requests)
        replies = [chat_response(self.engine.output(r), o, tools) for r, o in zip(requests, opened)]
        return replies[0] if single else replies
