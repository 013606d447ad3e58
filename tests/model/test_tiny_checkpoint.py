"""``qwen35 make-tiny``: release layout, tokenizer and special-token ids, chat template, noise on the weights that
hide convention bugs; and the model's handling of bad inputs."""

import json
import os

import jinja2
import pytest
import torch
from model_helpers import random_ids
from safetensors import safe_open
from tokenizers import Tokenizer

import qwen35_native as q35
from qwen35_native.cli import main


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "tiny-kernel")
    assert main(["make-tiny", path, "--config", "tiny-kernel", "--seed", "3"]) == 0
    return path


def test_cli_writes_release_layout(kernel_dir):
    files = set(os.listdir(kernel_dir))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= files
    with safe_open(os.path.join(kernel_dir, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.language_model.layers.0.mlp.experts.gate_up_proj").get_shape() == [8, 256, 256]
        assert f.get_slice("model.language_model.layers.3.self_attn.q_proj.weight").get_shape() == [1024, 256]
        assert f.get_slice("model.visual.patch_embed.proj.weight").get_shape() == [64, 3, 2, 16, 16]
        assert f.get_slice("model.visual.merger.linear_fc1.weight").get_shape() == [256, 256]
        assert f.get_slice("mtp.fc.weight").get_shape() == [256, 512]
    assert {"lm_head.weight", "mtp.layers.0.mlp.experts.down_proj", "mtp.pre_fc_norm_embedding.weight",
            "model.visual.blocks.0.attn.qkv.bias", "model.visual.pos_embed.weight"} <= keys
    assert not any(".experts.0." in k for k in keys)
    model = q35.from_pretrained(kernel_dir)
    assert model(random_ids(5, seed=1, batch=1)).shape == (1, 5, 512)


def read_json(directory, name):
    with open(os.path.join(directory, name)) as f:
        return json.load(f)


def test_special_token_ids_agree_between_files(kernel_dir):
    tok = Tokenizer.from_file(os.path.join(kernel_dir, "tokenizer.json"))
    cfg, gen, tcfg = (read_json(kernel_dir, n) for n in ("config.json", "generation_config.json",
                                                        "tokenizer_config.json"))
    ids = {t: tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>",
                                           "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<think>",
                                           "</think>", "<|audio_pad|>")}
    assert ids["<|endoftext|>"] == 448 and ids["<|audio_pad|>"] == 480 and ids["</think>"] == 448 + 25
    assert cfg["image_token_id"] == ids["<|image_pad|>"] and cfg["video_token_id"] == ids["<|video_pad|>"]
    assert cfg["vision_start_token_id"] == ids["<|vision_start|>"]
    assert cfg["vision_end_token_id"] == ids["<|vision_end|>"]
    assert cfg["text_config"]["eos_token_id"] == ids["<|endoftext|>"]
    assert gen["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert tcfg["added_tokens_decoder"][str(ids["<think>"])] == {
        "content": "<think>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
        "special": False}
    assert max(ids.values()) < cfg["text_config"]["vocab_size"] == 512
    text = "<|im_start|>user\nHello, world 42!<|im_end|>\n"
    enc = tok.encode(text)
    assert enc.ids[0] == ids["<|im_start|>"] and ids["<|im_end|>"] in enc.ids
    assert tok.decode(enc.ids, skip_special_tokens=False) == text
    assert all(i < 448 for i in tok.encode("plain text, no specials: 123").ids)


def test_chat_template_renders_chatml(kernel_dir):
    with open(os.path.join(kernel_dir, "chat_template.jinja")) as f:
        template = jinja2.Environment().from_string(f.read())
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>\nold\n</think>\n\nHello."}, {"role": "user", "content": "Bye"}]
    assert template.render(messages=msgs, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n")
    off = template.render(messages=msgs[1:2], add_generation_prompt=True, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    assert "<|vision_start|><|image_pad|><|vision_end|>What?" in template.render(messages=image)


def test_weights_carry_noise(kernel_dir):
    with safe_open(os.path.join(kernel_dir, "model.safetensors"), "pt") as f:
        p = "model.language_model.layers.0."
        assert f.get_tensor(p + "input_layernorm.weight").abs().min() > 0      # (1 + w) norms: not zeros
        assert f.get_tensor(p + "linear_attn.norm.weight").std() > 0.01        # w norm: not all ones
        assert f.get_tensor(p + "linear_attn.dt_bias").std() > 0.1
        assert f.get_tensor(p + "linear_attn.conv1d.weight").std() > 0.1
        assert f.get_tensor(p + "linear_attn.A_log").dtype == torch.float32


BAD_INPUTS = [
    (lambda m: m(torch.tensor([[1, 2, 512]])), ValueError, r"token ids must be in \[0, vocab_size=512\)"),
    (lambda m: m(torch.tensor([[-1, 2]])), ValueError, "token ids must be in"),
    (lambda m: m(torch.zeros(1, 0, dtype=torch.long)), ValueError, "empty"),
    (lambda m: m(torch.zeros(2, 3)), TypeError, "input_ids must be int32 or int64"),
    (lambda m: m(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 0, 1], [1, 1, 1]])),
     ValueError, "one contiguous run of tokens per row"),
    (lambda m: m(torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]])),
     ValueError, "at least one token"),
    (lambda m: m(torch.ones(1, 3, dtype=torch.long), pixel_values=torch.zeros(4, 1536)), ValueError,
     "image input needs both its pixel values and its grid_thw"),
    (lambda m: m(torch.ones(1, 3, dtype=torch.long), labels=1), TypeError, "unexpected forward arguments"),
    (lambda m: m(torch.ones(5, dtype=torch.long), cu_seqlens=torch.tensor([0, 3, 4])), ValueError,
     "cu_seqlens must rise strictly from 0 to 5"),
    (lambda m: m(torch.ones(5, dtype=torch.long)), ValueError, r"input_ids must be \[B, T\]"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS)
def test_bad_inputs_are_clear_errors(call, error, message, tiny_models):
    with pytest.raises(error, match=message):
        call(tiny_models["tiny-moe"])


def test_bad_from_pretrained_arguments(tiny_dirs):
    with pytest.raises(ValueError, match="backend must be None, 'auto', 'kernel' or 'reference'"):
        q35.from_pretrained(tiny_dirs["tiny-moe"], backend="fast")
    with pytest.raises(ValueError, match="dtype must be float32, bfloat16 or float16"):
        q35.from_pretrained(tiny_dirs["tiny-moe"], dtype=torch.int8)
