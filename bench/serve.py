"""Serving: the OpenAI server (``qwen35 serve``) under concurrent streamed requests, measured as vLLM's
``benchmark_serving`` measures a server: time to first token (TTFT), inter-token latency (ITL, the time between
consecutive token chunks of one request) and output tokens per second over the whole run.

Each of C client threads sends its share of N completion requests one after another (random prompt token ids of P
tokens, O output tokens, ``ignore_eos``, the model card's thinking-mode sampling, ``stream`` with
``return_token_ids`` so every step's token arrives as a chunk), over HTTP on localhost, so the rows include
everything a served request costs: HTTP, JSON, the engine thread, scheduling, prefill of arriving requests beside
running decodes, the sampler and the stream (decode steps in CUDA graphs, captured lazily per batch size: the
warm-up requests capture the size C, smaller ones may be captured while measuring). The model has random weights
(``e2e.py``'s configs; as many layers as fit, not scaled: serving overheads do not scale with depth, ``notes`` give
the layer count) and a tiny tokenizer (the token ids of random weights have no text; the rows count ids).
``--dry-run``: the tiny config on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import statistics
import threading
import time

import torch

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from e2e import config_json, layers_that_fit, random_model, with_layers
from qwen35_native.chat import Tokenizer, build_tiny_tokenizer
from qwen35_native.serve import OpenAIServer


def one_request(server: OpenAIServer, prompt: list[int], max_tokens: int) -> dict:
    """Sends one streamed completion; returns its send time and the arrival time and size of every token chunk."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True, "return_token_ids": True,
            "temperature": 0.6, "top_p": 0.95, "top_k": 20, "seed": len(prompt) * 7919 + prompt[0]}
    sent = time.perf_counter()
    conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"serve bench: HTTP {response.status}: {response.read()[:300]!r}")
    arrivals = []
    for line in response.fp:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(f"serve bench: the stream failed: {chunk['error']}")
        tokens = sum(len(c.get("token_ids", [])) for c in chunk["choices"])
        if tokens:
            arrivals.append((time.perf_counter(), tokens))
    conn.close()
    return {"sent": sent, "arrivals": arrivals}


def run_load(server: OpenAIServer, prompts: list[list[int]], max_tokens: int, concurrency: int) -> list[dict]:
    results: list[dict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    todo = list(prompts)

    def client():
        while True:
            with lock:
                if not todo or errors:
                    return
                prompt = todo.pop()
            try:
                result = one_request(server, prompt, max_tokens)
            except BaseException as e:  # reported once all clients stopped
                errors.append(e)
                return
            with lock:
                results.append(result)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def summarize(results: list[dict]) -> dict:
    ttft = [r["arrivals"][0][0] - r["sent"] for r in results]
    itl = [b[0] - a[0] for r in results for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    start = min(r["sent"] for r in results)
    end = max(r["arrivals"][-1][0] for r in results)
    tokens = sum(n for r in results for _, n in r["arrivals"])
    pct = lambda xs, q: sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return {"ttft_med": statistics.median(ttft), "ttft_p99": pct(ttft, 0.99),
            "itl_med": statistics.median(itl) if itl else 0.0, "itl_p99": pct(itl, 0.99) if itl else 0.0,
            "tokens_per_s": tokens / (end - start), "requests_per_s": len(results) / (end - start),
            "tokens": tokens, "seconds": end - start}


def serve_config(name: str, args: argparse.Namespace) -> list[Row]:
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = config_json(name)
    full = len(cfg["text_config"].get("layer_types") or []) or cfg["text_config"]["num_hidden_layers"]
    if device == "cuda":
        free = torch.cuda.mem_get_info()[0]
        layers = layers_that_fit(cfg, dtype, int(free * args.weight_fraction))
    else:
        layers = full
    model = random_model(with_layers(cfg, layers), dtype, device)
    rows = []
    for c in args.concurrency:
        max_len = max(args.prompts) + args.output + 64
        llm = q35.LLM(model, tokenizer=Tokenizer(build_tiny_tokenizer()), generation_config={}, max_num_seqs=c,
                      max_model_len=max_len, max_num_batched_tokens=args.step_tokens)
        with OpenAIServer(llm, port=0).start() as server:
            for p in args.prompts:
                vocab = model.text_config.vocab_size
                gen = torch.Generator().manual_seed(p * 31 + c)
                n = max(args.requests_per_client * c, c)
                prompts = [torch.randint(0, vocab, (p,), generator=gen).tolist() for _ in range(n)]
                run_load(server, prompts[:c], min(args.output, 4), c)   # warm-up: first-use allocations, kernels
                s = summarize(run_load(server, prompts, args.output, c))
                shape = f"{name} C{c} P{p} O{args.output}"
                note = f"{layers} of {full} layers, {n} requests, {s['seconds']:.1f} s"
                common = dict(shape=shape, dtype=str(dtype).replace("torch.", ""), impl="q35 serve", extra=s)
                rows += [Row(op="serve time to first token", median_us=s["ttft_med"] * 1e6,
                             notes=f"p99 {s['ttft_p99'] * 1e3:.1f} ms; {note}", **common),
                         Row(op="serve inter-token latency", median_us=s["itl_med"] * 1e6,
                             notes=f"p99 {s['itl_p99'] * 1e3:.1f} ms; {note}", **common),
                         Row(op="serve output throughput", median_us=1e6 / s["tokens_per_s"],
                             notes=f"{s['tokens_per_s']:.0f} tokens/s, {s['requests_per_s']:.2f} requests/s "
                                   f"(us per output token); {note}", **common)]
        del llm, server
        gc.collect()   # the next engine sizes its cache from the memory this one leaves
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["35b-a3b"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1024])
    parser.add_argument("--output", type=int, default=128, help="output tokens per request")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--step-tokens", type=int, default=8192, help="token budget of one engine step")
    parser.add_argument("--weight-fraction", type=float, default=0.5, help="share of free memory for weights")
    add_common_args(parser)
    args = parser.parse_args()
    if args.dry_run:
        args.configs, args.concurrency, args.prompts, args.output = ["tiny-moe"], [2], [16], 4
        args.requests_per_client, args.step_tokens = 1, 64
    torch.manual_seed(0)
    emit_rows_made_on_term("serve", args)
    rows = []
    for name in args.configs:
        rows += serve_config(name, args)
    emit("serve", rows, args)


if __name__ == "__main__":
    main()
