"""Spawned tensor-parallel groups on the CPU (gloo): 4 processes, running every check as one world of 4 and as two
worlds of 2 (pairs of ranks), on tiny checkpoints whose head and expert counts divide them, with kv heads split
and replicated, both MoE modes, the dense MLP, tied and untied embeddings, a padded vocab shard, both expert
layouts. Each rank's gathered logits must equal the single-process model's to fp32 rounding (<= 1e-5 relative),
for prefill, decode, mixed steps with a chunked continuation, and the uncached forward.
Code: python/qwen35_native/parallel/ (layout, shard, loading, groups)."""

import datetime
import pickle
import queue as queue_mod

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tp_checks import rank_main, reference_logits
from tp_helpers import rel_err, write_case

WORLD4 = [("moe4", "tp"), ("moe4", "ep"), ("moe4-kvrep", "tp"), ("moe4-kvrep", "ep"), ("dense4", "tp")]
WORLD2 = [("moe-kvrep", "tp"), ("moe-kvrep", "ep"), ("dense", "tp"), ("moe4", "tp")]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_group")
    names = sorted({n for n, _ in WORLD4 + WORLD2})
    dirs = {name: str(root / name) for name in names}
    cases = {4: [(n, dirs[n], m) for n, m in WORLD4], 2: [(n, dirs[n], m) for n, m in WORLD2]}
    world = 4
    store = dist.TCPStore("127.0.0.1", 0, world, True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=240))   # the ranks' rendezvous
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, world, store.port, cases, results), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        torch.set_num_threads(1)
        for name in names:   # while the ranks start (importing torch takes seconds)
            write_case(dirs[name], name)
        store.set("checkpoints_written", "1")
        refs = {name: reference_logits(path) for name, path in dirs.items()}
        out = {}
        for _ in range(world):
            rank, res, error = results.get(timeout=240)
            assert error is None, f"rank {rank} failed:\n{error}"
            out[rank] = pickle.loads(res)
        return refs, out
    except queue_mod.Empty:
        pytest.fail(f"the tensor-parallel group did not finish in time (exit codes {[p.exitcode for p in procs]})")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


@pytest.mark.parametrize("world,name,mode", [(4, n, m) for n, m in WORLD4] + [(2, n, m) for n, m in WORLD2])
def test_rank_logits_match_single_process(group_results, world, name, mode):
    refs, ranks = group_results
    for rank, results in ranks.items():
        got = results[(world, name, mode)]
        errs = {f"step{i}" if i < len(got) - 1 else "uncached": rel_err(a, b) for i, (a, b) in
                enumerate(zip(got, refs[name]))}
        print(f"world {world} {name} moe_parallel={mode} rank {rank}: max rel err {max(errs.values()):.2e}")
        bad = {k: v for k, v in errs.items() if not v <= TOLERANCE}
        assert not bad, f"rank {rank}: relative errors above {TOLERANCE}: {bad}"
