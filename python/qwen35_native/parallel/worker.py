"""Entry point of a tensor-parallel worker that rank 0 started (``launch.py``): ``python -m
qwen35_native.parallel.worker`` with its rank, world and checkpoint in the ``QWEN35_TP_WORKER`` environment
variable (JSON). It builds the same ``q35.LLM`` as rank 0 (its shard of the model, caches, runner), reports ready,
runs rank 0's steps until rank 0 shuts down, and exits; it exits on its own when rank 0's process disappears."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback


def _exit_with_parent(parent: int) -> None:
    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)
    threading.Thread(target=watch, name="qwen35-tp-parent-watch", daemon=True).start()


def main() -> int:
    spec = json.loads(os.environ["QWEN35_TP_WORKER"])
    _exit_with_parent(spec["parent"])
    try:
        import torch

        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        from ..engine import LLM
        from . import launch

        launch._worker_spec = spec
        llm = LLM(spec["path"], device=spec["device"], tensor_parallel_size=spec["world"], tokenizer=False,
                  progress=False, **spec["kwargs"])
    except BaseException:
        from .launch import report_error

        text = traceback.format_exc()
        report_error(spec["port"], spec["world"], spec["rank"], text)
        print(f"qwen35_native tensor-parallel worker rank {spec['rank']}:\n{text}", file=sys.stderr, flush=True)
        return 1
    try:
        llm._tp.serve()
    finally:
        llm._tp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
