"""Starting a tensor-parallel world for ``q35.LLM(path, tensor_parallel_size=N)``.

- Under ``torchrun`` (``WORLD_SIZE`` set, or a default process group already initialised): every rank runs the
  user's script; each joins the existing world (``groups.join_torchrun``).
- From a plain Python process: this process is rank 0 and starts ranks 1..N-1 itself, each a fresh interpreter
  (``python -m qwen35_native.parallel.worker``; spawned, never forked, and without re-running the user's
  script). Rendezvous goes through a TCP store that rank 0 opens on a free port of 127.0.0.1; the workers report
  their progress (joining, loaded, ready, or the traceback of a failure) in that store, and rank 0 waits for each
  stage while watching the processes, so a worker that fails or dies at start-up is a clear error, never a hang.
  After start-up a monitor thread watches the workers: when one dies, rank 0's next step raises ``RankFailure``
  naming it (an NCCL group is aborted so that a collective waiting for the dead rank returns). Workers exit when
  rank 0 shuts down (``LLM.shutdown()``, or at interpreter exit) and also, by themselves, when rank 0's process
  disappears: no orphans.

Tests: tests/parallel/test_llm_tp.py, test_torchrun.py, test_layout.py (errors before any start).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
import time
import weakref

import torch
import torch.distributed as dist

from .groups import collective_timeout, init_group, join_torchrun, rank_device, torchrun_world
from .session import TPSession

logger = logging.getLogger("qwen35_native")

WORKER_ENV = "QWEN35_TP_WORKER"
STAGES = ("joining", "loaded", "ready")
_worker_spec: dict | None = None   # set in a started worker process (``worker.py``)


def _status_key(rank: int) -> str:
    return f"qwen35_native/status/{rank}"


class Workers:
    """Rank 0's handle on the worker processes it started."""

    def __init__(self, store, procs: dict[int, subprocess.Popen]):
        self.store, self.procs = store, procs
        self.failure: str | None = None
        self.stopping = False
        self._monitor: threading.Thread | None = None
        self.group = None

    def _dead(self) -> str | None:
        for rank, p in self.procs.items():
            code = p.poll()
            if code is not None:
                return f"tensor-parallel worker rank {rank} (pid {p.pid}) exited with code {code}"
        return None

    def _error(self, rank: int) -> str | None:
        key = _status_key(rank)
        if self.store.check([key]):
            value = self.store.get(key).decode()
            if value.startswith("error:"):
                return f"tensor-parallel worker rank {rank} failed:\n{value[len('error:'):].strip()}"
        return None

    def wait_stage(self, stage: str, timeout: float | None = None) -> None:
        """Waits until every worker reached ``stage``; raises RankFailure when one failed, died or timed out."""
        from .session import RankFailure

        timeout = collective_timeout().total_seconds() if timeout is None else timeout
        want = STAGES.index(stage)
        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending:
            for rank in sorted(pending):
                error = self._error(rank)
                if error:
                    self.failure = error
                    raise RankFailure(f"qwen35_native.LLM: {error}")
                key = _status_key(rank)
                if self.store.check([key]) and STAGES.index(self.store.get(key).decode()) >= want:
                    pending.discard(rank)
            dead = self._dead()
            if pending and dead:
                time.sleep(0.2)          # its error report may still be on the way
                error = next((e for e in map(self._error, sorted(pending)) if e), None)
                self.failure = error or dead
                raise RankFailure(f"qwen35_native.LLM: {self.failure} before it was {stage}")
            if pending and time.monotonic() > deadline:
                self.failure = f"tensor-parallel workers {sorted(pending)} were not {stage} after {timeout:.0f} s"
                raise RankFailure(f"qwen35_native.LLM: {self.failure} (QWEN35_TP_TIMEOUT)")
            if pending:
                time.sleep(0.05)

    def start_monitor(self, group, backend: str) -> None:
        self.group = group
        self._monitor = threading.Thread(target=self._watch, args=(backend,), name="qwen35-tp-monitor",
                                         daemon=True)
        self._monitor.start()

    def _watch(self, backend: str) -> None:
        while not self.stopping:
            dead = self._dead()
            if dead and not self.stopping:
                self.failure = dead
                logger.error("qwen35_native: %s", dead)
                if backend == "nccl":    # a collective waiting for the dead rank would wait out the timeout
                    try:
                        dist.distributed_c10d._abort_process_group(self.group)
                    except Exception as e:  # best effort: the timeout still ends the wait
                        logger.warning("qwen35_native: could not abort the NCCL group: %s", e)
                return
            time.sleep(0.2)

    def wait_failure(self, timeout: float) -> bool:
        """True once a worker is known dead (waits up to ``timeout`` for the exit to show)."""
        deadline = time.monotonic() + timeout
        while not self.failure:
            dead = self._dead()
            if dead:
                self.failure = dead
            elif time.monotonic() > deadline:
                return False
            else:
                time.sleep(0.05)
        return True

    def stop(self, grace: float = 10.0) -> None:
        """Waits for the workers to exit (they were told to), then terminates, then kills what is left."""
        self.stopping = True
        deadline = time.monotonic() + (grace if not self.failure else 1.0)
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(world: int, device, path: str, worker_kwargs: dict) -> TPSession:
    """This process's rank of a ``world``-rank tensor-parallel LLM (see the module docstring)."""
    if _worker_spec is not None:
        return _join_as_worker(_worker_spec)
    if torchrun_world() is not None or dist.is_initialized():
        session = TPSession(join_torchrun(world, device), "torchrun")
        _close_at_exit(session)
        return session
    return _spawn(world, device, path, worker_kwargs)


def _spawn(world: int, device, path: str, worker_kwargs: dict) -> TPSession:
    dev = rank_device(device, 0)
    if dev.type == "cuda" and (dev.index + world) > torch.cuda.device_count():
        raise ValueError(f"qwen35_native.LLM: tensor_parallel_size={world} from cuda:{dev.index} needs "
                         f"{dev.index + world} GPUs, this machine has {torch.cuda.device_count()}")
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False,
                          timeout=collective_timeout())
    threads = max(1, (os.cpu_count() or 1) // world) if dev.type == "cpu" else None
    procs = {}
    for rank in range(1, world):
        spec = {"rank": rank, "world": world, "port": store.port, "parent": os.getpid(), "path": path,
                "device": "cpu" if dev.type == "cpu" else f"cuda:{dev.index}", "threads": threads,
                "kwargs": worker_kwargs}
        env = dict(os.environ, **{WORKER_ENV: json.dumps(spec)})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):   # never let a worker think it runs under torchrun
            env.pop(key, None)
        procs[rank] = subprocess.Popen([sys.executable, "-m", "qwen35_native.parallel.worker"], env=env,
                                       stdin=subprocess.DEVNULL)
    workers = Workers(store, procs)
    try:
        workers.wait_stage("joining")
        ctx = init_group(0, world, dev, store)
    except BaseException:
        workers.stop(grace=0.0)
        raise
    workers.start_monitor(ctx.group, ctx.backend)
    session = TPSession(ctx, "spawn", workers)
    _close_at_exit(session)
    logger.info("qwen35_native: started %d tensor-parallel workers (pids %s) on %s", world - 1,
                [p.pid for p in procs.values()], "CUDA" if dev.type == "cuda" else "the CPU")
    return session


def _package_root() -> str:
    """The directory this copy of qwen35_native is imported from (the workers import the same one)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _close_at_exit(session: TPSession) -> None:
    ref = weakref.ref(session)

    def close():
        s = ref()
        if s is not None:
            s.shutdown()
    atexit.register(close)


def _join_as_worker(spec: dict) -> TPSession:
    store = dist.TCPStore("127.0.0.1", spec["port"], spec["world"], is_master=False,
                          timeout=collective_timeout())
    store.set(_status_key(spec["rank"]), "joining")
    dev = rank_device(spec["device"], spec["rank"])
    ctx = init_group(spec["rank"], spec["world"], dev, store)
    session = TPSession(ctx, "worker")
    session.store = store
    return session


def report(session: TPSession, stage: str) -> None:
    """A worker tells rank 0 it reached ``stage``; rank 0 waits until every worker has."""
    if session.role == "worker":
        session.store.set(_status_key(session.ctx.rank), stage)
    elif session.workers is not None:
        session.workers.wait_stage(stage)


def report_error(store_port: int, world: int, rank: int, text: str) -> None:
    """A worker's start-up failure, for rank 0 to raise (best effort)."""
    try:
        store = dist.TCPStore("127.0.0.1", store_port, world, is_master=False,
                              timeout=collective_timeout())
        store.set(_status_key(rank), "error:" + text)
    except Exception:
        pass
