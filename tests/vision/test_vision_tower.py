"""The vision tower against transformers' ``Qwen3_5MoeVisionModel`` (fp32): merged features of images of several
sizes and of videos, the position-embedding resampling and rotary pieces, weights from checkpoints written by
transformers itself, and clear errors."""

import pytest
import torch
from vision_helpers import max_abs, random_image, random_video, record

import qwen35_native as q35
from qwen35_native import configs
from qwen35_native.model.vision import patch_coords, position_embedding, rotary_cos_sin, vision_cu_seqlens
from qwen35_native.weights import WeightsError

TOL = 1e-5


def hf_features(hf, pixel_values, grid):
    with torch.no_grad():
        return torch.cat(hf.model.get_image_features(pixel_values, grid).pooler_output)


def test_image_and_video_features_match_transformers(model, hf, processor):
    """Each item alone and all together (block-diagonal attention: items must not see each other)."""
    vis = processor(images=[random_image(64, 64, seed=1), random_image(37, 513, seed=2), random_image(300, 41, seed=3),
                            random_image(480, 640, seed=4)], videos=[random_video(6, 64, 96, seed=5)], video_fps=2.0)
    together = model.encode_vision(vis.pixel_values, vis.image_grid_thw)
    assert together.shape == (int(vis.image_grid_thw.prod(-1).sum()) // 4, model.text_config.hidden_size)
    assert record("tower features: 4 images", max_abs(together, hf_features(hf, vis.pixel_values,
                                                                             vis.image_grid_thw))) <= TOL
    start = 0
    for grid in vis.image_grid_thw:
        n = int(grid.prod())
        alone = model.encode_vision(vis.pixel_values[start:start + n], grid[None])
        assert max_abs(alone, together[start // 4:(start + n) // 4]) <= TOL
        start += n
    video = model.encode_vision(vis.pixel_values_videos, vis.video_grid_thw)
    assert record("tower features: video", max_abs(video, hf_features(hf, vis.pixel_values_videos,
                                                                       vis.video_grid_thw))) <= TOL


def test_pieces_against_transformers_helpers():
    """Patch order, bilinear taps and cu_seqlens against transformers' vision_utils (their formulas, not ours)."""
    vu = pytest.importorskip("transformers.vision_utils")
    grid = torch.tensor([[1, 6, 10], [3, 4, 2], [1, 2, 2]])
    grids = [tuple(g) for g in grid.tolist()]
    rows, cols, hs, ws = patch_coords(grids, 2, "cpu")
    assert torch.equal(torch.stack([rows, cols], -1), vu.get_vision_position_ids(grid, 2))
    assert torch.equal(vision_cu_seqlens(grids, "cpu"), vu.get_vision_cu_seqlens(grid))
    table = torch.randn(64, 8)
    idx, w = vu.get_vision_interpolation_indices_and_weights(grid, 8, "bilinear", True, 2)
    assert max_abs(position_embedding(table, rows, cols, hs, ws), (table[idx] * w[..., None]).sum(1)) <= 1e-6
    cos, sin = rotary_cos_sin(rows, cols, 16, 10000.0)
    assert torch.equal(cos[:, :4], torch.cos(rows[:, None] * (1 / 10000 ** (torch.arange(0, 8, 2) / 8)))) and \
        torch.equal(cos[:, :8], cos[:, 8:]) and torch.equal(sin[:, 4:8], sin[:, 12:])


def test_checkpoint_saved_by_transformers(tmp_path):
    """transformers' own vision init and save_pretrained names/shapes load into our tower and agree with it."""
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(**configs.config_json("tiny-dense"))
    config.vision_config.depth = 2
    torch.manual_seed(3)
    hf = transformers.AutoModelForImageTextToText.from_config(config).eval()
    hf.save_pretrained(tmp_path)
    ours = q35.from_pretrained(str(tmp_path), backend="reference")
    assert ours.visual is not None and len(ours.visual.blocks) == 2
    x = torch.randn(2 * 8 * 12, 1536)
    grid = torch.tensor([[2, 8, 12]])
    assert max_abs(ours.encode_vision(x, grid), hf_features(hf, x, grid)) <= TOL


def test_wrong_vision_tensor_shape_is_a_clear_error(vision_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    directory = tmp_path / "ckpt"
    shutil.copytree(vision_dir, directory)
    tensors = load_file(directory / "model.safetensors")
    tensors["model.visual.merger.linear_fc2.weight"] = tensors["model.visual.merger.linear_fc2.weight"][:, :-1].clone()
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"model.visual.merger.linear_fc2.weight .* has shape \[64, 127\], "
                                           r"expected \[64, 128\]"):
        q35.from_pretrained(str(directory))
    del tensors["model.visual.merger.linear_fc2.weight"]
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="missing tensor model.visual.merger.linear_fc2.weight"):
        q35.from_pretrained(str(directory))
    text_only = q35.from_pretrained(str(directory), load_vision=False)
    with pytest.raises(ValueError, match="cannot take images or videos: the checkpoint has no model.visual"):
        text_only.encode_vision(torch.zeros(16, 1536), torch.tensor([[1, 4, 4]]))


def test_load_vision_true_needs_a_vision_tower(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(**configs.config_json("tiny-dense"))
    transformers.AutoModelForCausalLM.from_config(config.text_config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="load_vision=True but .* config.json has no vision_config"):
        q35.from_pretrained(str(tmp_path), load_vision=True)


@pytest.mark.parametrize("pixels,grid,message", [
    (torch.zeros(16, 1536), torch.tensor([[1, 4, 5]]), r"grid_thw row \(1, 4, 5\) must have"),
    (torch.zeros(16, 1536), torch.tensor([[1, 4, 4], [1, 2, 2]]), r"shape \[sum\(t\*h\*w\)=20, C\*tp\*p\*p=1536\]"),
    (torch.zeros(16, 768), torch.tensor([[1, 4, 4]]), "got \\[16, 768\\]"),
    (torch.zeros(16, 1536), torch.tensor([1, 4, 4]), r"integer tensor \[num_items, 3\]"),
    (torch.zeros(16, 1536), torch.tensor([[1.0, 4.0, 4.0]]), r"integer tensor \[num_items, 3\]"),
])
def test_bad_tower_inputs(model, pixels, grid, message):
    with pytest.raises(ValueError, match=message):
        model.encode_vision(pixels, grid)


@pytest.mark.gpu
def test_tower_on_cuda_matches_cpu(vision_dir, model, processor):
    vis = processor(images=[random_image(100, 200, seed=1), random_image(64, 64, seed=2)])
    gpu = q35.from_pretrained(vision_dir, device="cuda", dtype=torch.float32)
    out = gpu.encode_vision(vis.pixel_values, vis.image_grid_thw).cpu()
    assert max_abs(out, model.encode_vision(vis.pixel_values, vis.image_grid_thw)) <= 1e-4
    bf16 = q35.from_pretrained(vision_dir, device="cuda", dtype=torch.bfloat16)
    ref = model.encode_vision(vis.pixel_values, vis.image_grid_thw)
    rel = (bf16.encode_vision(vis.pixel_values, vis.image_grid_thw).float().cpu() - ref).norm() / ref.norm()
    assert rel <= 2e-2


@pytest.mark.parametrize("name,expect", [
    ("397b-a17b", {"patch_weight": [1152, 1536], "pos_embed": [2304, 1152], "blocks.26.qkv_weight": [3456, 1152],
                   "blocks.0.fc1_weight": [4304, 1152], "blocks.0.fc2_weight": [1152, 4304],
                   "merger_fc1_weight": [4608, 4608], "merger_fc2_weight": [4096, 4608]}),
    ("0.8b", {"patch_weight": [768, 1536], "blocks.11.qkv_weight": [2304, 768], "merger_fc2_weight": [1024, 3072]}),
])
def test_release_tower_shapes(name, expect):
    """MODEL_SPEC §1.2 / §2.5 shapes, built on the meta device; the load plan reads the Conv3d weight as 5-D."""
    from qwen35_native.model.vision import VisionTower
    from qwen35_native.weights import build_vision_plan

    cfg = configs.get(name).vision
    tower = VisionTower(cfg, torch.bfloat16, "meta", {})
    shapes = {n: list(p.shape) for n, p in tower.named_parameters()}
    assert {k: shapes[k] for k in expect} == expect and len(tower.blocks) == cfg.depth
    plan = build_vision_plan(cfg, "model.visual.")
    assert set(plan) == {f"visual.{n}" for n in shapes}
    assert plan["visual.patch_weight"].placements[0].src_shape == (cfg.hidden_size, 3, 2, 16, 16)
    assert cfg.head_dim == {"397b-a17b": 72, "0.8b": 64}[name]


@pytest.mark.parametrize("change,message", [
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"num_heads": 3}, "must be a multiple of 4"),
    ({"num_position_embeddings": 60}, "must be a square"),
    ({"rope_parameters": {"rope_type": "default"}}, "axial 2D rotary"),
])
def test_bad_vision_configs(change, message):
    from qwen35_native.model import ConfigError, Qwen35Config

    data = configs.config_json("tiny-moe")
    data["vision_config"].update(change)
    with pytest.raises(ConfigError, match=message):
        Qwen35Config.from_dict(data)


def test_vision_rope_theta_round_trips():
    from qwen35_native.model import Qwen35Config

    data = configs.config_json("tiny-moe")
    data["vision_config"]["rope_parameters"] = {"rope_type": "axial", "rope_theta": 500.0}
    cfg = Qwen35Config.from_dict(data)
    assert cfg.vision.rope_theta == 500.0
    assert Qwen35Config.from_dict(cfg.to_dict()).vision == cfg.vision
