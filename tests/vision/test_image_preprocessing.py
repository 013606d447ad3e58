"""Image preprocessing against transformers' ``Qwen2VLImageProcessorPil`` (pixel values and grids must be identical),
``smart_resize`` against transformers' over many sizes, every input form, and clear errors."""

import base64
import io
import random

import numpy as np
import pytest
import torch
from vision_helpers import random_image

from qwen35_native.multimodal import ImageSettings, VisionProcessor, load_image, preprocess_image, smart_resize

qwen2_vl = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")

SMALL = ImageSettings(min_pixels=4096, max_pixels=65536)   # the tiny checkpoint's budget: fast, still resizes


def hf_processor(s: ImageSettings):
    return qwen2_vl.Qwen2VLImageProcessorPil(
        patch_size=s.patch_size, temporal_patch_size=s.temporal_patch_size, merge_size=s.merge_size,
        image_mean=list(s.image_mean), image_std=list(s.image_std),
        size={"shortest_edge": s.min_pixels, "longest_edge": s.max_pixels})


def assert_same_as_hf(image, settings, ours=None):
    pixels, grid = ours if ours is not None else preprocess_image(image, settings)
    ref = hf_processor(settings)(images=[image], return_tensors="pt")
    assert list(grid) == ref["image_grid_thw"][0].tolist()
    assert pixels.dtype == torch.float32 and pixels.shape == ref["pixel_values"].shape
    assert torch.equal(pixels, ref["pixel_values"]), f"max diff {(pixels - ref['pixel_values']).abs().max()}"


SIZES = [(64, 64), (100, 100), (37, 513), (300, 41), (241, 239), (1, 150), (3, 590), (590, 3), (1000, 7), (480, 640),
         (17, 19), (511, 513)]


@pytest.mark.parametrize("height,width", SIZES)
def test_matches_transformers_pil_processor(height, width):
    """Odd sizes, up- and down-scaling, extreme aspect ratios up to 196.7 (the limit is 200)."""
    assert_same_as_hf(random_image(height, width, seed=height * 1000 + width), SMALL)


def test_release_defaults_match_transformers():
    """Qwen3.5's released settings (min 65536, max 16777216 pixels; mean = std = 0.5): a small image is scaled up."""
    assert_same_as_hf(random_image(200, 300, seed=3), ImageSettings())


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "CMYK", "I;16"])
def test_modes_convert_to_rgb_like_transformers(mode):
    """Transparency is composited onto white, grayscale / palette / CMYK converted to RGB, as HF does."""
    image = random_image(90, 130, seed=5, mode="RGBA" if mode in ("RGBA", "LA") else "RGB")
    if mode not in ("RGBA",):
        image = image.convert(mode)
    assert_same_as_hf(image, SMALL)


def test_array_path_and_data_url_inputs(tmp_path):
    image = random_image(120, 77, seed=9)
    expected = preprocess_image(image, SMALL)
    path = tmp_path / "image.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    array = np.asarray(image)
    for source in (str(path), path, f"file://{path}", data_url, array, torch.from_numpy(array.copy())):
        pixels, grid = preprocess_image(source, SMALL)
        assert grid == expected[1] and torch.equal(pixels, expected[0]), type(source).__name__
    assert_same_as_hf(array, SMALL, ours=expected)   # HF's processor on the uint8 array agrees too
    gray = np.asarray(image.convert("L"))
    assert torch.equal(preprocess_image(gray, SMALL)[0], preprocess_image(image.convert("L"), SMALL)[0])


def test_smart_resize_matches_transformers_over_many_sizes():
    rng = random.Random(0)
    sizes = [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(3000)]
    sizes += [(h, w) for h in (1, 2, 31, 32, 33, 48, 63, 64, 65) for w in range(1, 200, 7)]
    for factor, lo, hi in ((32, 65536, 16777216), (32, 4096, 65536), (28, 3136, 1003520)):
        for h, w in sizes:
            if max(h, w) / min(h, w) > 200:
                continue
            assert smart_resize(h, w, factor, lo, hi) == qwen2_vl.smart_resize(h, w, factor, lo, hi), (h, w, factor)


def test_processor_reads_checkpoint_settings(processor, vision_dir):
    """make-tiny writes preprocessor_config.json with a small budget; the processor uses it."""
    assert processor.image.min_pixels == 4096 and processor.image.max_pixels == 65536
    assert processor.video.min_pixels == 8192 and processor.video.fps == 2
    assert processor.image.image_mean == (0.5, 0.5, 0.5) and processor.image.patch_size == 16
    vis = processor(images=[random_image(70, 130, seed=1), random_image(300, 41, seed=2)])
    assert vis.image_grid_thw.tolist() == [[1, 4, 8], [1, 18, 2]] and vis.pixel_values.shape == (68, 1536)
    assert VisionProcessor().image == ImageSettings()   # defaults when no files are given


@pytest.mark.parametrize("source,error,message", [
    (np.zeros((0, 5, 3), np.uint8), ValueError, "too small"),
    (np.zeros((2, 500, 3), np.uint8), ValueError, "too elongated: 2x500 has aspect ratio 250.0"),
    (np.zeros((500, 2), np.uint8), ValueError, "too elongated"),
    (np.zeros((8, 8, 3), np.float32), TypeError, "must be uint8"),
    (np.zeros((8, 8, 2), np.uint8), ValueError, r"\[H, W, C\] with C = 1, 3 or 4"),
    ("/nonexistent/image.png", FileNotFoundError, "does not exist"),
    ("https://example.com/cat.png", ValueError, "remote image URLs are not fetched"),
    ("data:image/png;base64,!!!", ValueError, "not valid base64"),
    ("data:image/png,abc", ValueError, "must be base64 encoded"),
    (3.5, TypeError, "must be a path, data URL, PIL image or uint8 array"),
])
def test_bad_images_are_clear_errors(source, error, message):
    with pytest.raises(error, match=message):
        preprocess_image(source, SMALL)


def test_undecodable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(Exception, match="cannot identify image file|cannot decode image"):
        load_image(str(path))


@pytest.mark.parametrize("config,message", [
    ({"resample": 2}, "resample=2 is not supported"),
    ({"do_normalize": False}, "do_normalize=False is not supported"),
    ({"patch_size": 14}, r"\(patch, temporal patch, merge\) sizes \(14, 2, 2\), the vision tower \(16, 2, 2\)"),
    ({"size": {"shortest_edge": 100, "longest_edge": 10}}, "max_pixels >= min_pixels"),
])
def test_bad_preprocessor_configs(vision_dir, tmp_path, config, message):
    import json
    import shutil

    directory = tmp_path / "ckpt"
    shutil.copytree(vision_dir, directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        VisionProcessor.from_pretrained(str(directory))
