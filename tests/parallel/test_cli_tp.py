"""The command line with tensor parallelism on the CPU: ``torchrun --nproc-per-node 2 -m qwen35_native.cli generate
--tp 2`` (every rank runs the command and joins the torchrun world; only rank 0 prints) and ``qwen35 generate --tp
2`` (the command starts its worker itself) both print exactly the single-process greedy completion. The two runs go
side by side to save wall time. Code: cli_generate.py, python/qwen35_native/parallel/launch.py, session.py."""

import os
import subprocess
import sys

import pytest
import torch

import qwen35_native as q35

PROMPT_IDS = [5, 17, 99, 230, 4, 61]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from qwen35_native.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("cli_tp") / "tiny-moe"), "tiny-moe", seed=4)


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(q35.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    env.pop("WORLD_SIZE", None)
    return env


def test_torchrun_and_spawned_cli_print_the_single_process_completion(tiny_path):
    args = ["generate", "--model", tiny_path, "--prompt-ids", ",".join(map(str, PROMPT_IDS)), "--temperature", "0",
            "--max-tokens", str(MAX_TOKENS), "--device", "cpu", "--backend", "reference", "--tp", "2"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "qwen35_native.cli", *args]
    spawned = [sys.executable, "-m", "qwen35_native.cli", *args, "--moe-parallel", "ep"]
    runs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for cmd in (torchrun, spawned)]
    torch.set_num_threads(1)
    ref = q35.LLM(tiny_path, device="cpu", backend="reference").generate(
        PROMPT_IDS, q35.SamplingParams(temperature=0, max_tokens=MAX_TOKENS))[0]
    assert ref.outputs[0].token_ids
    for name, proc in zip(("torchrun", "spawned"), runs):
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{name} run timed out:\n{err[-3000:]}")
        assert proc.returncode == 0, f"{name} run failed:\n{err[-3000:]}"
        assert out == ref.outputs[0].text + "\n", (name, out, err[-2000:])   # printed once, by rank 0
        assert err.count("[prompt 6 tokens | generated") == 1, err[-2000:]
