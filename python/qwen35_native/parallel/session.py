"""One rank's membership in a tensor-parallel ``LLM``: the control channel, mirrored calls, serving and shutdown.

Messages go from rank 0 to every other rank over the control group (``broadcast_object_list``):

- ``("step", payload)``: run this step plan (``runner.py``);
- ``("yield", item)`` / ``("return", value)`` / ``("raise", error)``: the outcome of the ``generate`` / ``chat``
  call that rank 0 is running (sent under ``torchrun`` only, where every rank calls the same methods);
- ``("shutdown",)``: rank 0 is closing; followers leave.

Roles: ``"spawn"`` (rank 0 in the user's process; it started the workers), ``"worker"`` (a started worker: it
serves steps until shutdown), ``"torchrun"`` (every rank runs the user's script; ranks > 0 mirror rank 0's calls
and return rank 0's results).

Tests: tests/parallel/test_llm_tp.py, test_torchrun.py.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle

import torch.distributed as dist

from .groups import TPContext
from .runner import Follower, TensorParallelRunner

logger = logging.getLogger("qwen35_native")


class RankFailure(RuntimeError):
    """A tensor-parallel peer died or failed: the LLM cannot continue."""


def _portable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


class TPSession:
    def __init__(self, ctx: TPContext, role: str, workers=None):
        self.ctx, self.role, self.workers = ctx, role, workers
        self.follower: Follower | None = None
        self.closed = False
        self.ready = False       # start-up finished on every rank
        self.store = None        # a started worker's rendezvous store (progress reports)

    @property
    def is_leader(self) -> bool:
        return self.ctx.rank == 0

    @property
    def mirrors_calls(self) -> bool:
        return self.role == "torchrun"

    # ------------------------------------------------------------------------------------------------------------
    def check_alive(self) -> None:
        if self.closed:
            raise RuntimeError("qwen35_native.LLM: this tensor-parallel LLM was shut down")
        if self.workers is not None and self.workers.failure:
            raise RankFailure(f"qwen35_native.LLM: {self.workers.failure}")

    def raise_if_failed(self, error: BaseException) -> None:
        """After a failed collective: the clear cause when a worker died (waits briefly for its exit to show)."""
        if self.workers is not None and self.workers.wait_failure(timeout=5.0):
            raise RankFailure(f"qwen35_native.LLM: {self.workers.failure}") from error

    def send(self, message) -> None:
        dist.broadcast_object_list([message], src=0, group=self.ctx.control)

    def recv(self):
        box = [None]
        try:
            dist.broadcast_object_list(box, src=0, group=self.ctx.control)
        except Exception as e:
            raise RankFailure(f"qwen35_native: tensor-parallel rank {self.ctx.rank} lost rank 0 ({e})") from e
        return box[0]

    # ------------------------------------------------------------------------------------------------------------
    def wrap_runner(self, runner):
        """Rank 0's runner broadcasts its plans; the others' follow them."""
        if self.is_leader:
            return TensorParallelRunner(runner, self)
        self.follower = Follower(runner)
        return runner

    def agree_cache_plan(self, plan):
        """Every rank sized its caches alone (free GPU memory differs): all take the smallest."""
        blocks = self.ctx.all_min(plan.num_blocks)
        length = self.ctx.all_min(plan.max_model_len)
        return dataclasses.replace(plan, num_blocks=blocks, max_model_len=min(length, blocks * plan.block_size))

    def _handle(self, message) -> tuple[str, object]:
        kind = message[0]
        if kind == "step":
            self.follower.step(message[1])
        return kind, message[1] if len(message) > 1 else None

    def serve(self) -> None:
        """Follower: runs rank 0's steps until rank 0 shuts down (call outcomes are ignored)."""
        while True:
            kind, _ = self._handle(self.recv())
            if kind == "shutdown":
                return

    # ------------------------------------------------------------------------------------------------------------
    def call(self, fn, stream: bool):
        """``LLM.generate`` / ``chat`` under this session: rank 0 runs ``fn`` (and, under torchrun, tells the
        followers its outcome); a torchrun follower runs rank 0's steps and returns rank 0's outcome."""
        self.check_alive()
        if not self.mirrors_calls:
            return fn()
        if not self.is_leader:
            return self._follow_stream() if stream else self._follow()
        try:
            result = fn()
        except BaseException as e:
            self.send(("raise", _portable(e)))
            raise
        if not stream:
            self.send(("return", result))
            return result
        return self._lead_stream(result)

    def _lead_stream(self, items):
        done = False
        try:
            for item in items:
                self.send(("yield", item))
                yield item
            done = True
        except BaseException as e:
            if not isinstance(e, GeneratorExit):
                self.send(("raise", _portable(e)))
                done = None
            raise
        finally:
            if done is not None:   # finished, or the caller stopped early (GeneratorExit)
                self.send(("return", None))

    def _follow(self):
        while True:
            kind, value = self._handle(self.recv())
            if kind == "return":
                return value
            if kind == "raise":
                raise value
            if kind == "shutdown":
                raise RuntimeError("qwen35_native.LLM: rank 0 shut down while this rank waited for its call")

    def _follow_stream(self):
        try:
            while True:
                kind, value = self._handle(self.recv())
                if kind == "yield":
                    yield value
                elif kind == "return":
                    return
                elif kind == "raise":
                    raise value
                elif kind == "shutdown":
                    raise RuntimeError("qwen35_native.LLM: rank 0 shut down during a streamed call")
        except GeneratorExit:   # this rank stopped reading early: still follow rank 0 to the end of its call
            self._follow()

    # ------------------------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Rank 0: tells the followers to leave (and stops its workers). A torchrun follower: serves rank 0's steps
        until rank 0 shuts down. Then the groups are destroyed. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.is_leader:
                failed = self.workers is not None and self.workers.failure
                if self.ready and not failed:
                    try:
                        self.send(("shutdown",))
                    except Exception as e:  # a worker died meanwhile: the workers are stopped below anyway
                        logger.warning("qwen35_native: could not tell the tensor-parallel workers to stop: %s", e)
            elif self.role == "torchrun" and self.ready:
                self.serve()
        finally:
            if self.workers is not None:
                self.workers.stop()
            self.ctx.destroy()
