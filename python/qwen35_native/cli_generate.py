"""``qwen35 generate`` and ``qwen35 chat``: streaming text generation from a checkpoint directory.

    qwen35 generate --model DIR --prompt "Why is the sky blue?" [--no-think] [--max-tokens 256] [--temperature 0.6]
    qwen35 generate --model DIR --image cat.jpg --prompt "What is this?"     # images go before the text
    qwen35 chat --model DIR            # interactive, multi-turn; /reset clears the history, /exit (or EOF) quits

Text prompts go through the checkpoint's chat template (as one user turn) unless ``--raw``; ``--prompt-ids`` feeds
token ids (checkpoints without tokenizer files). Output streams to stdout as it is generated; a one-line summary
(prompt tokens, generated tokens, time to first token, decode tokens/s) goes to stderr. Unset sampling flags take
the checkpoint's ``generation_config.json`` values.

Tests: tests/engine/test_cli_generate.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

_DTYPES = ("float32", "bfloat16", "float16")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (config.json, safetensors, tokenizer files)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=_DTYPES, help="model dtype (default: the checkpoint's)")
    p.add_argument("--backend", default=None, choices=["auto", "kernel", "reference"],
                   help="op backend (default auto: our CUDA kernels on CUDA, references elsewhere)")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel ranks: started as worker processes, or the torchrun world (torchrun "
                        "--nproc-per-node N -m qwen35_native.cli ... --tp N)")
    p.add_argument("--moe-parallel", default="tp", choices=["tp", "ep"],
                   help="with --tp > 1: split every expert (tp, default) or split the experts (ep)")
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the config's)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps eagerly")
    p.add_argument("--speculative-config", default=None, metavar="JSON",
                   help='speculative decoding, e.g. \'{"method": "mtp", "num_speculative_tokens": 1}\' (the '
                        'checkpoint\'s MTP head drafts; same tokens, fewer steps)')
    p.add_argument("--enable-prefix-caching", action="store_true",
                   help="reuse the cache of a prompt's earlier prefix (a chat's next turn); same tokens")
    p.add_argument("--verbose", "-v", action="store_true", help="log loading and engine details to stderr")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    g = p.add_argument_group("sampling (unset: the checkpoint's generation_config.json)")
    g.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None, help="0 = off")
    g.add_argument("--min-p", type=float, default=None)
    g.add_argument("--presence-penalty", type=float, default=None)
    g.add_argument("--frequency-penalty", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=None)
    g.add_argument("--seed", type=int, default=None, help="same seed + same prompt = same output")
    g.add_argument("--max-tokens", type=int, default=max_tokens, help=f"tokens to generate at most "
                                                                     f"(default {max_tokens})")
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--no-think", action="store_true", help="chat template with thinking off (enable_thinking=False)")
    g.add_argument("--system", default=None, help="system message of the conversation")


def add_generation_parsers(sub) -> None:
    """Registers ``generate`` and ``chat`` on an argparse subparsers object."""
    p = sub.add_parser("generate", help="generate text from a prompt, streaming")
    add_engine_args(p)
    p.add_argument("--prompt", default=None, help="prompt text (sent as one user turn of the chat template)")
    p.add_argument("--prompt-ids", default=None, help="comma-separated prompt token ids (no tokenizer needed)")
    p.add_argument("--raw", action="store_true", help="send --prompt as plain text, without the chat template")
    p.add_argument("--image", action="append", default=None, metavar="PATH",
                   help="image input, shown before the prompt text (repeatable)")
    p.add_argument("--video", action="append", default=None, metavar="PATH_OR_DIR",
                   help="video input: a directory of frame images or a .npy uint8 array [T,H,W,C] (repeatable)")
    p.add_argument("--video-fps", type=float, default=2.0,
                   help="frame rate of the --video frames (default 2.0, the rate the model samples at)")
    _add_sampling_args(p, max_tokens=256)
    p.set_defaults(func=_generate)
    p = sub.add_parser("chat", help="interactive multi-turn chat (reads stdin), streaming")
    add_engine_args(p)
    _add_sampling_args(p, max_tokens=1024)
    p.set_defaults(func=_chat)


# ----------------------------------------------------------------------------------------------------------------
def load_llm(args: argparse.Namespace):
    import qwen35_native as q35

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    dtype, spec = args.dtype, None
    if args.speculative_config is not None:
        try:
            spec = json.loads(args.speculative_config)
        except json.JSONDecodeError as e:
            raise ValueError(f"--speculative-config must be a JSON object like '{{\"method\": \"mtp\", "
                             f"\"num_speculative_tokens\": 1}}', got {args.speculative_config!r} ({e})") from e
    return q35.LLM(args.model, device=args.device, dtype=dtype, backend=args.backend, tensor_parallel_size=args.tp,
                   max_model_len=args.max_model_len, cuda_graphs=False if args.no_cuda_graphs else None,
                   moe_parallel=args.moe_parallel, speculative_config=spec,
                   enable_prefix_caching=args.enable_prefix_caching)


def _sampling(args: argparse.Namespace):
    import qwen35_native as q35

    return q35.SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                              presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                              repetition_penalty=args.repetition_penalty,
                              seed=args.seed, max_tokens=args.max_tokens, stop=args.stop)


def _summary(num_prompt: int, num_generated: int, finish_reason: str | None, metrics, llm=None) -> str:
    ttft = metrics.time_to_first_token if metrics else None
    end = metrics.finish_time if metrics and metrics.finish_time else time.perf_counter()
    decode = end - metrics.first_token_time if metrics and metrics.first_token_time else 0.0
    rate = f"{(num_generated - 1) / decode:.1f} tokens/s" if num_generated > 1 and decode > 0 else "- tokens/s"
    ttft_text = f"{ttft * 1e3:.0f} ms" if ttft is not None else "-"
    stats = llm.engine.spec_stats if llm is not None and llm.engine.speculative is not None else None
    drafts = f" | drafts accepted {stats.num_accepted}/{stats.num_drafts}" if stats is not None else ""
    prefix = llm.engine.prefix_stats if llm is not None else None
    if prefix is not None:
        drafts += f" | prompt tokens cached {prefix.num_hit_tokens}/{prefix.num_queried_tokens}"
    return (f"[prompt {num_prompt} tokens | generated {num_generated} tokens ({finish_reason}) | time to first token "
            f"{ttft_text} | {rate}{drafts}]")


def _fail(command: str, error: Exception) -> int:
    print(f"qwen35 {command}: error: {error}", file=sys.stderr)
    return 2


def _generate(args: argparse.Namespace) -> int:
    if (args.image or args.video) and (args.raw or args.prompt_ids is not None):
        return _fail("generate", ValueError("--image/--video need a text --prompt sent through the chat template "
                                            "(not --raw or --prompt-ids)"))
    if (args.prompt is None) == (args.prompt_ids is None):
        return _fail("generate", ValueError("give exactly one of --prompt and --prompt-ids"))
    try:
        prompt_ids = None if args.prompt_ids is None else [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    except ValueError:
        return _fail("generate", ValueError(f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}"))
    llm = None
    try:
        params = _sampling(args)
        llm = load_llm(args)
        prompt = prompt_ids if prompt_ids is not None else args.prompt
        if prompt_ids is None and not args.raw and llm.tokenizer is not None and \
                llm.tokenizer.chat_template is not None:
            prompt = _chat_prompt(llm, args)
        elif args.image or args.video:
            raise ValueError(f"--image/--video need the checkpoint's chat template, and {args.model} has none")
        generated, last = 0, None
        quiet = llm.rank != 0   # under torchrun every rank runs this; rank 0 prints
        for delta in llm.generate(prompt, params, stream=True):
            generated += len(delta.token_ids)
            text = delta.text if delta.text is not None else "".join(f"{t} " for t in delta.token_ids)
            if text and not quiet:
                sys.stdout.write(text)
                sys.stdout.flush()
            last = delta
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError, RuntimeError) as e:
        return _fail("generate", e)
    finally:
        if llm is not None:
            llm.shutdown()
    if not quiet:
        print(flush=True)
        print(_summary(last.num_prompt_tokens, generated, last.finish_reason, last.metrics, llm), file=sys.stderr)
    return 0


def _chat_prompt(llm, args: argparse.Namespace):
    """The prompt as one user turn of the chat template (images, then videos, then the text), rendered; a dict
    prompt with the media when there are any."""
    images, videos = args.image or [], args.video or []
    content = [{"type": "image", "image": path} for path in images] + \
        [{"type": "video", "video": path} for path in videos] + [{"type": "text", "text": args.prompt}]
    media = bool(images or videos)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
        [{"role": "user", "content": content if media else args.prompt}]
    rendered = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 enable_thinking=not args.no_think)
    if media:
        data = {"image": images, "video": videos, "video_fps": [args.video_fps] * len(videos)}
        return {"prompt": rendered, "multi_modal_data": {k: v for k, v in data.items() if v}}
    return llm.tokenizer.encode(rendered, add_special_tokens=False)


def _chat(args: argparse.Namespace) -> int:
    try:
        params = _sampling(args)
        llm = load_llm(args)
        if llm.tokenizer is None or llm.tokenizer.chat_template is None:
            llm.shutdown()
            raise ValueError(f"{args.model} has no tokenizer or chat template; use qwen35 generate --prompt-ids")
    except (ValueError, TypeError, FileNotFoundError, NotImplementedError, RuntimeError) as e:
        return _fail("chat", e)
    if llm.rank != 0:   # under torchrun rank 0 reads the conversation; the others run its steps until it ends
        llm.shutdown()
        return 0
    try:
        return _chat_loop(llm, args, params)
    finally:
        llm.shutdown()


def _chat_loop(llm, args: argparse.Namespace, params) -> int:
    interactive = sys.stdin.isatty()
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    if interactive:
        print("qwen35 chat: type a message; /reset clears the conversation, /exit quits.", file=sys.stderr)
    dim, plain = ("\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "")
    while True:
        if interactive:
            print(">>> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        if not line.strip():
            continue
        if line.strip() == "/reset":
            history = list(system)
            continue
        history.append({"role": "user", "content": line.rstrip("\n")})
        generated, last, thought = 0, None, False
        for d in llm.chat(history, params, enable_thinking=not args.no_think, stream=True):
            generated += len(d.token_ids)
            if d.reasoning:
                sys.stdout.write(dim + d.reasoning + plain)
                thought = True
            if d.text:
                sys.stdout.write(("\n" if thought else "") + d.text)
                thought = False
            sys.stdout.flush()
            last = d
        print(flush=True)
        print(_summary(last.num_prompt_tokens, generated, last.finish_reason, last.metrics, llm), file=sys.stderr)
        history.append(last.response.to_message())
