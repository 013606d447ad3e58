"""``qwen35 serve`` in a subprocess: it announces its address, answers a chat request like ``LLM.chat`` (with the
API key it was given; 401 without), and stops cleanly on Ctrl-C (SIGINT).
Code: python/qwen35_native/cli_serve.py, serve/http.py."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import qwen35_native as q35
from openai_client import post, request

USER = [{"role": "user", "content": "Say something."}]


def test_serve_answers_and_stops_on_sigint(tiny_dir, make_llm):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(q35.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "qwen35_native.cli", "serve", "--model", str(tiny_dir),
                             "--backend", "reference", "--device", "cpu", "--port", "0",
                             "--served-model-name", "tiny-chat", "--api-key", "sekret"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        match = re.search(r"tiny-chat on (http://[\d.]+:\d+)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        url = match.group(1)
        auth = {"Authorization": "Bearer sekret"}
        assert request(url, "GET", "/v1/models", headers=auth)[1]["data"][0]["id"] == "tiny-chat"
        status, out = request(url, "GET", "/v1/models")
        assert status == 401 and out["error"]["type"] == "authentication_error"
        assert request(url, "GET", "/health")[0] == 200   # health checks need no key
        assert post(url, "/v1/chat/completions", {"messages": USER})[0] == 401
        status, out = request(url, "POST", "/v1/chat/completions", {"model": "tiny-chat", "messages": USER,
                                                                   "max_tokens": 6, "temperature": 0}, headers=auth)
        assert status == 200, out
        want = make_llm().chat(USER, q35.SamplingParams(max_tokens=6, temperature=0))
        assert out["choices"][0]["message"]["content"] == want.text
        assert out["choices"][0]["message"]["reasoning_content"] == want.reasoning
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
