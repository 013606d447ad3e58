"""Helpers shared by the model tests (imported as a plain module; fixtures live in conftest.py)."""

import pytest
import torch


def hf_model(path):
    """transformers' model of a checkpoint directory, fp32, eager experts (MODEL_SPEC §8)."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    if "Moe" in type(model).__name__:
        model.set_experts_implementation("eager")
    return model.eval()


def hf_logits(model, ids, attention_mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=attention_mask).logits


def random_ids(n, vocab=448, seed=0, batch=None):
    shape = (n,) if batch is None else (batch, n)
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def max_abs(a, b):
    return (a.float() - b.float()).abs().max().item()
