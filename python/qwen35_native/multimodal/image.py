"""Image loading and preprocessing for the vision tower (MODEL_SPEC §3f), equal to transformers'
``Qwen2VLImageProcessorPil`` (no torchvision needed).

Pipeline of one image: load (path, ``file://`` path, base64 ``data:`` URL, PIL image, uint8 array or tensor) -> RGB
(transparency composited onto white, as HF does) -> :func:`smart_resize` to multiples of ``patch * merge`` within
the pixel budget -> PIL bicubic resize -> ``x * (1/255)`` (computed in float64, stored float32) -> ``(x - mean) /
std`` in float32 -> :func:`patchify` (temporal padding to ``temporal_patch_size`` frames by repeating the last one;
rows in 2x2-merge-block order) -> ``pixel_values [grid_t * grid_h * grid_w, C * tp * p * p]`` float32 and
``grid_thw = (grid_t, grid_h, grid_w)``.
"""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class ImageSettings:
    """Preprocessing settings (``preprocessor_config.json``); the defaults are Qwen3.5's released values."""
    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 65536          # size.shortest_edge
    max_pixels: int = 16777216       # size.longest_edge
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def _pil():
    try:
        import PIL.Image
    except ImportError:  # pillow is a declared dependency; say so if an environment lacks it
        raise ImportError("qwen35_native: image and video input needs pillow (pip install pillow)") from None
    return PIL.Image


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: int = 65536,
                 max_pixels: int = 16777216) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, area within [min_pixels, max_pixels], aspect ratio kept as
    far as rounding allows (transformers 5.x ``smart_resize``: small images are scaled up, not rejected)."""
    if height < 1 or width < 1:
        raise ValueError(f"qwen35_native: image is too small: {height}x{width} pixels (height x width)")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"qwen35_native: image is too elongated: {height}x{width} has aspect ratio "
                         f"{max(height, width) / min(height, width):.1f}, the limit is {MAX_ASPECT_RATIO}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _open_path(source: str):
    Image = _pil()
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        if ";base64" not in header or not payload:
            raise ValueError("qwen35_native: a data URL image must be base64 encoded (data:image/...;base64,...)")
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError as e:
            raise ValueError(f"qwen35_native: data URL image is not valid base64: {e}") from None
        return Image.open(io.BytesIO(data))
    if source.startswith(("http://", "https://")):
        raise ValueError(f"qwen35_native: remote image URLs are not fetched ({source[:60]}); download the file and "
                         "pass its path")
    path = source[len("file://"):] if source.startswith("file://") else source
    if not os.path.isfile(path):
        raise FileNotFoundError(f"qwen35_native: image file {path} does not exist")
    return Image.open(path)


def _from_array(array) -> object:
    Image = _pil()
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"qwen35_native: an image array must be uint8 [H, W] or [H, W, C] (C = 1, 3 or 4), got dtype "
                        f"{array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"qwen35_native: an image array must be [H, W] or [H, W, C] with C = 1, 3 or 4 (channels "
                         f"last), got shape {list(array.shape)}")
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image):
    """RGB PIL image; transparency is composited onto white (what HF's ``convert_to_rgb`` does)."""
    Image = _pil()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def load_image(image):
    """An RGB PIL image from a path / ``file://`` path / base64 ``data:`` URL, a PIL image, or a uint8 array or tensor
    ``[H, W]`` / ``[H, W, C]``."""
    Image = _pil()
    if isinstance(image, (str, os.PathLike)):
        image = _open_path(os.fspath(image))
    elif not isinstance(image, Image.Image):
        if not isinstance(image, (np.ndarray, torch.Tensor)):
            raise TypeError(f"qwen35_native: an image must be a path, data URL, PIL image or uint8 array, got "
                            f"{type(image).__name__}")
        image = _from_array(image)
    try:
        image.load()
    except OSError as e:
        raise ValueError(f"qwen35_native: cannot decode image: {e}") from None
    return to_rgb(image)


def resize_and_normalize(image, height: int, width: int, s: ImageSettings) -> np.ndarray:
    """PIL bicubic resize of an RGB image to (height, width), rescale and normalise: float32 ``[C, H, W]``."""
    Image = _pil()
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    x = np.asarray(image, dtype=np.uint8)                                       # [H, W, C]
    x = (x.astype(np.float64) * s.rescale_factor).astype(np.float32)           # HF rescales in float64
    mean = np.asarray(s.image_mean, dtype=np.float32)
    std = np.asarray(s.image_std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))                          # [C, H, W]


def patchify(frames: np.ndarray, s: ImageSettings) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``frames [T, C, H, W]`` -> rows ``[grid_t * grid_h * grid_w, C * tp * p * p]`` in merge-block order
    ``(t, h_block, w_block, h_in, w_in)``, each row ordered ``(C, tp, p_y, p_x)``; T is padded to a multiple of
    ``temporal_patch_size`` by repeating the last frame. Returns the rows and ``(grid_t, grid_h, grid_w)``."""
    T, C, H, W = frames.shape
    tp, p, m = s.temporal_patch_size, s.patch_size, s.merge_size
    if H % (p * m) or W % (p * m):
        raise ValueError(f"qwen35_native: frame size {H}x{W} must be a multiple of patch_size * merge_size = {p * m}")
    if T % tp:
        frames = np.concatenate([frames, np.repeat(frames[-1:], tp - T % tp, axis=0)])
        T = frames.shape[0]
    gt, gh, gw = T // tp, H // p, W // p
    x = frames.reshape(gt, tp, C, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)          # (t, hb, wb, hi, wi, C, tp, py, px)
    return np.ascontiguousarray(x.reshape(gt * gh * gw, C * tp * p * p)), (gt, gh, gw)


def preprocess_image(image, settings: ImageSettings | None = None) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """One image -> ``(pixel_values [grid_h * grid_w, C * tp * p * p] float32, (1, grid_h, grid_w))``."""
    s = settings or ImageSettings()
    image = load_image(image)
    width, height = image.size
    h, w = smart_resize(height, width, s.factor, s.min_pixels, s.max_pixels)
    frame = resize_and_normalize(image, h, w, s)
    rows, grid = patchify(frame[None], s)
    return torch.from_numpy(rows), grid
