"""Shared fixtures of the model tests: tiny checkpoints written once per session, our models and HF oracles."""

import logging

import pytest

import qwen35_native as q35
from qwen35_native.tiny import write_tiny_checkpoint

logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """name -> checkpoint directory written by make-tiny (release layout)."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "tiny-moe": write_tiny_checkpoint(str(root / "moe"), "tiny-moe", seed=1),
        "tiny-dense": write_tiny_checkpoint(str(root / "dense"), "tiny-dense", seed=2),
        "tiny-moe-per-expert": write_tiny_checkpoint(str(root / "moe_pe"), "tiny-moe", seed=1, shards=3,
                                                     expert_layout="per-expert"),
    }


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs):
    """name -> our model (fp32, reference backend) of each tiny checkpoint."""
    return {name: q35.from_pretrained(path, backend="reference") for name, path in tiny_dirs.items()}

