"""Fixtures of the vision tests: a tiny checkpoint with a vision tower (make-tiny), our fp32 model, transformers'
model of the same files, the checkpoint's vision processor and tokenizer."""

import logging

import pytest
import torch

import qwen35_native as q35
from qwen35_native.chat.tokenizer import load_tokenizer
from qwen35_native.multimodal import VisionProcessor
from qwen35_native.tiny import write_tiny_checkpoint
from utils import one_intra_op_thread

logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_intra_op_thread():   # per module
        yield


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

