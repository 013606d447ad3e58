"""Video preprocessing (MODEL_SPEC §3f, transformers' ``Qwen3VLVideoProcessor`` + ``Qwen3VLProcessor``
timestamps).

A video is a list of frames (anything :func:`~.image.load_image` takes) or an array / tensor ``[T, H, W, C]`` (or
``[T, H, W]``) of uint8, plus its frame rate. Steps: sample ``n = clamp(int(T / video_fps * fps), min_frames,
max_frames, <= T)`` frames at ``linspace(0, T - 1, n).round()`` -> RGB -> one size for all frames from the video
:func:`smart_resize` (the pixel budget covers all frames) -> PIL bicubic resize, rescale, normalise (as images) ->
patchify with the frame count padded to a multiple of ``temporal_patch_size`` -> ``video_grid_thw``. Each temporal
group of ``temporal_patch_size`` frames gets the timestamp ``(t_first + t_last) / 2`` seconds of its frames, which
the prompt shows as ``<x.x seconds>``.

transformers resizes video frames with torchvision's tensor bicubic filter; this module uses PIL's bicubic filter
(the one HF's image path uses), which can differ from torchvision's by a level or so of uint8 per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .image import MAX_ASPECT_RATIO, ImageSettings, load_image, patchify, resize_and_normalize


@dataclass(frozen=True)
class VideoSettings(ImageSettings):
    """``video_preprocessor_config.json``; defaults are transformers' ``Qwen3VLVideoProcessor`` values."""
    min_pixels: int = 128 * 32 * 32           # size.shortest_edge, over all frames
    max_pixels: int = 768 * 32 * 32           # size.longest_edge, over all frames
    fps: float = 2.0                          # frames sampled per second of video
    min_frames: int = 4
    max_frames: int = 768
    do_sample_frames: bool = True
    cap_pixels_per_frame: bool = False        # qwen-vl-utils' per-frame cap (HF: off unless configured)
    max_video_tokens: int = 768


def sample_frame_indices(total_frames: int, video_fps: float, s: VideoSettings) -> np.ndarray:
    """Indices of the frames kept: ``s.fps`` per second of video, at least ``min_frames``, at most ``max_frames``
    and ``total_frames``, evenly spread (``linspace(...).round()``)."""
    if total_frames < 1:
        raise ValueError("qwen35_native: the video has no frames")
    if not s.do_sample_frames:
        return np.arange(total_frames)
    n = int(total_frames / video_fps * s.fps)
    n = min(max(n, s.min_frames), s.max_frames, total_frames)
    return np.linspace(0, total_frames - 1, n).round().astype(int)


def group_timestamps(indices, video_fps: float, temporal_patch_size: int = 2) -> list[float]:
    """Seconds of each temporal group: the mean of its first and last frame's time (indices padded by repeating
    the last one, as the frames are)."""
    idx = [int(i) for i in indices]
    if len(idx) % temporal_patch_size:
        idx += [idx[-1]] * (temporal_patch_size - len(idx) % temporal_patch_size)
    t = [i / video_fps for i in idx]
    return [(t[k] + t[k + temporal_patch_size - 1]) / 2 for k in range(0, len(t), temporal_patch_size)]


def video_smart_resize(num_frames: int, height: int, width: int, s: VideoSettings) -> tuple[int, int]:
    """Frame size for a clip of ``num_frames`` frames: multiples of ``patch * merge``; the budget
    ``[min_pixels, max_pixels]`` applies to frames x height x width (transformers' video ``smart_resize``)."""
    factor, tf = s.factor, s.temporal_patch_size
    if num_frames < tf:
        raise ValueError(f"qwen35_native: a video needs at least temporal_patch_size={tf} frames after sampling, got "
                         f"{num_frames}; pass a single frame as an image")
    if height < 1 or width < 1:
        raise ValueError(f"qwen35_native: video frames are too small: {height}x{width} pixels")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"qwen35_native: video frames are too elongated: {height}x{width} has aspect ratio "
                         f"{max(height, width) / min(height, width):.1f}, the limit is {MAX_ASPECT_RATIO}")
    max_pixels = s.max_pixels
    if s.cap_pixels_per_frame:
        per_frame = max(min(s.max_video_tokens * factor * factor, s.max_pixels // num_frames),
                        int(s.min_pixels * 1.05))
        max_pixels = per_frame * num_frames
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / tf) * tf
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < s.min_pixels:
        beta = math.sqrt(s.min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def load_video_path(path: str) -> list | np.ndarray:
    """A video stored on disk: a directory of frame images (taken in natural name order: frame2 before frame10) or
    a ``.npy`` uint8 array ``[T, H, W, C]``. Container formats (mp4, ...) need a decoder we do not ship: extract
    the frames first (e.g. ``ffmpeg -i in.mp4 -vf fps=2 dir/%05d.png``)."""
    import os
    import re

    if os.path.isdir(path):
        names = [n for n in os.listdir(path) if n.lower().endswith(_FRAME_SUFFIXES)]
        if not names:
            raise ValueError(f"qwen35_native: the video directory {path} holds no frame images "
                             f"({', '.join(_FRAME_SUFFIXES)})")
        def natural(name: str) -> list:
            return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]

        return [os.path.join(path, n) for n in sorted(names, key=natural)]
    if path.endswith(".npy") and os.path.isfile(path):
        return np.load(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"qwen35_native: no video at {path}")
    raise ValueError(f"qwen35_native: cannot read the video {path}: give a directory of frame images or a .npy "
                     f"uint8 array [T, H, W, C] (decode container formats such as mp4 to frames first)")


def _frames(video) -> list:
    """A video as a list of per-frame inputs for load_image."""
    if isinstance(video, str):
        video = load_video_path(video)
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if isinstance(video, np.ndarray):
        if video.ndim not in (3, 4):
            raise ValueError(f"qwen35_native: a video array must be [T, H, W] or [T, H, W, C] (channels last), got "
                             f"shape {list(video.shape)}")
        return list(video)
    if isinstance(video, (list, tuple)):
        return list(video)
    raise TypeError(f"qwen35_native: a video must be a list of frames or a uint8 array [T, H, W, C], got "
                    f"{type(video).__name__}")


def preprocess_video(video, fps: float, settings: VideoSettings | None = None
                     ) -> tuple[torch.Tensor, tuple[int, int, int], list[float]]:
    """One video (frames or ``[T, H, W, C]`` uint8) recorded at ``fps`` frames per second ->
    ``(pixel_values [grid_t * grid_h * grid_w, C * tp * p * p] float32, (grid_t, grid_h, grid_w), timestamps)``
    with one timestamp (seconds) per temporal group."""
    s = settings or VideoSettings()
    frames = _frames(video)
    if not frames:
        raise ValueError("qwen35_native: the video has no frames")
    if fps is None or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"qwen35_native: a video needs its frame rate (fps > 0) for frame sampling and timestamps, "
                         f"got {fps!r}")
    indices = sample_frame_indices(len(frames), float(fps), s)
    images = [load_image(frames[i]) for i in indices]
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"qwen35_native: all frames of a video must have the same size, got (width, height) "
                         f"{sorted(sizes)}")
    width, height = images[0].size
    h, w = video_smart_resize(len(images), height, width, s)
    stacked = np.stack([resize_and_normalize(im, h, w, s) for im in images])   # [T, C, h, w]
    rows, grid = patchify(stacked, s)
    return torch.from_numpy(rows), grid, group_timestamps(indices, float(fps), s.temporal_patch_size)
