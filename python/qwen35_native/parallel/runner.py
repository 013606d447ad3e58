"""The engine's model runner on a tensor-parallel world: rank 0 schedules, every rank runs the same step.

Rank 0 runs the whole engine (tokenizer, scheduler, stop checks, outputs). Its :class:`TensorParallelRunner` sends
each :class:`~qwen35_native.engine.StepPlan` to the other ranks over the control group before running it; every
rank runs the plan through its own unchanged ``ModelRunner.execute`` (forward on its shard, logits all-gathered,
the same sampler on the same logits with the plan's seeds). Only rank 0's sampled tokens are used; the others'
identical results are dropped, which keeps their penalty state and CUDA-graph buffers in step for free.

Multimodal prompts travel once: a ``MultimodalPrompt`` (positions, vision features computed by rank 0's
replicated vision tower) is sent, on the CPU, the first time a plan refers to it and is then named by a key;
rank 0 tells the followers to drop it when its own object is garbage-collected.

Tests: tests/parallel/test_llm_tp.py, test_torchrun.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import weakref

logger = logging.getLogger("qwen35_native")


def _on_cpu(mm):
    return dataclasses.replace(mm, features=mm.features.cpu())


class TensorParallelRunner:
    """Wraps rank 0's ``ModelRunner``: ``execute`` broadcasts the plan, then runs it; everything else delegates."""

    def __init__(self, runner, session):
        self.runner, self.session = runner, session
        self._keys: dict[int, int] = {}          # id(MultimodalPrompt) -> key, while the object lives
        self._counter = itertools.count()
        self._forget: list[int] = []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def _drop(self, ident: int, key: int) -> None:
        self._keys.pop(ident, None)
        self._forget.append(key)

    def wire(self, plan):
        """(plan with multimodal prompts replaced by keys, {key: prompt on the CPU} sent now, keys to drop)."""
        forget, self._forget = self._forget, []
        if plan.multimodal is None:
            return plan, {}, forget
        refs, new = [], {}
        for mm in plan.multimodal:
            if mm is None:
                refs.append(None)
                continue
            key = self._keys.get(id(mm))
            if key is None:
                key = next(self._counter)
                self._keys[id(mm)] = key
                weakref.finalize(mm, self._drop, id(mm), key)
                new[key] = _on_cpu(mm)
            refs.append(key)
        return dataclasses.replace(plan, multimodal=refs), new, forget

    def execute(self, plan):
        self.session.check_alive()
        try:
            self.session.send(("step", self.wire(plan)))
            return self.runner.execute(plan)
        except Exception as e:
            self.session.raise_if_failed(e)
            raise


class Follower:
    """A rank > 0: rebuilds each step's plan and runs it on its own ``ModelRunner``."""

    def __init__(self, runner):
        self.runner = runner
        self.prompts: dict[int, object] = {}

    def step(self, payload) -> None:
        plan, new, forget = payload
        for key in forget:
            self.prompts.pop(key, None)
        device = self.runner.device
        for key, mm in new.items():
            self.prompts[key] = dataclasses.replace(mm, features=mm.features.to(device))
        if plan.multimodal is not None:
            plan = dataclasses.replace(plan, multimodal=[None if k is None else self.prompts[k]
                                                         for k in plan.multimodal])
        try:
            self.runner.execute(plan)
        except Exception:  # rank 0 runs the same plan and raises the same error to the user
            logger.debug("qwen35_native: a tensor-parallel step failed on this rank as on rank 0", exc_info=True)
