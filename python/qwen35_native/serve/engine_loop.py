"""The thread that owns an ``LLM`` while it serves: requests from any thread join the running batch between steps.

One thread serves every job: it prepares each submitted job's prompts (tokenizing, rendering chat templates,
preprocessing images), queues them, steps the engine while anything runs, and hands each job its deltas and, when
every one of its requests is done, its outputs. HTTP threads only put jobs and cancellations into an inbox and read
their job's event queue. Engine steps are taken under ``llm.engine_lock``, so ``llm.generate`` from other threads
still works beside the server (its requests join the same batch).

Events a job receives, in order: ``("started", [Request per prompt])``, any number of ``("delta",
GenerationDelta)``, then ``("done", [RequestOutput per prompt])``. Instead, and then nothing more: ``("error",
exception)`` when preparing or queueing its prompts failed (bad input), or ``("failed", exception)`` when an
engine step failed (the server's fault; every running job gets it).

Tests: tests/engine/test_serve.py, test_serve_chat.py; tests/parallel/test_llm_tp.py (two ranks).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine.llm import take_deltas
from .metrics import ServerMetrics

logger = logging.getLogger("qwen35_native")

# prepare(llm) -> (prepared prompts, one SamplingParams per prompt[, per prompt whether it opened a think block:
# its structured outputs then apply after the reply's </think>]); runs on the engine thread
Prepare = Callable[[Any], tuple]


@dataclass(eq=False)
class Job:
    prepare: Prepare
    events: queue.Queue = field(default_factory=queue.Queue)
    requests: list = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)


class EngineLoop:
    """``submit(prepare)`` -> :class:`Job`; ``cancel(job)`` stops its requests (a client went away); ``close()``
    ends the thread, failing what still runs. The loop sleeps on its inbox while nothing runs."""

    def __init__(self, llm):
        if getattr(llm, "_tp", None) is not None and llm._tp.mirrors_calls:
            raise ValueError("qwen35_native.serve: a server cannot run under torchrun (its ranks would wait for "
                             "generate() calls); start it from a plain process with tensor_parallel_size=N, which "
                             "starts the worker processes itself")
        self.llm = llm
        self.metrics = ServerMetrics()
        self._inbox: queue.Queue = queue.Queue()
        self._jobs: list[Job] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="qwen35-engine", daemon=True)
        self._thread.start()

    def submit(self, prepare: Prepare) -> Job:
        if self._closed:
            raise RuntimeError("qwen35_native.serve: the engine loop is closed (shut down, or its thread stopped)")
        job = Job(prepare)
        self._inbox.put(job)
        return job

    def cancel(self, job: Job) -> None:
        job.cancelled.set()
        self._inbox.put(None)  # wakes the loop

    def close(self, timeout: float | None = 30.0) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
            self._thread.join(timeout)

    @property
    def num_running(self) -> int:
        return len(self._jobs)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def next_event(self, job: Job, poll: float = 1.0) -> tuple[str, Any]:
        """The job's next event; a ``("failed", ...)`` event if the engine thread is gone (a bug, or a
        BaseException such as a worker process dying under tensor parallelism) instead of waiting forever."""
        while True:
            try:
                return job.events.get(timeout=poll)
            except queue.Empty:
                if not self.alive:
                    return "failed", RuntimeError("qwen35_native.serve: the engine thread has stopped")

    # ------------------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # the thread ends: what runs or waits fails now, later submits fail at once
            logger.exception("qwen35_native.serve: the engine thread stopped")
            self._closed = True
            error = RuntimeError(f"qwen35_native.serve: the engine thread has stopped ({type(e).__name__}: {e})")
            self._fail_all(error)
            self._fail_inbox(error)

    def _serve(self) -> None:
        while True:
            busy = bool(self._jobs)
            try:
                self._take(self._inbox.get(block=not busy))
                while True:
                    self._take(self._inbox.get_nowait())
            except queue.Empty:
                pass
            if self._closed:
                error = RuntimeError("qwen35_native.serve: the server is shutting down")
                self._fail_all(error)
                self._fail_inbox(error)
                return
            try:
                with self.llm.engine_lock:  # other threads may call llm.generate meanwhile: one step at a time
                    self._drop_cancelled()
                    if not self._jobs:
                        continue
                    if self.llm.engine.has_unfinished():
                        self.llm.engine.step()
                    self._dispatch()
            except Exception as e:  # a failed step fails what runs; the server goes on with new requests
                logger.exception("qwen35_native.serve: an engine step failed")
                self._fail_all(e)

    def _take(self, job: Job | None) -> None:
        if job is None:
            return
        if job.cancelled.is_set():
            return
        try:
            prompts, params, *opened_think = job.prepare(self.llm)
            job.requests = self.llm.add_requests(prompts, params, *opened_think)
        except Exception as e:  # bad input: only this job fails
            job.events.put(("error", e))
            return
        job.events.put(("started", list(job.requests)))
        self._jobs.append(job)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._jobs if j.cancelled.is_set()]:
            self._abort(job)
            self._jobs.remove(job)

    def _abort(self, job: Job) -> None:
        with self.llm.engine_lock:
            for r in job.requests:
                self.metrics.record(r, aborted=not r.finished)
                self.llm.engine.abort(r)
                r.updates.clear()

    def _fail_all(self, error: Exception) -> None:
        for job in self._jobs:
            self._abort(job)
            job.events.put(("failed", error))
        self._jobs.clear()

    def _fail_inbox(self, error: Exception) -> None:
        try:
            while True:
                job = self._inbox.get_nowait()
                if job is not None:
                    job.events.put(("failed", error))
        except queue.Empty:
            pass

    def _dispatch(self) -> None:
        for job in list(self._jobs):
            for index, r in enumerate(job.requests):
                for delta in take_deltas(r, index):
                    job.events.put(("delta", delta))
            if all(r.finished for r in job.requests):
                for r in job.requests:
                    self.metrics.record(r)
                job.events.put(("done", [self.llm.engine.output(r) for r in job.requests]))
                self._jobs.remove(job)
