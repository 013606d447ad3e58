"""Checkpoint loading: layouts, MTP and vision tensors, dtype conversion, and clear errors naming tensor and file."""

import json
import os
import shutil

import pytest
import torch
from model_helpers import max_abs, random_ids
from safetensors.torch import load_file, save_file

import qwen35_native as q35
from qwen35_native.model import ConfigError
from qwen35_native.tiny import write_tiny_checkpoint
from qwen35_native.weights import WeightsError


def _copy(src, dst, mutate=None):
    """A copy of a single-file checkpoint; ``mutate(tensors)`` edits the tensor dict before it is written."""
    shutil.copytree(src, dst)
    if mutate is not None:
        path = os.path.join(dst, "model.safetensors")
        tensors = load_file(path)
        mutate(tensors)
        save_file(tensors, path, metadata={"format": "pt"})
    return str(dst)


def test_mtp_kept_aside_unless_asked(tiny_dirs, tiny_models):
    model = tiny_models["tiny-moe"]
    assert model.mtp is None
    names = [n for n, _ in model.named_parameters()]
    assert names and not any(n.startswith("mtp.") for n in names)
    with_mtp = q35.from_pretrained(tiny_dirs["tiny-moe"], load_mtp=True)
    ref = load_file(os.path.join(tiny_dirs["tiny-moe"], "model.safetensors"))
    assert torch.equal(with_mtp.mtp.fc, ref["mtp.fc.weight"])
    w13 = with_mtp.mtp.layers[0].ffn.w13
    assert torch.equal(w13, ref["mtp.layers.0.mlp.experts.gate_up_proj"])
    q = ref["mtp.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(with_mtp.mtp.layers[0].mixer.qkv_proj[:q.shape[0]], q)


def test_bf16_load_and_fp32_a_log(tiny_dirs, tiny_models):
    bf16 = q35.from_pretrained(tiny_dirs["tiny-moe"], dtype=torch.bfloat16)
    assert bf16.embed_tokens.dtype == torch.bfloat16
    assert bf16.layers[0].mixer.A_log.dtype == torch.float32
    ids = random_ids(20, seed=4, batch=1)
    ref = tiny_models["tiny-moe"](ids)
    out = bf16(ids)
    assert out.dtype == torch.bfloat16
    assert ((out.float() - ref).norm() / ref.norm()).item() < 5e-2


def test_bf16_checkpoint_loads_in_fp32(tmp_path):
    path = write_tiny_checkpoint(str(tmp_path / "bf16"), "tiny-dense", seed=3, dtype=torch.bfloat16)
    tensors = load_file(os.path.join(path, "model.safetensors"))
    assert tensors["model.language_model.layers.0.linear_attn.A_log"].dtype == torch.float32
    assert tensors["model.language_model.embed_tokens.weight"].dtype == torch.bfloat16
    model = q35.from_pretrained(path, dtype="float32")
    assert model.embed_tokens.dtype == torch.float32
    assert torch.equal(model.embed_tokens, tensors["model.language_model.embed_tokens.weight"].float())


def test_missing_tensor(tiny_dirs, tmp_path):
    key = "model.language_model.layers.1.linear_attn.A_log"
    path = _copy(tiny_dirs["tiny-moe"], tmp_path / "c", lambda t: t.pop(key))
    with pytest.raises(WeightsError, match=rf"missing tensor {key} \(for parameter layers.1.mixer.A_log\) in .*"
                                           r"model.safetensors"):
        q35.from_pretrained(path)


def test_unexpected_tensor(tiny_dirs, tmp_path):
    path = _copy(tiny_dirs["tiny-moe"], tmp_path / "c", lambda t: t.update({"model.language_model.extra": t[
        "model.language_model.norm.weight"].clone()}))
    with pytest.raises(WeightsError, match=r"unexpected tensor model.language_model.extra in .*model.safetensors"):
        q35.from_pretrained(path)


def test_wrong_shape(tiny_dirs, tmp_path):
    key = "model.language_model.layers.3.self_attn.k_proj.weight"
    path = _copy(tiny_dirs["tiny-moe"], tmp_path / "c", lambda t: t.update({key: t[key][:16]}))
    with pytest.raises(WeightsError, match=rf"tensor {key} in .*model.safetensors has shape \[16, 64\], expected "
                                           r"\[32, 64\]"):
        q35.from_pretrained(path)


def test_wrong_dtype(tiny_dirs, tmp_path):
    key = "model.language_model.norm.weight"
    path = _copy(tiny_dirs["tiny-moe"], tmp_path / "c", lambda t: t.update({key: t[key].to(torch.int32)}))
    with pytest.raises(WeightsError, match=rf"tensor {key} in .*model.safetensors has dtype I32"):
        q35.from_pretrained(path)


def test_truncated_and_corrupt_files(tiny_dirs, tmp_path):
    path = _copy(tiny_dirs["tiny-moe"], tmp_path / "t")
    file = os.path.join(path, "model.safetensors")
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) // 2)
    with pytest.raises(WeightsError, match=r"model.safetensors: cannot open as safetensors \(truncated or corrupt"):
        q35.from_pretrained(path)
    with open(file, "wb") as f:
        f.write(b"\x00" * 64)
    with pytest.raises(WeightsError, match="cannot open as safetensors"):
        q35.from_pretrained(path)


def test_sharded_index_problems(tiny_dirs, tmp_path):
    path = shutil.copytree(tiny_dirs["tiny-moe-per-expert"], tmp_path / "s")
    index = path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    os.remove(path / "model-00002-of-00003.safetensors")
    with pytest.raises(WeightsError, match="lists shard model-00002-of-00003.safetensors, which does not exist"):
        q35.from_pretrained(str(path))
    index.write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid safetensors index"):
        q35.from_pretrained(str(path))
    assert data["weight_map"]


def test_no_weights_or_config(tmp_path, tiny_dirs):
    with pytest.raises(ConfigError, match="no config.json"):
        q35.from_pretrained(str(tmp_path))
    shutil.copy(os.path.join(tiny_dirs["tiny-moe"], "config.json"), tmp_path)
    with pytest.raises(WeightsError, match="no model.safetensors or model.safetensors.index.json"):
        q35.from_pretrained(str(tmp_path))


def test_tied_embeddings_and_vision_tensors_loaded(tiny_dirs, tiny_models):
    dense = tiny_models["tiny-dense"]
    assert dense.output_weight is dense.embed_tokens
    tensors = load_file(os.path.join(tiny_dirs["tiny-dense"], "model.safetensors"))
    qkv = dense.visual.blocks[0].qkv_weight
    assert torch.equal(qkv, tensors["model.visual.blocks.0.attn.qkv.weight"])
    assert torch.equal(dense.visual.patch_weight, tensors["model.visual.patch_embed.proj.weight"].flatten(1))
    text_only = q35.from_pretrained(tiny_dirs["tiny-dense"], backend="reference", load_vision=False)
    assert text_only.visual is None and not any("visual" in n for n, _ in text_only.named_parameters())


def test_load_logs_backends_once(tiny_dirs, caplog):
    with caplog.at_level("INFO", logger="qwen35_native"):
        q35.from_pretrained(tiny_dirs["tiny-dense"], backend="reference")
    lines = [r.getMessage() for r in caplog.records if r.name == "qwen35_native"]
    assert len(lines) == 1 and "pure-torch reference: rms_norm, gdn_prefill" in lines[0]
    assert "layers, vision tower)" in lines[0]


def test_kernel_backend_runs_rms_norm_kernel(tiny_dirs, tiny_models):
    if not q35.build_info()["with_emulator"]:
        with pytest.raises(ValueError, match="backend='kernel' on cpu needs the SIMT emulator"):
            q35.from_pretrained(tiny_dirs["tiny-moe"], backend="kernel")
        pytest.skip("the SIMT emulator is not built (backend='kernel' on CPU runs kernels under it)")
    model = q35.from_pretrained(tiny_dirs["tiny-moe"], backend="kernel")
    ids = random_ids(33, seed=6, batch=1)
    assert max_abs(model(ids), tiny_models["tiny-moe"](ids)) <= 1e-4
