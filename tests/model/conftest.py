"""Shared fixtures of the model tests: tiny checkpoints written once per session, our models and HF oracles."""

import logging
import sys

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


def pytest_terminal_summary(terminalreporter):
    """Prints the measured HF parity figures (max abs logit error, fp32) when the parity tests ran."""
    parity = getattr(sys.modules.get("test_hf_parity"), "PARITY", None)
    if parity:
        terminalreporter.write_sep("-", "HF parity: fp32 max abs logit error (bound 1e-4); bf16 error ratio (bound 2)")
        for key, err in sorted(parity.items()):
            terminalreporter.write_line(f"{err:.2e}  {key}")
