"""Where one engine decode step (or prefill step) spends its GPU time, kernel by kernel (torch.profiler): the
breakdown that bench/e2e.py's "e2e decode step" and "e2e prefill" rows (one number per step) cannot give. Builds
the same random-weight model as e2e.py (``35b-a3b`` by default; as many layers as fit), runs a few steps eagerly
(outside CUDA graphs, so that every kernel is traced; in a graph the launch gaps shrink, the kernel times do not),
and prints the step's wall time beside the sum of its kernel times (the difference: the host's share, launches
and syncs), then the kernels sorted by their total time per step, with their share of the step.

    python bench/_profile_decode_step.py [--config 35b-a3b] [--batch 1] [--context 1024] [--steps 5]
    python bench/_profile_decode_step.py --prefill 1024      # one step prefilling a 1024-token prompt

Run by bench/gpu_suite.sh (stages quick and profile); ``--dry-run`` runs the tiny config on the CPU (the CPU
operators instead of kernels), which is what the test suite checks.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import qwen35_native as q35
from e2e import config_json, decode_plan, fill_cache, layers_that_fit, random_model, with_layers
from qwen35_native.engine.model_runner import StepPlan
from qwen35_native.model import Qwen35Config
from qwen35_native.model.cache import KV_BLOCK_SIZE


def kernel_times(prof, cuda: bool) -> dict[str, float]:
    """Total self time (us) per kernel name (CUDA) or operator (CPU) over the profiled steps."""
    totals: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if cuda:
            us = getattr(evt, "self_device_time_total", None)
            if us is None:
                us = evt.self_cuda_time_total
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
        else:
            us = evt.self_cpu_time_total
        if us > 0:
            totals[evt.key] += us
    return dict(totals)


def report(totals: dict[str, float], steps: int, top: int, what: str = "decode step") -> list[str]:
    per_step = sorted(((us / steps, name) for name, us in totals.items()), reverse=True)
    step_us = sum(us for us, _ in per_step)
    lines = [f"{what}: {step_us:.1f} us of kernel time per step ({len(per_step)} distinct kernels)",
             f"{'us/step':>9} {'share':>6}  kernel"]
    for us, name in per_step[:top]:
        lines.append(f"{us:9.1f} {100 * us / step_us:5.1f}%  {name[:150]}")
    rest = sum(us for us, _ in per_step[top:])
    if rest:
        lines.append(f"{rest:9.1f} {100 * rest / step_us:5.1f}%  ({len(per_step) - top} more)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="35b-a3b", help="a config of bench/e2e.py (35b-a3b, 397b-tp8)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prefill", type=int, default=0,
                        help="profile a step prefilling one prompt of this many tokens instead of decode steps")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--weight-fraction", type=float, default=0.5, help="share of free memory for weights")
    parser.add_argument("--dry-run", action="store_true", help="the tiny config on the CPU")
    args = parser.parse_args()
    cuda = not args.dry_run
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    name = args.config if cuda else "tiny-moe"
    cfg = config_json(name)
    full = Qwen35Config.from_dict(cfg).text.num_hidden_layers
    layers = layers_that_fit(cfg, dtype, int(torch.cuda.mem_get_info()[0] * args.weight_fraction)) if cuda else full
    model = random_model(with_layers(config_json(name), layers), dtype, device)
    if args.dry_run and args.prefill:
        args.prefill = min(args.prefill, 32)
    tokens = max(args.context, args.prefill)
    blocks = args.batch * math.ceil((tokens + 2) / KV_BLOCK_SIZE)
    llm = q35.LLM(model, max_num_seqs=args.batch, max_model_len=tokens + 8, num_blocks=blocks,
                  max_num_batched_tokens=max(256, args.batch, args.prefill), tokenizer=False, generation_config={},
                  cuda_graphs=False)
    runner = llm.engine.runner
    fill_cache(runner)
    plan = prefill_plan(runner, args.prefill) if args.prefill else decode_plan(runner, args.batch, args.context)
    for _ in range(2):  # warm-up: module loads, tensor maps, the allocator
        runner.execute(plan)
    wall = step_wall_us(runner, plan, args.steps, cuda)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            runner.execute(plan)
        if cuda:
            torch.cuda.synchronize()
    shape = f"prefill 1x{args.prefill}" if args.prefill else f"B{args.batch} ctx{args.context}"
    print(f"== {name} {shape}: {layers} of {full} layers, eager, {args.steps} steps; wall time {wall:.1f} us per step")
    what = "prefill step" if args.prefill else "decode step"
    print("\n".join(report(kernel_times(prof, cuda), args.steps, args.top, what)))


def prefill_plan(runner, tokens: int) -> StepPlan:
    """One sequence's whole prompt of ``tokens`` random ids in one step, sampling its last token (slot 0)."""
    per_seq = math.ceil((tokens + 1) / runner.block_size)
    greedy = q35.SamplingParams(temperature=0, ignore_eos=True).resolved()
    ids = torch.randint(0, runner.vocab_size, (tokens,), generator=torch.Generator().manual_seed(0))
    return StepPlan(token_ids=ids.tolist(), query_lens=[tokens], context_lens=[0], slots=[0],
                    block_tables=[list(range(per_seq))], sample_rows=[0], sample_params=[greedy], sample_steps=[0],
                    free_slots=list(range(1, runner.num_slots)), table_keys=[0])


def step_wall_us(runner, plan: StepPlan, steps: int, cuda: bool) -> float:
    """Median wall time of one step, synchronised (the host's work included), outside the profiler."""
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        runner.execute(plan)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e6)
    return sorted(times)[len(times) // 2]


if __name__ == "__main__":
    main()
