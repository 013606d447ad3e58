"""The checkpoint's vision processor: settings from ``preprocessor_config.json`` (images) and
``video_preprocessor_config.json`` (videos), defaults when a file is absent, and the vision token ids from
``config.json`` / the tokenizer.

    proc = VisionProcessor.from_pretrained(checkpoint_dir)
    vis = proc(images=[path_or_pil_or_array, ...], videos=[frames_or_array, ...], video_fps=[fps, ...])
    text = proc.expand_prompt(rendered_chat_text, vis)        # or proc.expand_prompt_ids(ids, vis, encode)
    logits = model(ids, **vis.model_kwargs())                 # or model.prepare_multimodal(ids, **vis.model_kwargs())
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch

from .image import ImageSettings, preprocess_image
from .prompt import VisionTokens, expand_prompt, expand_prompt_ids
from .video import VideoSettings, preprocess_video

BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the only resampling filter the released processors use


@dataclass
class VisionInputs:
    """Preprocessed images and videos of one prompt (or of a batch, in prompt order)."""
    pixel_values: torch.Tensor | None = None          # float32 [image patches, C * tp * p * p]
    image_grid_thw: torch.Tensor | None = None        # int64 [num_images, 3]
    pixel_values_videos: torch.Tensor | None = None   # float32 [video patches, C * tp * p * p]
    video_grid_thw: torch.Tensor | None = None        # int64 [num_videos, 3]
    video_timestamps: list[list[float]] = field(default_factory=list)   # seconds, one per temporal group

    @property
    def num_images(self) -> int:
        return 0 if self.image_grid_thw is None else len(self.image_grid_thw)

    @property
    def num_videos(self) -> int:
        return 0 if self.video_grid_thw is None else len(self.video_grid_thw)

    def model_kwargs(self) -> dict:
        """The tensors ``model(...)`` / ``model.prepare_multimodal(...)`` take."""
        return {"pixel_values": self.pixel_values, "image_grid_thw": self.image_grid_thw,
                "pixel_values_videos": self.pixel_values_videos, "video_grid_thw": self.video_grid_thw}


def _read(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"qwen35_native: {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"qwen35_native: {path} must hold a JSON object")
    return data


def settings_from_dict(data: dict, cls: type, source: str = "preprocessor config"):
    """ImageSettings / VideoSettings from a (video_)preprocessor_config.json dict, rejecting settings we cannot
    honour (no resize, no rescale/normalise, non-bicubic resampling, a fixed frame count)."""
    for key in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb"):
        if data.get(key, True) is not True:
            raise ValueError(f"qwen35_native: {source}: {key}={data[key]!r} is not supported")
    if data.get("resample", BICUBIC) != BICUBIC:
        raise ValueError(f"qwen35_native: {source}: resample={data['resample']!r} is not supported (only bicubic, 3)")
    if data.get("num_frames") is not None:
        raise ValueError(f"qwen35_native: {source}: num_frames={data['num_frames']!r} is not supported (frames are "
                         f"sampled by fps)")
    names = {f.name for f in fields(cls)}
    kwargs = {k: data[k] for k in names if k in data and data[k] is not None}
    size = data.get("size") or {}
    for key, field_name in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
        if field_name not in data and size.get(key) is not None:
            kwargs[field_name] = size[key]
    for key in ("image_mean", "image_std"):
        if key in kwargs:
            kwargs[key] = tuple(float(v) for v in kwargs[key])
    settings = cls(**kwargs)
    if min(settings.patch_size, settings.temporal_patch_size, settings.merge_size, settings.min_pixels) < 1 or \
            settings.max_pixels < settings.min_pixels:
        raise ValueError(f"qwen35_native: {source}: sizes must be >= 1 and max_pixels >= min_pixels, got {settings}")
    return settings


class VisionProcessor:
    def __init__(self, image: ImageSettings | None = None, video: VideoSettings | None = None,
                 tokens: VisionTokens | None = None):
        self.image, self.video, self.tokens = image or ImageSettings(), video or VideoSettings(), tokens

    @classmethod
    def from_pretrained(cls, directory: str) -> VisionProcessor:
        """Settings from the checkpoint directory; their patch, temporal patch and merge sizes must equal the
        vision tower's (config.json ``vision_config``)."""
        from ..model.config import Qwen35Config

        config = Qwen35Config.from_file(directory)
        if config.vision is None:
            raise ValueError(f"qwen35_native: {directory}: config.json has no vision_config (text-only checkpoint)")
        image = settings_from_dict(_read(directory, "preprocessor_config.json"), ImageSettings,
                                   "preprocessor_config.json")
        video = settings_from_dict(_read(directory, "video_preprocessor_config.json"), VideoSettings,
                                   "video_preprocessor_config.json")
        v = config.vision
        for name, s in (("preprocessor_config.json", image), ("video_preprocessor_config.json", video)):
            got = (s.patch_size, s.temporal_patch_size, s.merge_size)
            want = (v.patch_size, v.temporal_patch_size, v.spatial_merge_size)
            if got != want:
                raise ValueError(f"qwen35_native: {directory}: {name} has (patch, temporal patch, merge) sizes {got}, "
                                 f"the vision tower {want}")
        return cls(image, video, VisionTokens.from_pretrained(directory))

    def __call__(self, images: Sequence | None = None, videos: Sequence | None = None,
                 video_fps: float | Sequence[float] | None = None) -> VisionInputs:
        """Preprocesses ``images`` (paths, data URLs, PIL images, uint8 arrays) and ``videos`` (lists of frames or
        uint8 ``[T, H, W, C]`` arrays, recorded at ``video_fps``: one number or one per video)."""
        out = VisionInputs()
        if images:
            rows, grids = zip(*(preprocess_image(im, self.image) for im in images))
            out.pixel_values, out.image_grid_thw = torch.cat(rows), torch.tensor(grids, dtype=torch.int64)
        if videos:
            fps = list(video_fps) if isinstance(video_fps, (list, tuple)) else [video_fps] * len(videos)
            if len(fps) != len(videos):
                raise ValueError(f"qwen35_native: video_fps must be one number or one per video ({len(videos)}), got "
                                 f"{len(fps)}")
            rows, grids, stamps = zip(*(preprocess_video(v, f, self.video) for v, f in zip(videos, fps)))
            out.pixel_values_videos, out.video_grid_thw = torch.cat(rows), torch.tensor(grids, dtype=torch.int64)
            out.video_timestamps = [list(s) for s in stamps]
        return out

    def _tokens(self) -> VisionTokens:
        if self.tokens is None:
            raise ValueError("qwen35_native: this VisionProcessor has no vision tokens; load it with "
                             "VisionProcessor.from_pretrained(checkpoint_dir) or pass tokens=")
        return self.tokens

    def expand_prompt(self, text: str, inputs: VisionInputs) -> str:
        """See :func:`~.prompt.expand_prompt`."""
        return expand_prompt(text, self._tokens(), inputs.image_grid_thw, inputs.video_grid_thw,
                             inputs.video_timestamps, self.image.merge_size)

    def expand_prompt_ids(self, ids: Sequence[int], inputs: VisionInputs,
                          encode: Callable[[str], list[int]] | None = None) -> list[int]:
        """See :func:`~.prompt.expand_prompt_ids`."""
        return expand_prompt_ids(ids, self._tokens(), encode, inputs.image_grid_thw, inputs.video_grid_thw,
                                 inputs.video_timestamps, self.image.merge_size)
