"""Shared fixtures of the engine/chat tests: a tiny Qwen-style tokenizer written to a checkpoint-like directory."""

import os

import pytest

from utils import one_intra_op_thread

# The HF oracle must never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from qwen35_native.chat import build_tiny_tokenizer, write_tokenizer_files

    directory = tmp_path_factory.mktemp("tiny_tokenizer")
    write_tokenizer_files(directory, build_tiny_tokenizer())
    return directory


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from qwen35_native.chat import Tokenizer

    return Tokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(autouse=True)
def _one_thread():
    with one_intra_op_thread():
        yield


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny-moe checkpoint written by make-tiny (fp32, release layout, tokenizer and chat template)."""
    from qwen35_native.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("engine") / "tiny-moe"), "tiny-moe", seed=1)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    import qwen35_native as q35

    return q35.from_pretrained(tiny_dir, backend="reference")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir):
    from qwen35_native.chat import Tokenizer

    return Tokenizer.from_pretrained(tiny_dir)


@pytest.fixture
def make_llm(tiny_dir, tiny_model, tiny_tokenizer):
    """``make_llm(**engine_kwargs)``: an LLM on the session's tiny model (shared weights, fresh caches)."""
    import json
    import os

    import qwen35_native as q35

    with open(os.path.join(tiny_dir, "generation_config.json")) as f:
        generation_config = json.load(f)

    def make(tokenizer=True, **kwargs):
        return q35.LLM(tiny_model, tokenizer=tiny_tokenizer if tokenizer else False,
                       generation_config=generation_config, **kwargs)

    return make


@pytest.fixture(scope="module")
def served(tiny_dir, tiny_model, tiny_tokenizer):
    """(OpenAI server on port 0 named "tiny", reference LLM): two engines on the session's tiny model; the
    server's is driven by its own thread (tests/engine/test_serve*.py)."""
    import json

    import qwen35_native as q35
    from qwen35_native.serve import OpenAIServer

    with open(f"{tiny_dir}/generation_config.json") as f:
        generation_config = json.load(f)

    def llm():
        return q35.LLM(tiny_model, tokenizer=tiny_tokenizer, generation_config=generation_config, max_num_seqs=8)

    server = OpenAIServer(llm(), port=0, served_model_name="tiny").start()
    try:
        yield server, llm()
    finally:
        server.shutdown()
