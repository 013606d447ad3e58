"""Video preprocessing. transformers' ``Qwen3VLVideoProcessor`` needs torchvision (its frame resize and RGB
conversion are torchvision tensor ops), which this environment does not have, so the whole processor cannot be the
oracle. The parts of it that run without torchvision are: frame sampling (``sample_frames``), the video
``smart_resize``, ``patchify`` and the processor's ``_calculate_timestamps``; ours are compared against those, and
the frame pixels are checked independently (each frame equals the image pipeline's resize + normalise of that frame,
the padding frame repeats the last one)."""

import importlib
import types

import numpy as np
import PIL.Image
import pytest
import torch
from vision_helpers import random_video

from qwen35_native.multimodal import VideoSettings, preprocess_video, sample_frame_indices
from qwen35_native.multimodal.image import ImageSettings, patchify, resize_and_normalize
from qwen35_native.multimodal.video import group_timestamps, video_smart_resize

transformers = pytest.importorskip("transformers")
hf_video = importlib.import_module("transformers.models.qwen3_vl.video_processing_qwen3_vl")
hf_processing = importlib.import_module("transformers.models.qwen3_vl.processing_qwen3_vl")
VideoMetadata = importlib.import_module("transformers.video_utils").VideoMetadata

SMALL = VideoSettings(min_pixels=8192, max_pixels=196608)


@pytest.mark.parametrize("total,video_fps", [(1, 30), (3, 2), (6, 2), (25, 30), (100, 24), (301, 29.97), (7, 0.5),
                                             (5000, 60), (200000, 30)])
def test_frame_sampling_matches_transformers(total, video_fps):
    s = VideoSettings()
    fake = types.SimpleNamespace(fps=s.fps, min_frames=s.min_frames, max_frames=s.max_frames)
    ref = hf_video.Qwen3VLVideoProcessor.sample_frames(fake, VideoMetadata(total_num_frames=total, fps=video_fps))
    assert np.array_equal(sample_frame_indices(total, video_fps, s), ref)


@pytest.mark.parametrize("indices,video_fps", [([0, 8, 16, 24], 30), ([0, 1, 2], 2.0), ([0, 3, 5, 8, 10], 24),
                                               (list(range(6)), 2.0)])
def test_timestamps_match_transformers(indices, video_fps):
    ref = hf_processing.Qwen3VLProcessor._calculate_timestamps(None, np.array(indices), video_fps, 2)
    assert group_timestamps(indices, video_fps, 2) == pytest.approx(ref, abs=0)


def test_video_smart_resize_matches_transformers():
    rng = np.random.default_rng(1)
    cases = [(int(t), int(h), int(w)) for t, h, w in zip(rng.integers(2, 800, 400), rng.integers(1, 2000, 400),
                                                         rng.integers(1, 2000, 400))]
    cases += [(2, 10, 10), (4, 31, 400), (6, 64, 96), (768, 1080, 1920), (3, 5, 900)]
    for cap in (False, True):
        for lo, hi in ((8192, 196608), (131072, 786432)):
            s = VideoSettings(min_pixels=lo, max_pixels=hi, cap_pixels_per_frame=cap)
            for t, h, w in cases:
                max_pixels = hi
                if cap:
                    max_pixels = max(min(768 * 32 * 32, hi // t), int(lo * 1.05)) * t
                try:
                    ref = hf_video.smart_resize(t, h, w, temporal_factor=2, factor=32, min_pixels=lo,
                                                max_pixels=max_pixels)
                except ValueError:
                    with pytest.raises(ValueError, match="too elongated"):
                        video_smart_resize(t, h, w, s)
                    continue
                assert video_smart_resize(t, h, w, s) == ref, (t, h, w, cap)


@pytest.mark.parametrize("frames", [2, 3, 4])
def test_patchify_matches_transformers(frames):
    x = np.random.default_rng(frames).standard_normal((frames, 3, 64, 96)).astype(np.float32)
    ours, grid = patchify(x, ImageSettings())
    ref, gt, gh, gw = hf_video.Qwen3VLVideoProcessor.patchify(None, torch.from_numpy(x)[None], 16, 2, 2)
    assert grid == (gt, gh, gw) and torch.equal(torch.from_numpy(ours), ref[0])


def test_frames_use_the_image_pipeline_and_pad_the_last_frame():
    """6 frames at 10 fps -> int(6 / 10 * 2) = 1, raised to min_frames 4: frames 0, 2, 3, 5; an odd count (3 frames
    at 2 fps) repeats the last frame in the temporal padding."""
    video = random_video(6, 70, 90, seed=4)
    pixels, grid, stamps = preprocess_video(video, 10.0, SMALL)
    h, w = video_smart_resize(4, 70, 90, SMALL)
    assert grid == (2, h // 16, w // 16) and stamps == pytest.approx([(0 + 0.2) / 2, (0.3 + 0.5) / 2])
    frames = np.stack([resize_and_normalize(PIL.Image.fromarray(video[i]), h, w, SMALL)
                       for i in (0, 2, 3, 5)])
    assert torch.equal(pixels, torch.from_numpy(patchify(frames, SMALL)[0]))
    pixels3, grid3, stamps3 = preprocess_video(video[:3], 2.0, SMALL)
    h3, w3 = video_smart_resize(3, 70, 90, SMALL)
    frames3 = np.stack([resize_and_normalize(PIL.Image.fromarray(video[i]), h3, w3, SMALL)
                        for i in (0, 1, 2, 2)])
    assert grid3 == (2, h3 // 16, w3 // 16) and stamps3 == [0.25, 1.0]
    assert torch.equal(pixels3, torch.from_numpy(patchify(frames3, SMALL)[0]))


def test_frame_list_equals_array_and_processor_reads_config(processor):
    video = random_video(6, 64, 96, seed=2)
    as_array = preprocess_video(video, 2.0, SMALL)
    as_list = preprocess_video([PIL.Image.fromarray(f) for f in video], 2.0, SMALL)
    assert as_array[1] == as_list[1] and torch.equal(as_array[0], as_list[0])
    vis = processor(videos=[video, video[:4]], video_fps=[2.0, 1.0])
    assert vis.video_grid_thw[:, 0].tolist() == [3, 2] and vis.video_timestamps == [[0.25, 1.25, 2.25], [0.5, 2.5]]
    assert vis.pixel_values_videos.shape[0] == int(vis.video_grid_thw.prod(-1).sum())


@pytest.mark.parametrize("video,fps,error,message", [
    (np.zeros((0, 8, 8, 3), np.uint8), 2.0, ValueError, "the video has no frames"),
    ([], 2.0, ValueError, "the video has no frames"),
    (np.zeros((1, 64, 64, 3), np.uint8), 2.0, ValueError, "at least temporal_patch_size=2 frames"),
    (np.zeros((4, 64, 64, 3), np.uint8), None, ValueError, "needs its frame rate"),
    (np.zeros((4, 64, 64, 3), np.uint8), 0, ValueError, "needs its frame rate"),
    (np.zeros((4, 2, 600, 3), np.uint8), 2.0, ValueError, "too elongated"),
    (np.zeros((64, 64), np.uint8), 2.0, ValueError, r"\[T, H, W\] or \[T, H, W, C\]"),
    ([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)], 2.0, ValueError, "same size"),
    ("clip.mp4", 2.0, FileNotFoundError, "no video at clip.mp4"),
])
def test_bad_videos_are_clear_errors(video, fps, error, message):
    with pytest.raises(error, match=message):
        preprocess_video(video, fps, SMALL)


def test_video_fps_count_must_match(processor):
    with pytest.raises(ValueError, match="video_fps must be one number or one per video"):
        processor(videos=[random_video(4, 32, 32)], video_fps=[2.0, 3.0])
