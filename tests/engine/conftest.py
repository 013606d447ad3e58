"""Shared fixtures of the engine/chat tests: a tiny Qwen-style tokenizer written to a checkpoint-like directory."""

import os

import pytest

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
