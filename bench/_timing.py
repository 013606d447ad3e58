"""Timing helpers for every benchmark (STYLE habit 19): warm-up, L2 flush before each repetition, CUDA events
around the timed region only, median of the repetitions. On the CPU (dry runs) a wall clock is used."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

_L2_FLUSH_BYTES = 256 << 20  # larger than any Hopper L2 (50-60 MB)
_flush_buffer: torch.Tensor | None = None


def _flush_l2() -> None:
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _flush_buffer.zero_()


def bench(fn: Callable[[], object], *, device: str | torch.device = "cuda", warmup: int = 5, reps: int = 30,
          flush_l2: bool = True) -> dict[str, float]:
    """Returns {'median_us', 'min_us', 'max_us'} over ``reps`` timed calls of ``fn``."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            if flush_l2:
                _flush_l2()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return {"median_us": statistics.median(times), "min_us": min(times), "max_us": max(times)}


def bench_graph(fn: Callable[[], object], *, replays: int = 100, warmup: int = 3) -> dict[str, float]:
    """Captures ``fn`` in a CUDA graph and times back-to-back replays: the launch gaps of many small kernels shrink
    to what a decode step inside a graph sees. No L2 flush between replays (it would be captured too)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    per_replay = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        per_replay.append(start.elapsed_time(end) * 1e3 / replays)
    return {"median_us": statistics.median(per_replay), "min_us": min(per_replay), "max_us": max(per_replay)}


def count_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes of the given tensors (each read or written once): the floor of memory traffic."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@contextmanager
def env_setting(name: str, value: str) -> Iterator[None]:
    """The environment variable ``name`` set to ``value`` (a path switch the ops read at each call, e.g.
    csrc/torch/sm90a_policy.h), restored after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name)
        else:
            os.environ[name] = old


def with_env(fn: Callable[[], object], name: str, value: str) -> Callable[[], object]:
    """``fn`` run under ``env_setting(name, value)`` at every call."""
    def run():
        with env_setting(name, value):
            return fn()
    return run
