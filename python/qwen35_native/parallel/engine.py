"""Glue between ``q35.LLM`` and a tensor-parallel world: start (or join) it, load this rank's shard, wrap the
runner, and shut down. ``LLM.__init__`` calls :func:`load_rank` then :func:`finish_rank`; on any failure in
between it calls :func:`abort_rank` (workers are stopped at once, groups destroyed).

Tests: tests/parallel/test_llm_tp.py, test_torchrun.py.
"""

from __future__ import annotations

import torch

from ..model.config import Qwen35Config
from .launch import report, start
from .layout import check_tensor_parallel
from .loading import load_sharded
from .session import TPSession

# LLM arguments a started worker takes over from rank 0 (the rest concern rank 0's tokenizer and outputs)
WORKER_ARGS = ("dtype", "backend", "moe_parallel", "max_num_seqs", "max_model_len", "block_size", "num_blocks",
               "gpu_memory_utilization", "max_num_batched_tokens", "cuda_graphs", "cuda_graph_sizes",
               "speculative_config", "enable_prefix_caching")


def worker_kwargs(args: dict) -> dict:
    out = {k: args[k] for k in WORKER_ARGS}
    if isinstance(out["dtype"], torch.dtype):
        out["dtype"] = str(out["dtype"]).replace("torch.", "")
    return out


def load_rank(path: str, world: int, device, *, dtype, backend, moe_parallel: str, progress,
              llm_args: dict, load_mtp: bool = False) -> tuple[TPSession, object]:
    """Checks that ``world`` ranks can split the model (before starting anything), starts or joins the world, and
    loads this rank's shard. Returns (session, model)."""
    config = Qwen35Config.from_file(path)
    check_tensor_parallel(config.text, world, moe_parallel)
    session = start(world, device, path, worker_kwargs(llm_args))
    try:
        model = load_sharded(path, session.ctx, dtype=dtype, backend=backend, moe_parallel=moe_parallel,
                             progress=progress if session.is_leader else False, load_mtp=load_mtp)
        report(session, "loaded")
    except BaseException:
        abort_rank(session)
        raise
    return session, model


def finish_rank(session: TPSession, runner):
    """The runner the engine uses (rank 0: broadcasting its plans); reports the rank ready (rank 0 waits for all)."""
    wrapped = session.wrap_runner(runner)
    report(session, "ready")
    session.ready = True
    return wrapped


def abort_rank(session: TPSession) -> None:
    session.closed = True
    try:
        if session.workers is not None:
            session.workers.stop(grace=0.0)
    finally:
        session.ctx.destroy()
