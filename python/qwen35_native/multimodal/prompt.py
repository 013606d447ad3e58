"""Prompt expansion: the chat template writes one placeholder per image (``<|vision_start|><|image_pad|>
<|vision_end|>``) and per video (``<|vision_start|><|video_pad|><|vision_end|>``); the model needs one pad token per
merged vision token (MODEL_SPEC §3f):

- image i: ``<|image_pad|>`` x ``t * h * w / merge**2`` between its vision start/end tokens;
- video j: for each temporal group k, ``<{ts_k:.1f} seconds>`` as text, then ``<|vision_start|>``,
  ``<|video_pad|>`` x ``h * w / merge**2``, ``<|vision_end|>`` -- replacing the whole placeholder triple (a bare
  ``<|video_pad|>`` is replaced the same way).

Two forms: :func:`expand_prompt` on the rendered text (then tokenized as a whole, as transformers' processor
does) and :func:`expand_prompt_ids` on token ids (timestamps encoded on their own, as vLLM does; the two agree
unless the text right before a timestamp merges with ``<`` under BPE). Token ids and their strings come from the
checkpoint's config.json and tokenizer (:meth:`VisionTokens.from_pretrained`), never from constants.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VisionTokens:
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    image_token: str | None = None          # the tokens' text, from the tokenizer (needed for text expansion)
    video_token: str | None = None
    vision_start_token: str | None = None
    vision_end_token: str | None = None

    @classmethod
    def from_config(cls, config, tokenizer=None) -> VisionTokens:
        """From a :class:`~qwen35_native.model.config.Qwen35Config` and optionally a tokenizer with ``id_to_token``
        (our :class:`~qwen35_native.chat.tokenizer.Tokenizer` or a ``tokenizers.Tokenizer``)."""
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        ids = {n: getattr(config, n) for n in names}
        missing = [n for n, v in ids.items() if v is None]
        if missing:
            raise ValueError(f"qwen35_native: config.json has no {', '.join(missing)} (a text-only checkpoint cannot "
                             f"take images or videos)")
        texts = {}
        if tokenizer is not None:
            for n, v in ids.items():
                texts[n.replace("_id", "")] = tokenizer.id_to_token(v)
        return cls(**ids, **texts)

    @classmethod
    def from_pretrained(cls, directory: str) -> VisionTokens:
        from ..model.config import Qwen35Config

        tokenizer = None
        if os.path.isfile(os.path.join(directory, "tokenizer.json")):
            import tokenizers

            tokenizer = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        return cls.from_config(Qwen35Config.from_file(directory), tokenizer)

    def _texts(self) -> tuple[str, str, str, str]:
        texts = (self.image_token, self.video_token, self.vision_start_token, self.vision_end_token)
        if any(t is None for t in texts):
            raise ValueError("qwen35_native: expanding a text prompt needs the vision tokens' text from the "
                             "checkpoint's tokenizer (tokenizer.json); use expand_prompt_ids on token ids instead")
        return texts


def _tokens_per_group(grid, merge_size: int) -> int:
    t, h, w = (int(v) for v in grid)
    return h * w // (merge_size * merge_size)


def _counts(image_grid_thw, video_grid_thw, video_timestamps, merge_size):
    images = [] if image_grid_thw is None else [int(g[0]) * _tokens_per_group(g, merge_size) for g in image_grid_thw]
    videos = [] if video_grid_thw is None else [(int(g[0]), _tokens_per_group(g, merge_size)) for g in video_grid_thw]
    stamps = list(video_timestamps or [])
    if len(stamps) != len(videos) or any(len(s) != t for s, (t, _) in zip(stamps, videos)):
        raise ValueError(f"qwen35_native: video_timestamps must give one timestamp per temporal group of each video "
                         f"(grid_t = {[t for t, _ in videos]}), got {[len(s) for s in stamps]}")
    return images, videos, stamps


def _check_count(kind: str, found: int, given: int) -> None:
    if found != given:
        raise ValueError(f"qwen35_native: the prompt has {found} {kind} placeholder(s) but {given} {kind}(s) were "
                         f"given")


def expand_prompt(text: str, tokens: VisionTokens, image_grid_thw: torch.Tensor | None = None,
                  video_grid_thw: torch.Tensor | None = None, video_timestamps: Sequence[Sequence[float]] = (),
                  merge_size: int = 2) -> str:
    """Rendered chat text with one placeholder per image / video -> text with every vision token spelled out."""
    image, video, start, end = tokens._texts()
    images, videos, stamps = _counts(image_grid_thw, video_grid_thw, video_timestamps, merge_size)
    pattern = re.compile("|".join([f"(?P<vtriple>{re.escape(start + video + end)})", f"(?P<video>{re.escape(video)})",
                                   f"(?P<image>{re.escape(image)})"]))
    matches = list(pattern.finditer(text))
    _check_count("image", sum(m.lastgroup == "image" for m in matches), len(images))
    _check_count("video", sum(m.lastgroup != "image" for m in matches), len(videos))
    out, last, i, j = [], 0, 0, 0
    for m in matches:
        out.append(text[last:m.start()])
        if m.lastgroup == "image":
            out.append(image * images[i])
            i += 1
        else:
            per_group = videos[j][1]
            out.extend(f"<{ts:.1f} seconds>{start}{video * per_group}{end}" for ts in stamps[j])
            j += 1
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def expand_prompt_ids(ids: Sequence[int], tokens: VisionTokens, encode: Callable[[str], list[int]] | None = None,
                      image_grid_thw: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                      video_timestamps: Sequence[Sequence[float]] = (), merge_size: int = 2) -> list[int]:
    """Token ids with one placeholder token per image / video -> ids with every vision token spelled out.
    ``encode(text) -> ids`` (no special tokens added) encodes the video timestamps."""
    ids = [int(x) for x in ids]
    images, videos, stamps = _counts(image_grid_thw, video_grid_thw, video_timestamps, merge_size)
    img, vid, start, end = (tokens.image_token_id, tokens.video_token_id, tokens.vision_start_token_id,
                            tokens.vision_end_token_id)
    _check_count("image", ids.count(img), len(images))
    _check_count("video", ids.count(vid), len(videos))
    if videos and encode is None:
        raise ValueError("qwen35_native: expanding video placeholders needs encode= (the tokenizer) for the "
                         "timestamp text")
    out, i, j, k = [], 0, 0, 0
    while k < len(ids):
        tok = ids[k]
        k += 1
        if tok == img:
            out += [img] * images[i]
            i += 1
        elif tok == vid:
            if out and out[-1] == start and k < len(ids) and ids[k] == end:   # the whole placeholder triple
                out.pop()
                k += 1
            for ts in stamps[j]:
                out += list(encode(f"<{ts:.1f} seconds>")) + [start] + [vid] * videos[j][1] + [end]
            j += 1
        else:
            out.append(tok)
    return out
