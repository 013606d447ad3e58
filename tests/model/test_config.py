"""config.json parsing (both layouts, both model types, rope fields, layer_types) and the named configs."""

import copy
import json

import pytest

from qwen35_native import configs
from qwen35_native.model.config import ConfigError, Qwen35Config


def release(name="35b-a3b"):
    return configs.config_json(name)


def test_named_release_configs_match_model_spec():
    c = configs.get("397b-a17b").text
    assert (c.hidden_size, c.num_hidden_layers, c.num_experts, c.num_experts_per_tok) == (4096, 60, 512, 10)
    assert c.layer_indices("full_attention") == list(range(3, 60, 4))
    assert (c.conv_dim, c.rotary_dim, c.mrope_section, c.rope_theta) == (12288, 64, (11, 11, 10), 1e7)
    assert c.shared_expert_intermediate_size == 1024 and not c.tie_word_embeddings
    assert configs.get("0.8b").text.tie_word_embeddings and not configs.get("9b").text.is_moe
    assert configs.get("35b-a3b").vision.out_hidden_size == 2048
    assert configs.get("0.8b").vision.hidden_size // configs.get("0.8b").vision.num_heads == 64
    k = configs.get("tiny-kernel").text
    assert (k.linear_key_head_dim, k.linear_value_head_dim, k.head_dim, k.rotary_dim) == (128, 128, 256, 64)
    for name in ("tiny-moe", "tiny-dense"):
        t = configs.get(name).text
        assert t.linear_key_head_dim != t.linear_value_head_dim and t.num_key_value_heads == 1
    with pytest.raises(KeyError, match="unknown config 'big'"):
        configs.get("big")


def test_bare_text_layout_and_round_trip():
    data = release()
    bare = dict(data["text_config"], eos_token_id=[1, 2])
    c = Qwen35Config.from_dict(bare)
    assert c.model_type == "qwen3_5_moe" and c.vision is None and c.text.eos_token_id == (1, 2)
    full = Qwen35Config.from_dict(data)
    assert Qwen35Config.from_dict(full.to_dict()) == full
    dense = Qwen35Config.from_dict(configs.config_json("9b")["text_config"])
    assert not dense.text.is_moe and dense.text.intermediate_size == 12288


def test_layer_types_win_over_interval():
    data = release()
    data["text_config"]["num_hidden_layers"] = 3
    data["text_config"]["layer_types"] = ["full_attention", "linear_attention", "full_attention"]
    assert Qwen35Config.from_dict(data).text.layer_types[0] == "full_attention"
    del data["text_config"]["layer_types"]
    data["text_config"]["full_attention_interval"] = 2
    assert Qwen35Config.from_dict(data).text.layer_indices("full_attention") == [1]


def test_legacy_rope_fields_and_vision_model_types():
    data = release()
    t = data["text_config"]
    del t["rope_parameters"]
    t.update(rope_theta=5e6, partial_rotary_factor=0.25, rope_scaling={"type": "mrope", "mrope_section": [11, 11, 10],
                                                                        "mrope_interleaved": True})
    c = Qwen35Config.from_dict(data)
    assert c.text.rope_theta == 5e6 and c.text.mrope_section == (11, 11, 10)
    for vt in ("qwen3_5_moe", "qwen3_5_moe_vision"):
        data["vision_config"]["model_type"] = vt
        assert Qwen35Config.from_dict(data).vision.depth == 27


BAD = [
    (lambda d: d.update(model_type="llama"), "model_type must be one of"),
    (lambda d: d["text_config"].update(model_type="qwen3_5_text"), "text_config.model_type must be"),
    (lambda d: d["text_config"].update(layer_types=["full_attention"]), "layer_types must list 40 entries"),
    (lambda d: d["text_config"].update(layer_types=["mamba"] * 40), "layer_types must list 40 entries"),
    (lambda d: d["text_config"]["rope_parameters"].update(rope_type="yarn"), "rope_type 'yarn' is not supported"),
    (lambda d: d["text_config"]["rope_parameters"].update(mrope_section=[10, 10, 10]), "mrope_section must be 3"),
    (lambda d: d["text_config"].update(num_key_value_heads=3), "multiple of num_key_value_heads"),
    (lambda d: d["text_config"].update(hidden_size="big"), "hidden_size must be an integer"),
    (lambda d: d["text_config"].pop("num_experts"), "missing required field 'num_experts'"),
    (lambda d: d["text_config"].update(hidden_act="gelu"), "hidden_act='gelu' is not supported"),
    (lambda d: d["text_config"].update(attn_output_gate=False), "attn_output_gate=False is not supported"),
    (lambda d: d["text_config"].update(num_experts_per_tok=300), "num_experts_per_tok must be <= num_experts"),
    (lambda d: d["vision_config"].update(model_type="siglip"), "vision_config.model_type must be one of"),
    (lambda d: d["vision_config"].update(deepstack_visual_indexes=[5]), "deepstack_visual_indexes"),
    (lambda d: d.update(text_config=None), "needs a 'text_config' object"),
]


@pytest.mark.parametrize("mutate,message", BAD)
def test_malformed_configs_are_clear_errors(mutate, message):
    data = copy.deepcopy(release())
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        Qwen35Config.from_dict(data)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        Qwen35Config.from_file(str(tmp_path))
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Qwen35Config.from_file(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "text_config": {}}))
    with pytest.raises(ConfigError, match=r"config.json: missing required field 'num_hidden_layers'"):
        Qwen35Config.from_file(str(tmp_path))
