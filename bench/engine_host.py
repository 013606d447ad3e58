"""Host time the engine adds to every decode step, outside the model: the scheduler, the step's plan, its block
table and the per-sequence bookkeeping of the sampled tokens. The model runner is replaced by one that only builds
the block table (as the real one does for the CUDA-graph buffers or the eager batch) and returns token ids, so the
rows time nothing but Python and host tensors; they run on the CPU with or without a GPU. A GPU decode step takes a
few ms; everything here is added to it (the engine does not overlap host and device work yet).

The peer column is the block table built from the plan's lists every step (what the engine did before it kept a
mirror, ``engine/block_tables.py``)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from qwen35_native.engine.block_tables import BlockTableMirror
from qwen35_native.engine.core import LLMEngine
from qwen35_native.engine.sampling import HostSamplerOutput
from qwen35_native.engine.scheduler import Scheduler

BLOCK = 64


class TableOnlyRunner:
    """Stands in for ``ModelRunner``: the step's block table, then a sampled token per row."""

    speculative = None

    def __init__(self, num_slots: int, max_blocks: int, num_blocks: int):
        self.vocab_size = 1000
        self.tables = BlockTableMirror(num_slots + 1, max_blocks, num_blocks)
        self.rebuild = False  # the peer: tables from the lists every step

    def execute(self, plan):
        if self.rebuild:
            self.tables._direct(plan.block_tables, max(len(t) for t in plan.block_tables))
        else:
            self.tables.table(plan.slots, plan.block_tables, plan.table_keys)
        return HostSamplerOutput([7] * len(plan.sample_rows)) if plan.sample_rows else None


def decode_steps(batch: int, context: int, steps: int) -> tuple[float, float]:
    """Median host us per decode step with the mirror and with tables rebuilt, after prefilling ``batch`` prompts of
    ``context`` tokens."""
    max_blocks = (context + steps + 2 * BLOCK) // BLOCK
    num_blocks = batch * max_blocks
    runner = TableOnlyRunner(batch, max_blocks, num_blocks)
    scheduler = Scheduler(num_blocks, BLOCK, batch, max(65536, batch))
    engine = LLMEngine(runner, scheduler, max_model_len=max_blocks * BLOCK)
    params = q35.SamplingParams(temperature=0, max_tokens=4 * steps + 8, ignore_eos=True)
    for i in range(batch):
        engine.add_request([(i + j) % 1000 for j in range(context)], params)
    while any(s.num_pending > 1 for s in scheduler.running) or scheduler.waiting:
        engine.step()
    times = {}
    for rebuild in (False, True, False):   # the mirror's timing last: after the peer's steps, not before
        runner.rebuild = rebuild
        per_step = []
        for _ in range(steps):
            t0 = time.perf_counter()
            engine.step()
            per_step.append(time.perf_counter() - t0)
        times[rebuild] = statistics.median(per_step) * 1e6
    return times[False], times[True]


def run(args: argparse.Namespace) -> list[Row]:
    torch.set_num_threads(1)
    shapes = [(2, 200), (8, 1000)] if args.dry_run else [(b, c) for b in args.batches for c in args.contexts]
    rows = []
    for batch, context in shapes:
        ours, rebuilt = decode_steps(batch, context, 5 if args.dry_run else args.steps)
        rows.append(Row(op="engine host time per decode step", shape=f"B{batch} ctx{context}", dtype="-",
                        impl="q35 engine", median_us=ours, peer="tables rebuilt each step", peer_us=rebuilt,
                        notes="model forward stubbed out; scheduler + plan + block table + bookkeeping"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768])
    parser.add_argument("--steps", type=int, default=30)
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("engine_host", args)
    emit("engine_host", run(args), args)


if __name__ == "__main__":
    main()
