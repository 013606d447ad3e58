"""Fixtures of the vision tests: a tiny checkpoint with a vision tower (make-tiny), our fp32 model, transformers'
model of the same files, the checkpoint's vision processor and tokenizer."""

import logging

import pytest
import torch

import qwen35_native as q35
from qwen35_native.chat.tokenizer import load_tokenizer
from qwen35_native.multimodal import VisionProcessor
from qwen35_native.tiny import write_tiny_checkpoint

logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models are made of many small ops: one intra-op thread avoids OpenMP spin-waiting, which costs
    5-10x on a shared 2-core machine (restored after each module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vision_dir(tmp_path_factory):
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("vision") / "moe"), "tiny-moe", seed=7)


@pytest.fixture(scope="session")
def model(vision_dir):
    return q35.from_pretrained(vision_dir, backend="reference")


@pytest.fixture(scope="session")
def hf(vision_dir):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    m = transformers.AutoModelForImageTextToText.from_pretrained(vision_dir, dtype=torch.float32)
    m.set_experts_implementation("eager")
    return m.eval()


@pytest.fixture(scope="session")
def processor(vision_dir):
    return VisionProcessor.from_pretrained(vision_dir)


@pytest.fixture(scope="session")
def tokenizer(vision_dir):
    return load_tokenizer(vision_dir)

