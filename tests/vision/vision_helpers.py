"""Helpers of the vision tests (a plain module; fixtures live in conftest.py)."""

import numpy as np
import PIL.Image
import torch

from utils import record_measure


def random_image(height, width, seed=0, mode="RGB"):
    """A PIL image of smooth gradients plus noise (resampling filters see both edges and flat areas)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 7 + y * 3) % 256, (x * 2 + y * 11) % 256, (x * y) % 256], axis=-1)
    pixels = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    image = PIL.Image.fromarray(pixels)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
        image = PIL.Image.fromarray(np.concatenate([pixels, alpha[..., None]], axis=-1), "RGBA")
    elif mode != "RGB":
        image = image.convert(mode)
    return image


def random_video(frames, height, width, seed=0):
    """uint8 ``[T, H, W, 3]``: a pattern drifting over time plus noise."""
    return np.stack([np.asarray(random_image(height, width, seed=seed + t)) for t in range(frames)])


def chat_ids(tokenizer, processor, content, vis):
    """Token ids of a one-turn user chat with ``content`` items, placeholders expanded for ``vis``."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return torch.tensor(tokenizer.encode(processor.expand_prompt(text, vis), add_special_tokens=False))


def mm_token_type_ids(ids, config):
    """transformers' mm_token_type_ids: 1 on image pad tokens, 2 on video pad tokens."""
    return (ids == config.image_token_id).long() + 2 * (ids == config.video_token_id).long()


def hf_logits(hf, ids, vis, attention_mask=None):
    hf.model.rope_deltas = None   # persists between calls in transformers (MODEL_SPEC §8)
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids(ids, hf.config),
                  **{k: v for k, v in vis.model_kwargs().items() if v is not None}).logits


def record(key, err):
    """Notes a measured error for the end-of-run summary (tests/conftest.py); returns it."""
    return record_measure("vision vs transformers: fp32 max abs error (bound 1e-4 logits, 1e-5 features)", key, err)


def max_abs(a, b):
    return (a.float() - b.float()).abs().max().item()
