"""Prompts of ``LLM.generate`` and ``LLM.chat`` -> token ids (and, with images or videos, the multimodal prompt).

A prompt is a string, a list of token ids, or a dict in vLLM's form::

    {"prompt": text or "prompt_token_ids": [ids],
     "multi_modal_data": {"image": image or [images], "video": video or [videos], "video_fps": fps or [fps]}}

where the text (or ids) holds one placeholder per image / video, as the chat template writes them
(``<|vision_start|><|image_pad|><|vision_end|>``). Images are paths, data URLs, PIL images or uint8 arrays; videos
are lists of frames or uint8 ``[T, H, W, C]`` arrays with their frame rate. The checkpoint's vision processor
(``preprocessor_config.json``) preprocesses them, the placeholders are expanded to one pad token per vision token,
and the model's vision tower runs once per prompt (``model.prepare_multimodal``); the engine then prefills the
expanded prompt with the vision features and M-RoPE positions and decodes at ``position + rope_delta``.

Chat messages carry media as content parts (:func:`media_from_messages`): ``{"type": "image", "image": ...}``,
``{"type": "image_url", "image_url": {"url": ...}}``, ``{"type": "video", "video": frames, "fps": 2.0}``.

Tests: tests/engine/test_multimodal_engine.py, test_generate.py, test_llm_errors.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class PreparedPrompt:
    text: str | None  # the (expanded) prompt text; None for token-id prompts
    token_ids: list[int]
    multimodal: Any = None  # MultimodalPrompt when the prompt has images or videos


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _url(value):
    return value.get("url") if isinstance(value, Mapping) else value


def media_from_messages(conversation: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """The images and videos of a conversation's content parts, in the order the chat template renders them."""
    media: dict[str, list] = {"image": [], "video": [], "video_fps": []}
    for message in conversation:
        content = message.get("content")
        if isinstance(content, str) or not isinstance(content, Sequence):
            continue
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("image", "image_url") or (kind is None and ("image" in part or "image_url" in part)):
                source = part.get("image", _url(part.get("image_url")))
                if source is None:
                    raise ValueError(f"qwen35_native.LLM.chat: image part without an image: {dict(part)!r}")
                media["image"].append(source)
            elif kind in ("video", "video_url") or (kind is None and ("video" in part or "video_url" in part)):
                source = part.get("video", _url(part.get("video_url")))
                if source is None:
                    raise ValueError(f"qwen35_native.LLM.chat: video part without a video: {dict(part)!r}")
                media["video"].append(source)
                media["video_fps"].append(part.get("fps"))
    return media


class PromptPreparer:
    """Turns prompts into token ids for one LLM (tokenizer, model, checkpoint directory)."""

    def __init__(self, llm):
        self.llm = llm
        self._processor = None

    def processor(self):
        """The checkpoint's vision processor (created on first use)."""
        if self._processor is None:
            from ..multimodal import VisionProcessor, VisionTokens

            model = self.llm.model
            if getattr(model, "visual", None) is None:
                raise ValueError("qwen35_native.LLM: images and videos need a model with a vision tower, and this "
                                 "one has none (text-only checkpoint or loaded without model.visual)")
            if self.llm.path is not None:
                self._processor = VisionProcessor.from_pretrained(str(self.llm.path))
            else:  # a model passed as an object: default processor settings, token ids from its config
                self._processor = VisionProcessor(tokens=VisionTokens.from_config(model.config, self.llm.tokenizer))
        return self._processor

    def prepare_all(self, prompts: Any) -> list[PreparedPrompt]:
        """A string, a token-id list, a dict, or a non-empty list of those."""
        single = isinstance(prompts, (str, Mapping)) or (
            isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int) and
            not isinstance(prompts[0], bool))
        if single:
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or isinstance(prompts, bytes) or not prompts:
            raise ValueError(f"qwen35_native.LLM.generate: prompts must be a string, a list of token ids, a dict, or "
                             f"a non-empty list of those, got {prompts!r}")
        return [self.prepare(p) for p in prompts]

    def prepare(self, prompt: Any, add_special_tokens: bool = True) -> PreparedPrompt:
        if isinstance(prompt, str):
            return PreparedPrompt(prompt, self._encode(prompt, add_special_tokens))
        if not isinstance(prompt, Mapping):
            return PreparedPrompt(None, self.llm.engine.check_prompt(prompt))
        unknown = set(prompt) - {"prompt", "prompt_token_ids", "multi_modal_data"}
        if unknown or ("prompt" in prompt) == ("prompt_token_ids" in prompt):
            raise ValueError(f"qwen35_native.LLM: a dict prompt takes 'prompt' (text) or 'prompt_token_ids', and "
                             f"optionally 'multi_modal_data', got keys {sorted(prompt)}")
        data = prompt.get("multi_modal_data") or {}
        if not isinstance(data, Mapping) or set(data) - {"image", "video", "video_fps"}:
            raise ValueError(f"qwen35_native.LLM: multi_modal_data takes 'image', 'video' and 'video_fps', got "
                             f"{data!r}")
        images, videos = _as_list(data.get("image")), _as_list(data.get("video"))
        text = prompt.get("prompt")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"qwen35_native.LLM: 'prompt' must be a string, got {type(text).__name__}")
        if not images and not videos:
            return self.prepare(text if text is not None else prompt["prompt_token_ids"], add_special_tokens)
        processor = self.processor()
        vis = processor(images=images, videos=videos, video_fps=data.get("video_fps"))
        if text is not None:
            text = processor.expand_prompt(text, vis)
            ids = self._encode(text, add_special_tokens)
        else:
            encode = None if self.llm.tokenizer is None else (
                lambda s: self.llm.tokenizer.encode(s, add_special_tokens=False))
            ids = processor.expand_prompt_ids(list(prompt["prompt_token_ids"]), vis, encode)
        ids = self.llm.engine.check_prompt(ids)
        return PreparedPrompt(text, ids, self.llm.model.prepare_multimodal(ids, **vis.model_kwargs()))

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        tokenizer = self.llm.require_tokenizer("a text prompt")
        return self.llm.engine.check_prompt(tokenizer.encode(text, add_special_tokens=add_special_tokens))
