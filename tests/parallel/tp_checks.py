"""What every rank of a spawned tensor-parallel group runs (test_tp_group.py): its shard of a tiny checkpoint on
fixed cached steps (prefill, decode, mixed prefill + decode with a chunked continuation) and on the uncached
forward. Returns the gathered logits (the test compares them with the single-process model's); asserts nothing
itself so that every rank finishes its collectives."""

from __future__ import annotations

import torch

import qwen35_native as q35
from qwen35_native.model import ForwardBatch
from qwen35_native.parallel import TPContext, load_sharded

BLOCK, BLOCKS_PER_SEQ = 4, 6

# (query_lens, context_lens, slots, logits) of each step; sequence s owns slot s and blocks [6s, 6s+6)
STEPS = [
    ([5, 9], [0, 0], [0, 1], "all"),             # prefill of two sequences
    ([1, 1], [5, 9], [0, 1], "last"),            # decode
    ([1, 4, 3], [6, 10, 0], [0, 1, 2], "all"),   # decode + chunked continuation (GDN initial state) + new prompt
    ([1, 1, 1], [7, 14, 3], [0, 1, 2], "last"),  # decode of three
    ([1, 1, 1], [8, 15, 4], [0, 1, 2], "last"),
]


def cached_logits(model, vocab: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    cache = model.allocate_cache(3 * BLOCKS_PER_SEQ, BLOCK, 3)
    out = []
    with torch.inference_mode():
        for query, context, slots, logits in STEPS:
            table = torch.tensor([[s * BLOCKS_PER_SEQ + b for b in range(BLOCKS_PER_SEQ)] for s in slots],
                                 dtype=torch.int32)
            batch = ForwardBatch.build(query, context, slots, table, BLOCK, model.device, logits=logits)
            ids = torch.randint(0, vocab, (sum(query),), generator=gen)
            out.append(model.forward_cached(ids.to(model.device), batch, cache).float().cpu())
    return out


def all_logits(model) -> list[torch.Tensor]:
    """Logits of every cached step, then of the uncached forward of two sequences."""
    vocab = model.text_config.vocab_size
    out = cached_logits(model, vocab)
    ids = torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(5)).to(model.device)
    with torch.inference_mode():
        out.append(model(ids).float().cpu())
    return out


def reference_logits(path: str) -> list[torch.Tensor]:
    return all_logits(q35.from_pretrained(path, backend="reference"))


def run_all(ctx_by_world: dict[int, TPContext], cases: dict[int, list[tuple[str, str, str]]]) -> dict:
    """``cases[world]``: (name, checkpoint dir, moe_parallel) run on the rank's group of that size; returns the
    rank's gathered logits of each case."""
    torch.set_num_threads(1)
    results = {}
    for world, items in cases.items():
        for name, path, mode in items:
            model = load_sharded(path, ctx_by_world[world], backend="reference", moe_parallel=mode)
            results[(world, name, mode)] = all_logits(model)
    return results


def rank_main(rank: int, world: int, port: int, cases: dict, queue) -> None:
    """A spawned rank: joins the world (gloo), makes the TP groups (the world, and pairs {0,1} / {2,3} when the
    world has 4 ranks) and runs :func:`run_all`; puts ``(rank, pickled results, traceback)`` on ``queue``."""
    import datetime
    import pickle
    import traceback

    import torch.distributed as dist

    try:
        store = dist.TCPStore("127.0.0.1", port, world, False,
                              timeout=datetime.timedelta(seconds=120))
        store.wait(["checkpoints_written"])        # the test writes them while the ranks start
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=120))
        try:
            cpu = torch.device("cpu")
            ctxs = {world: TPContext(rank, world, cpu, dist.group.WORLD)}
            if world == 4:
                pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
                ctxs[2] = TPContext(rank % 2, 2, cpu, pairs[rank // 2])
            # plain pickle bytes: the tensors must not travel as shared memory of a process about to exit
            queue.put((rank, pickle.dumps(run_all(ctxs, cases)), None))
        finally:
            dist.destroy_process_group()
    except BaseException:
        queue.put((rank, None, traceback.format_exc()))
