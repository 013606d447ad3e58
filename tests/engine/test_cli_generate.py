"""``qwen35 generate`` and ``qwen35 chat`` end to end on a tiny checkpoint, in subprocesses (chat reads a pipe).
Code: python/qwen35_native/cli_generate.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import qwen35_native as q35

SUMMARY = re.compile(r"\[prompt (\d+) tokens \| generated (\d+) tokens \((\w+)\) \| time to first token \d+ ms \| "
                     r"[\d.]+ tokens/s\]")


def qwen35(*args, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(q35.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "qwen35_native.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def test_generate_streams_text_and_prints_the_summary(tiny_dir, make_llm, tiny_tokenizer):
    r = qwen35("generate", "--model", tiny_dir, "--prompt", "What is the capital of France?", "--max-tokens", "9",
               "--temperature", "0", "--backend", "reference")
    assert r.returncode == 0, r.stderr
    m = SUMMARY.search(r.stderr)
    assert m and m.group(2) == "9" and m.group(3) == "length", r.stderr
    # the same request through the Python API gives the same text
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = tiny_tokenizer.encode(prompt, add_special_tokens=False)
    out = make_llm().generate([ids], q35.SamplingParams(temperature=0, max_tokens=9))[0]
    assert int(m.group(1)) == len(ids) and r.stdout == out.text + "\n"


def run_main(capsys, *args):
    """The CLI in this process (the subprocess tests above cover start-up); returns (code, stdout, stderr)."""
    from qwen35_native.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_prompt_ids_and_sampling_flags(tiny_dir, capsys):
    code, out, err = run_main(capsys, "generate", "--model", tiny_dir, "--prompt-ids", "5,6,7", "--max-tokens", "4",
                              "--seed", "3", "--top-k", "5", "--presence-penalty", "0.5", "--no-cuda-graphs")
    assert code == 0, err
    assert SUMMARY.search(err).group(1) == "3" and out.endswith("\n")


def test_generate_with_mtp_speculative_decoding(tiny_dir, capsys):
    args = ["generate", "--model", tiny_dir, "--prompt-ids", "5,6,7", "--max-tokens", "6", "--seed", "3"]
    code, plain, err = run_main(capsys, *args)
    assert code == 0, err
    code, out, err = run_main(capsys, *args, "--speculative-config", '{"method": "mtp", "num_speculative_tokens": 1}')
    assert code == 0, err
    assert out == plain and re.search(r"tokens/s \| drafts accepted \d+/\d+\]", err), err


@pytest.mark.parametrize("args,message", [
    (["--prompt", "hi", "--image", "no-such-cat.png"], "no-such-cat.png"),
    (["--prompt-ids", "1,2", "--image", "cat.png"], "--image/--video need a text --prompt sent through the chat"),
    (["--prompt", "hi", "--video", "no-such-dir"], "no video at no-such-dir"),
    (["--prompt", "hi", "--tp", "4"], "tensor_parallel_size=4 does not divide linear_num_key_heads=2"),
    (["--prompt", "hi", "--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--prompt-ids", "1,x"], "--prompt-ids must be comma-separated integers"),
    ([], "give exactly one of --prompt and --prompt-ids"),
    (["--prompt-ids", "1," * 5000], "context holds max_model_len"),
    (["--prompt-ids", "1", "--speculative-config", "mtp"], "--speculative-config must be a JSON object"),
    (["--prompt-ids", "1", "--speculative-config", '{"method": "ngram"}'], "method must be one of ['mtp']"),
])
def test_generate_errors(tiny_dir, capsys, args, message):
    code, _, err = run_main(capsys, "generate", "--model", tiny_dir, *args)
    assert code == 2 and message in err, err


def test_generate_unknown_model_dir(tmp_path, capsys):
    code, _, err = run_main(capsys, "generate", "--model", str(tmp_path / "nope"), "--prompt", "hi")
    assert code == 2 and "does not exist" in err


def test_chat_reads_turns_from_a_pipe(tiny_dir):
    r = qwen35("chat", "--model", tiny_dir, "--max-tokens", "5", "--seed", "1", "--backend", "reference",
               stdin="Hello there\n\nAnd a second question\n/exit\nnever read\n")
    assert r.returncode == 0, r.stderr
    turns = SUMMARY.findall(r.stderr)
    assert len(turns) == 2 and all(t[1] == "5" for t in turns)
    assert int(turns[1][0]) > int(turns[0][0]) + 5   # the second prompt carries the first turn as history


def test_chat_with_prefix_caching_resumes_the_history(tiny_dir):
    """The second turn's prompt extends the first: with --enable-prefix-caching it resumes from the first turn's
    cached blocks (KV block size 64) and prints the same text."""
    args = ("chat", "--model", tiny_dir, "--max-tokens", "4", "--seed", "1", "--backend", "reference")
    stdin = "Tell me about " + "the sea and the sky, " * 12 + "please.\n\nAnd then?\n/exit\n"
    plain, cached = qwen35(*args, stdin=stdin), qwen35(*args, "--enable-prefix-caching", stdin=stdin)
    assert plain.returncode == 0 and cached.returncode == 0, cached.stderr
    assert cached.stdout == plain.stdout and "cached" not in plain.stderr
    hits = [(int(a), int(b)) for a, b in re.findall(r"prompt tokens cached (\d+)/(\d+)\]", cached.stderr)]
    assert len(hits) == 2 and hits[0][0] == 0 and hits[1][0] >= 64 and hits[1][1] > hits[0][1], cached.stderr


def test_generate_with_image_and_video_files(tiny_dir, tmp_path, capsys):
    """--image PATH and --video DIR_OF_FRAMES give the tokens of llm.chat on the same content parts."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(40, 56, 3) * 255).astype(np.uint8)).save(tmp_path / "cat.png")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (2, 10, 1, 3):  # natural order: 1, 2, 3, 10
        Image.fromarray((rng.rand(32, 48, 3) * 255).astype(np.uint8)).save(frames / f"f{i}.png")
    code, out, err = run_main(capsys, "generate", "--model", tiny_dir, "--prompt", "Describe.", "--image",
                              str(tmp_path / "cat.png"), "--video", str(frames), "--video-fps", "2", "--max-tokens",
                              "4", "--temperature", "0", "--backend", "reference",
                              "--no-cuda-graphs")
    assert code == 0, err
    llm = q35.LLM(tiny_dir, backend="reference")
    content = [{"type": "image", "image": str(tmp_path / "cat.png")},
               {"type": "video", "video": str(frames), "fps": 2.0}, {"type": "text", "text": "Describe."}]
    reply = llm.chat([{"role": "user", "content": content}],
                     q35.SamplingParams(temperature=0, max_tokens=4))
    summary = SUMMARY.search(err)
    assert summary.group(1) == str(len(reply.prompt_token_ids)) and summary.group(2) == str(len(reply.token_ids))
    assert out == llm.tokenizer.decode(reply.token_ids) + "\n"
