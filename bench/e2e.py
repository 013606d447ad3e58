"""End-to-end engine throughput with random weights on the PERF_TARGETS.md configs: prefill (``LLM.generate`` of
one token, so scheduling, chunking and the sampler are included) and decode steps (the model runner's decode step
at a fixed context, CUDA graphs when they capture), batch 1/8/64 and prompt/context 1k/8k.

Configs: ``35b-a3b`` (one GPU) and ``397b-tp8`` (one rank of 8: GDN Hk=2 Hv=8, attention 4 q / 1 kv heads, MoE I=128,
vocab 248320/8). The model is built directly from the config with random bf16 weights on the GPU (nothing is
written to disk); when the full depth does not fit, as many layers as fit run (the 3:1 GDN:attention pattern kept)
and times and bytes are scaled to the full depth (``notes`` say so; embedding, lm_head and sampler get scaled too,
a slight overestimate). Decode rows report the bytes of the weights one step must stream (dense weights, the
experts a batch of random tokens touches: ``E * (1 - (1 - k/E)^B)`` per layer, lm_head) and so the achieved
weight-streaming bandwidth against the card's peak; the floor is bytes / peak. HF transformers runs the same
(scaled) config side by side at batch 1 when it is importable and fits. ``--dry-run``: the tiny config on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import math
import time

import torch

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, env_setting
from qwen35_native import configs
from qwen35_native.engine.model_runner import StepPlan
from qwen35_native.model import Qwen35Config, Qwen35ForCausalLM
from qwen35_native.model.cache import KV_BLOCK_SIZE
from qwen35_native.model.layers import DecoderLayer
from qwen35_native.model.loading import resolve_backends
from qwen35_native.ops.projection import MAX_ROWS as SKINNY_MAX_ROWS

TP = 8


def config_json(name: str) -> dict:
    if name != "397b-tp8":
        return configs.config_json(name)
    cfg = configs.config_json("397b-a17b")  # one tensor-parallel rank of eight (PERF_TARGETS.md)
    t = cfg["text_config"]
    t.update(linear_num_key_heads=t["linear_num_key_heads"] // TP, linear_num_value_heads=t["linear_num_value_heads"]
             // TP, num_attention_heads=t["num_attention_heads"] // TP, num_key_value_heads=1,
             moe_intermediate_size=t["moe_intermediate_size"] // TP,
             shared_expert_intermediate_size=t["shared_expert_intermediate_size"] // TP,
             vocab_size=t["vocab_size"] // TP, eos_token_id=0)  # this rank's vocab shard; eos lives elsewhere
    return cfg


def with_layers(cfg: dict, layers: int) -> Qwen35Config:
    t = cfg["text_config"]
    full = Qwen35Config.from_dict(cfg).text.layer_types
    t["layer_types"] = list(full[:layers])
    t["num_hidden_layers"] = layers
    return Qwen35Config.from_dict(cfg)


def layer_bytes(text, kind: str, dtype: torch.dtype) -> int:
    layer = DecoderLayer(text, kind, dtype, "meta", resolve_backends(None))
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def layers_that_fit(cfg: dict, dtype: torch.dtype, budget: int) -> int:
    text = Qwen35Config.from_dict(cfg).text
    fixed = 2 * text.vocab_size * text.hidden_size * dtype.itemsize
    group = [layer_bytes(text, kind, dtype) for kind in text.layer_types[:4]]
    n = len(text.layer_types)
    fit = 4 * max(1, (budget - fixed) // sum(group))
    return min(n, fit)


def random_model(config: Qwen35Config, dtype: torch.dtype, device: str, with_mtp: bool = False) -> Qwen35ForCausalLM:
    model = Qwen35ForCausalLM(config, dtype, device, resolve_backends(None), with_mtp=with_mtp)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def active_decode_bytes(model: Qwen35ForCausalLM, batch: int) -> int:
    """Weight bytes one decode step of ``batch`` random tokens must read."""
    text = model.text_config
    total = 0
    for name, p in model.named_parameters():
        if name.startswith("mtp."):  # the draft head runs only in speculative steps
            continue
        size = p.numel() * p.element_size()
        if name.endswith((".w13", ".w2")) and "shared" not in name and text.is_moe:
            E, k = text.num_experts, text.num_experts_per_tok
            size = size * (1 - (1 - k / E) ** batch)
        elif name == "embed_tokens" and not text.tie_word_embeddings:
            size = batch * text.hidden_size * p.element_size()
        total += size
    return int(total)


def decode_plan(runner, batch: int, context: int) -> StepPlan:
    bs = runner.block_size
    per_seq = math.ceil((context + 1) / bs)
    greedy = q35.SamplingParams(temperature=0, ignore_eos=True).resolved()
    return StepPlan(token_ids=[1] * batch, query_lens=[1] * batch, context_lens=[context] * batch,
                    slots=list(range(batch)), block_tables=[list(range(i * per_seq, (i + 1) * per_seq))
                                                            for i in range(batch)],
                    sample_rows=list(range(batch)), sample_params=[greedy] * batch, sample_steps=[0] * batch,
                    free_slots=list(range(batch, runner.num_slots)), table_keys=list(range(batch)))


def fill_cache(runner) -> None:
    """Finite random contents, so decode steps at a context nobody prefilled route and attend like real ones."""
    with torch.no_grad():
        for k, v in runner.cache.kv.values():
            k.normal_()
            v.normal_()
        for i in runner.cache.conv:
            runner.cache.conv[i].normal_(0, 0.1)
            runner.cache.ssm[i].normal_(0, 0.01)


def hf_peer(cfg: dict, config: Qwen35Config, prompt: int, device: str, dtype: torch.dtype) -> dict:
    """transformers on the same config (same layer count): prefill of 1 x prompt and per-token decode at batch 1."""
    import transformers

    transformers.logging.set_verbosity_error()
    text = dict(cfg["text_config"], layer_types=list(config.text.layer_types),
                num_hidden_layers=config.text.num_hidden_layers)
    moe = config.text.is_moe
    hcfg = (transformers.Qwen3_5MoeTextConfig if moe else transformers.Qwen3_5TextConfig)(**text)
    cls = transformers.Qwen3_5MoeForCausalLM if moe else transformers.Qwen3_5ForCausalLM
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(hcfg).eval()
    finally:
        torch.set_default_dtype(default)
    ids = torch.randint(0, config.text.vocab_size, (1, prompt), device=device)
    new = 5 if device == "cpu" else 9
    with torch.no_grad():
        prefill = bench(lambda: model(input_ids=ids), device=device, warmup=1, reps=2, flush_l2=False)["median_us"]
        gen = bench(lambda: model.generate(input_ids=ids, max_new_tokens=new, min_new_tokens=new, do_sample=False),
                    device=device, warmup=1, reps=2, flush_l2=False)["median_us"]
    return {"prefill_us": prefill, "decode_us": max(gen - prefill, 0.0) / (new - 1)}


def run_config(name: str, args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    cfg = config_json(name)
    full = Qwen35Config.from_dict(cfg).text.num_hidden_layers
    layers = full if args.dry_run else layers_that_fit(cfg, dtype, int(torch.cuda.mem_get_info()[0]
                                                                       * args.weight_fraction))
    config = with_layers(config_json(name), layers)
    scale = full / layers
    note = f"{layers} of {full} layers run, x{scale:.2f}" if layers < full else ""
    model = random_model(config, dtype, device, with_mtp=True)
    runs = [(b, p) for p in args.prompts for b in args.batches if b * p <= args.max_prefill_tokens]
    bs = KV_BLOCK_SIZE   # the engine's default (64): the attention kernels' fast path (16 took the per-row one)
    room = 40  # tokens past the longest prompt: decode steps, and the next turn of prefix_rows
    num_blocks = max(b * math.ceil((p + room) / bs) for b, p in runs)
    llm = q35.LLM(model, max_num_seqs=max(args.batches), max_model_len=max(args.prompts) + room, num_blocks=num_blocks,
                  block_size=bs, max_num_batched_tokens=args.step_tokens, tokenizer=False, generation_config={})
    rows, dt = [], "bf16" if dtype == torch.bfloat16 else "fp32"
    one = q35.SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    llm.generate([[1] * min(args.prompts)], one)  # warm-up
    for b, p in runs:
        if out_of_time(args, f"{name} prefill B{b}xP{p}"):
            continue
        prompts = torch.randint(0, config.text.vocab_size, (b, p)).tolist()
        times = []
        for _ in range(args.prefill_reps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            llm.generate(prompts, one)
            times.append(time.perf_counter() - t0)
        us = sorted(times)[len(times) // 2] * 1e6 * scale
        rows.append(Row(op="e2e prefill", shape=f"{name} B{b}xP{p}", dtype=dt, impl="q35 LLM", median_us=us,
                        notes=f"{b * p / us * 1e6:.0f} tok/s; {note}".rstrip("; "),
                        extra={"tokens_per_s": b * p / us * 1e6, "layers": layers, "full_layers": full}))
    runner = llm.engine.runner
    fill_cache(runner)
    for b, p in runs:
        if out_of_time(args, f"{name} decode B{b} ctx{p}"):
            continue
        plan = decode_plan(runner, b, p)
        t = bench(lambda: runner.execute(plan), device=device, warmup=1, reps=args.decode_reps, flush_l2=False)
        us = t["median_us"] * scale
        nbytes = int(active_decode_bytes(model, b) * scale)
        graphs = "graphs" if runner.graphs_active else "eager"
        rows.append(Row(op="e2e decode step", shape=f"{name} B{b} ctx{p}", dtype=dt, impl=f"q35 ({graphs})",
                        median_us=us, bytes=nbytes,
                        notes=f"{us / 1e3:.2f} ms/token, {b / us * 1e6:.0f} tok/s; floor at peak BW in the GB/s "
                              f"column; {note}".rstrip("; "),
                        extra={"ms_per_token": us / 1e3, "tokens_per_s": b / us * 1e6, "layers": layers}))
    rows += cublas_projection_rows(runner, runs, args, name, dt, scale, note)
    rows += speculative_rows(model, llm, runs, args, name, dt, scale, note)
    rows += prefix_rows(model, llm, args, name, dt, scale, note)
    llm = runner = model = None  # free the weights before the peer builds its own
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    if not args.no_hf and not out_of_time(args, f"{name} HF transformers peer"):
        _add_peer(rows, name, config, args, device, dtype, scale)
    return rows


def cublas_projection_rows(runner, runs, args, name: str, dt: str, scale: float, note: str) -> list[Row]:
    """The decode step again with the layers' projections on cuBLAS (QWEN35_SKINNY_LINEAR=0; the graphs are captured
    anew both ways): what the skinny linear kernel (ops/projection.py) saves or costs. GPU only."""
    graphs = runner.graphs
    if args.dry_run or graphs is None or not runner.graphs_active:
        return []
    rows = []
    for b, p in runs:
        if b > SKINNY_MAX_ROWS or out_of_time(args, f"{name} decode B{b} ctx{p} on cuBLAS projections"):
            continue   # above SKINNY_MAX_ROWS rows the projections are cuBLAS either way
        plan = decode_plan(runner, b, p)
        graphs.graphs.clear()
        with env_setting("QWEN35_SKINNY_LINEAR", "0"):
            t = bench(lambda: runner.execute(plan), device="cuda", warmup=1, reps=args.decode_reps, flush_l2=False)
        graphs.graphs.clear()   # the next steps capture with the skinny kernel again
        us = t["median_us"] * scale
        rows.append(Row(op="e2e decode step", shape=f"{name} B{b} ctx{p}", dtype=dt,
                        impl="q35 (graphs, cuBLAS projections)", median_us=us,
                        notes=f"{us / 1e3:.2f} ms/token; QWEN35_SKINNY_LINEAR=0; {note}".rstrip("; "),
                        extra={"ms_per_token": us / 1e3, "tokens_per_s": b / us * 1e6}))
    return rows


def engine_like(model, runner, args, **kwargs) -> q35.LLM:
    """A second engine on ``model`` with the caches and step budget of ``runner``'s, plus ``kwargs``."""
    return q35.LLM(model, max_num_seqs=runner.num_slots, max_model_len=runner.max_blocks_per_seq * runner.block_size,
                   num_blocks=runner.num_blocks, block_size=runner.block_size, max_num_batched_tokens=args.step_tokens,
                   tokenizer=False, generation_config={}, **kwargs)


def speculative_rows(model, llm, runs, args, name: str, dt: str, scale: float, note: str) -> list[Row]:
    """The price of speculation: an eager decode step beside a verification step (one MTP draft per sequence: the
    target over 2 tokens, the roll-back, the MTP head; in CUDA graphs where they capture). With random weights
    drafts are almost never accepted, so the rows give the step times; tokens per step are 1 + the acceptance rate
    of real weights. Compare with the graphed decode step row above."""
    device = model.device.type
    runner = llm.engine.runner
    spec = engine_like(model, runner, args, speculative_config={"method": "mtp"}).engine.runner
    fill_cache(spec)
    rows = []
    for b, p in runs:
        if out_of_time(args, f"{name} verify B{b} ctx{p}"):
            continue
        plain = decode_plan(runner, b, p)
        verify = decode_plan(spec, b, p)
        verify.token_ids, verify.query_lens = [1, 2] * b, [2] * b
        verify.num_verify, verify.drafts, verify.mtp_next = b, [[2]] * b, [-1] * b
        mode = "graphs" if spec.graphs_active else "eager"
        for impl, fn in (("q35 (eager)", lambda: runner._execute_eager(plain)),
                         (f"q35 MTP verify 1 draft ({mode})", lambda: spec.execute(verify))):
            us = bench(fn, device=device, warmup=1, reps=args.decode_reps, flush_l2=False)["median_us"] * scale
            rows.append(Row(op="e2e decode step", shape=f"{name} B{b} ctx{p}", dtype=dt, impl=impl, median_us=us,
                            notes=f"{us / 1e3:.2f} ms/step; {note}".rstrip("; "), extra={"ms_per_step": us / 1e3}))
    return rows


def prefix_rows(model, llm, args, name: str, dt: str, scale: float, note: str) -> list[Row]:
    """Prefix caching: time to first token of a chat's next turn (a prompt of P tokens seen before, plus up to 32
    new ones) with the cache (it resumes at the earlier prompt's save point) and without; and of a first prompt with
    the cache on (its GDN states at the save point taken inside the same step, model/gdn_splits.py) beside off."""
    runner = llm.engine.runner
    p = max(args.prompts)
    tail = min(32, llm.engine.max_model_len - p - 1)   # a prompt must leave room for a token
    if out_of_time(args, f"{name} prefix caching P{p}") or tail < 1:
        return []
    cached = engine_like(model, runner, args, enable_prefix_caching=True)
    vocab, one = model.text_config.vocab_size, q35.SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def ttft(engine, prompt) -> float:
        sync()
        t0 = time.perf_counter()
        engine.generate([prompt], one)
        return time.perf_counter() - t0

    rows, first = [], torch.randint(0, vocab, (p,)).tolist()
    for engine in (llm, cached):
        engine.generate([first], one)   # the earlier turn
    # the next turn first: the first prompts' blocks would evict the earlier turn's from a cache sized for one
    # sequence (the H200 run of 2026-11-28 measured "0 prompt tokens cached" that way)
    for what, prompt in (("next turn", lambda: first + torch.randint(0, vocab, (tail,)).tolist()),
                         ("first prompt", lambda: torch.randint(0, vocab, (p,)).tolist())):
        for impl, engine in (("q35 LLM", llm), ("q35 LLM prefix caching", cached)):
            hits = cached.engine.prefix_stats.num_hit_tokens
            us = sorted(ttft(engine, prompt()) for _ in range(args.prefill_reps))[args.prefill_reps // 2] * 1e6
            hits = (cached.engine.prefix_stats.num_hit_tokens - hits) // args.prefill_reps
            shape = f"{name} B1xP{p}" + (f"+{tail}" if what == "next turn" else "")
            rows.append(Row(op=f"e2e time to first token, {what}", shape=shape, dtype=dt, impl=impl,
                            median_us=us * scale, notes=f"{hits} prompt tokens cached; {note}".rstrip("; "),
                            extra={"prefix_hit_tokens": hits}))
    return rows


def out_of_time(args: argparse.Namespace, what: str) -> bool:
    """True (and says so) once the run has used its time budget: the GPU suite must finish in minutes."""
    if time.perf_counter() - args.start < args.time_budget:
        return False
    print(f"e2e: skipped {what}: time budget of {args.time_budget:.0f} s used")
    return True


def _add_peer(rows, name, config, args, device, dtype, scale) -> None:
    p = min(args.prompts)
    try:
        peer = hf_peer(config_json(name), config, p, device, dtype)
    except Exception as e:  # the peer is optional: not importable, or does not fit
        for r in rows:
            r.notes = (r.notes + f"; HF transformers: skipped ({type(e).__name__}: {str(e)[:80]})").lstrip("; ")
        return
    for r in rows:
        if r.shape == f"{name} B1xP{p}":
            r.peer, r.peer_us = "HF transformers", peer["prefill_us"] * scale
        if r.shape == f"{name} B1 ctx{p}":
            r.peer, r.peer_us = "HF transformers", peer["decode_us"] * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["35b-a3b", "397b-tp8"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--max-prefill-tokens", type=int, default=65536, help="skip larger batch x prompt runs")
    parser.add_argument("--step-tokens", type=int, default=8192, help="token budget of one engine step")
    parser.add_argument("--prefill-reps", type=int, default=1)
    parser.add_argument("--decode-reps", type=int, default=5)
    parser.add_argument("--time-budget", type=float, default=150.0, help="seconds; later runs are skipped")
    parser.add_argument("--weight-fraction", type=float, default=0.5, help="share of free memory for weights")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers peer")
    add_common_args(parser)
    args = parser.parse_args()
    if args.dry_run:
        args.configs, args.batches, args.prompts = ["tiny-moe"], [1, 2], [16, 72]   # 72: one KV block to resume
        args.prefill_reps, args.decode_reps, args.step_tokens = 1, 2, 32
    torch.manual_seed(0)
    args.start = time.perf_counter()
    emit_rows_made_on_term("e2e", args)
    rows = []
    for name in args.configs:
        rows += run_config(name, args)
    emit("e2e", rows, args)
    for r in rows:
        print(f"{r.op:16s} {r.shape:22s} {r.notes}")


if __name__ == "__main__":
    main()
