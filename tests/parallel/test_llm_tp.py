"""``q35.LLM(path, tensor_parallel_size=2)`` from this (plain) process on the CPU: it starts one worker process,
generates exactly what the single-process LLM generates (greedy and seeded sampling, streamed, chat with an image:
vision features travel to the worker once), and when the worker dies the next call raises a clear error instead of
hanging; shutdown leaves no process and no process group behind; when rank 0's process is killed, its worker exits
by itself (no orphan).
Code: python/qwen35_native/parallel/launch.py, session.py, runner.py, engine.py; engine/llm.py."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

import qwen35_native as q35
from qwen35_native.parallel.session import RankFailure

GREEDY = q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
SAMPLED = q35.SamplingParams(temperature=0.8, top_p=0.9, max_tokens=6, seed=3, ignore_eos=True)
PROMPTS = ["The capital of France is", [5, 17, 99, 230, 4], "Once upon a time"]


def image_chat(seed=0):
    picture = (np.random.RandomState(seed).rand(40, 56, 3) * 255).astype(np.uint8)
    return [{"role": "user", "content": [{"type": "image", "image": picture},
                                         {"type": "text", "text": "What is in the picture?"}]}]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from qwen35_native.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("llm_tp") / "tiny-moe"), "tiny-moe", seed=2)


@pytest.fixture(scope="module")
def llms(tiny_path):
    torch.set_num_threads(1)
    tp = q35.LLM(tiny_path, tensor_parallel_size=2, device="cpu", backend="reference", moe_parallel="ep",
                 max_num_seqs=4)
    try:
        one = q35.LLM(tiny_path, device="cpu", backend="reference", max_num_seqs=4)
        yield one, tp
    finally:
        tp.shutdown()


def run(llm):
    outs = llm.generate(PROMPTS, [GREEDY, GREEDY, SAMPLED])
    streamed = [t for d in llm.generate(PROMPTS[0], GREEDY, stream=True) for t in d.token_ids]
    reply = llm.chat(image_chat(), GREEDY)
    return [o.outputs[0].token_ids for o in outs], [o.outputs[0].text for o in outs], streamed, reply.token_ids


def test_generation_equals_single_process(llms):
    one, tp = llms
    assert (tp.rank, tp.tensor_parallel_size) == (0, 2)
    ids, texts, streamed, chat = run(tp)
    ref_ids, ref_texts, ref_streamed, ref_chat = run(one)
    assert ids == ref_ids and texts == ref_texts
    assert streamed == ref_streamed == ref_ids[0]
    assert chat == ref_chat and len(chat) == GREEDY.max_tokens


def test_openai_server_on_two_ranks(llms):
    """The server's engine thread (not the main thread) drives rank 0; the worker follows its plans."""
    from openai_client import png_data_url, post, stream, stream_texts
    from qwen35_native.serve import OpenAIServer

    one, tp = llms
    picture = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url()}},
                                            {"type": "text", "text": "What is in the picture?"}]}]
    with OpenAIServer(tp, port=0).start() as server:
        status, out = post(server.url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0.8,
                                                             "top_p": 0.9, "seed": 3, "ignore_eos": True})
        status, events = stream(server.url, "/v1/chat/completions", {"messages": picture, "max_tokens": 6,
                                                                     "temperature": 0, "ignore_eos": True})
    assert status == 200
    assert out["choices"][0]["text"] == one.generate(PROMPTS[0], SAMPLED)[0].text
    reply = one.chat(picture, GREEDY)
    assert stream_texts(events, "reasoning_content").get(0, "") == (reply.reasoning or "")
    assert stream_texts(events, "content")[0] == reply.text
    assert tp.generate(PROMPTS[2], GREEDY)[0].token_ids == one.generate(PROMPTS[2], GREEDY)[0].token_ids


def test_a_dying_worker_is_a_clear_error_and_shutdown_cleans_up(llms):
    _, tp = llms
    worker = tp._tp.workers.procs[1]
    os.kill(worker.pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(RankFailure, match=rf"worker rank 1 \(pid {worker.pid}\) exited with code -9"):
        tp.generate(PROMPTS[:1], GREEDY)
    assert time.monotonic() - start < 30
    with pytest.raises(RankFailure, match="worker rank 1"):    # and every later call, at once
        tp.generate(PROMPTS[:1], GREEDY)
    tp.shutdown()
    assert worker.poll() is not None and not dist.is_initialized()
    with pytest.raises(RuntimeError, match="shut down"):
        tp.generate(PROMPTS[:1], GREEDY)


RANK0_SCRIPT = """
import sys, time
import qwen35_native as q35
llm = q35.LLM(sys.argv[1], tensor_parallel_size=2, device="cpu", backend="reference")
print(llm._tp.workers.procs[1].pid, flush=True)
time.sleep(600)
"""


def test_killing_rank0_leaves_no_orphan_worker(tiny_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(q35.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    rank0 = subprocess.Popen([sys.executable, "-c", RANK0_SCRIPT, tiny_path], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = rank0.stdout.readline()
        assert line.strip().isdigit(), rank0.stderr.read()[-2000:] if rank0.poll() is not None else line
        worker = int(line)
    finally:
        rank0.kill()
        rank0.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.2)
    assert not _alive(worker), f"worker {worker} outlived rank 0"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"     # a zombie has exited (its parent is gone; init reaps it)
    except FileNotFoundError:
        return False
