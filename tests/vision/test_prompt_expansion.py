"""Prompt expansion: placeholder counts, the video timestamp layout, text and token-id forms agreeing, token ids taken
from the checkpoint files, and clear errors when placeholders and inputs disagree."""

import json
import shutil

import pytest
import torch
from vision_helpers import random_image, random_video

from qwen35_native.multimodal import VisionInputs, VisionTokens, expand_prompt, expand_prompt_ids

PH_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
PH_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def vis(processor):
    return processor(images=[random_image(70, 130, seed=1), random_image(300, 41, seed=2)],
                     videos=[random_video(6, 64, 96, seed=3)], video_fps=2.0)


def test_text_expansion_layout(processor, vis):
    text = f"a{PH_IMAGE}b{PH_VIDEO}c{PH_IMAGE}d"
    out = processor.expand_prompt(text, vis)
    gh, gw = vis.video_grid_thw[0, 1:].tolist()
    video = "".join(f"<{ts:.1f} seconds><|vision_start|>{'<|video_pad|>' * (gh * gw // 4)}<|vision_end|>"
                    for ts in (0.25, 1.25, 2.25))
    n0, n1 = (int(g.prod()) // 4 for g in vis.image_grid_thw)
    assert out == (f"a<|vision_start|>{'<|image_pad|>' * n0}<|vision_end|>b{video}c"
                   f"<|vision_start|>{'<|image_pad|>' * n1}<|vision_end|>d")
    assert "<0.2 seconds>" in out   # f"{0.25:.1f}": round-half-even, as transformers formats it


def test_chat_template_then_text_or_id_expansion_agree(processor, tokenizer, vis):
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "Describe"}, {"type": "video"}, {"type": "image"},
        {"type": "text", "text": "please."}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert text.count(PH_IMAGE) == 2 and text.count(PH_VIDEO) == 1
    from_text = tokenizer.encode(processor.expand_prompt(text, vis), add_special_tokens=False)
    from_ids = processor.expand_prompt_ids(tokenizer.encode(text, add_special_tokens=False), vis,
                                           lambda s: tokenizer.encode(s, add_special_tokens=False))
    assert from_text == from_ids
    t = processor.tokens
    assert from_ids.count(t.image_token_id) == sum(int(g.prod()) // 4 for g in vis.image_grid_thw)
    assert from_ids.count(t.video_token_id) == int(vis.video_grid_thw.prod()) // 4
    assert from_ids.count(t.vision_start_token_id) == 2 + 3 and from_ids.count(t.vision_end_token_id) == 2 + 3


def test_bare_pad_tokens_expand_too(processor, vis):
    """A placeholder without its start/end tokens: an image pad is repeated in place, a video pad becomes the full
    per-group layout (the same as the triple)."""
    t = processor.tokens
    video_only = VisionInputs(video_grid_thw=vis.video_grid_thw, video_timestamps=vis.video_timestamps)
    encode = {"<0.2 seconds>": [1], "<1.2 seconds>": [2], "<2.2 seconds>": [3]}.__getitem__
    triple = expand_prompt_ids([5, t.vision_start_token_id, t.video_token_id, t.vision_end_token_id, 6], t, encode,
                               video_grid_thw=video_only.video_grid_thw,
                               video_timestamps=video_only.video_timestamps)
    bare = expand_prompt_ids([5, t.video_token_id, 6], t, encode, video_grid_thw=video_only.video_grid_thw,
                             video_timestamps=video_only.video_timestamps)
    assert triple == bare and triple[:3] == [5, 1, t.vision_start_token_id] and triple[-1] == 6
    assert expand_prompt("x<|image_pad|>y", t, vis.image_grid_thw[:1]) == "x" + "<|image_pad|>" * 8 + "y"


def test_token_ids_come_from_the_checkpoint(vision_dir, tmp_path):
    """Swap the image and video pad ids in config.json and the tokenizer: the expansion follows the files."""
    tokens = VisionTokens.from_pretrained(vision_dir)
    directory = tmp_path / "ckpt"
    shutil.copytree(vision_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config["image_token_id"], config["video_token_id"] = config["video_token_id"], config["image_token_id"]
    (directory / "config.json").write_text(json.dumps(config))
    tok = json.loads((directory / "tokenizer.json").read_text())
    for added in tok["added_tokens"]:
        if added["content"] in ("<|image_pad|>", "<|video_pad|>"):
            added["content"] = "<|video_pad|>" if added["content"] == "<|image_pad|>" else "<|image_pad|>"
    (directory / "tokenizer.json").write_text(json.dumps(tok))
    swapped = VisionTokens.from_pretrained(str(directory))
    assert swapped.image_token_id == tokens.video_token_id and swapped.image_token == "<|image_pad|>"
    grid = torch.tensor([[1, 4, 4]])
    assert expand_prompt_ids([swapped.image_token_id], swapped, image_grid_thw=grid) == [tokens.video_token_id] * 4


@pytest.mark.parametrize("text,images,videos,message", [
    (f"{PH_IMAGE}{PH_IMAGE}", 1, 0, "the prompt has 2 image placeholder"),
    ("no placeholders", 1, 0, "the prompt has 0 image placeholder"),
    (f"{PH_VIDEO}", 0, 0, "the prompt has 1 video placeholder"),
    (f"{PH_IMAGE}", 1, 1, "the prompt has 0 video placeholder"),
])
def test_count_mismatches_are_clear_errors(processor, vis, text, images, videos, message):
    sub = VisionInputs(image_grid_thw=vis.image_grid_thw[:images] if images else None,
                       video_grid_thw=vis.video_grid_thw[:videos] if videos else None,
                       video_timestamps=vis.video_timestamps[:videos])
    with pytest.raises(ValueError, match=message):
        processor.expand_prompt(text, sub)
    with pytest.raises(ValueError, match=message):
        processor.expand_prompt_ids(_ids(processor, text), sub, lambda s: [1])


def _ids(processor, text):
    """Token ids of a text made of vision special tokens and other characters (each other character -> id 0)."""
    t = processor.tokens
    table = {"<|vision_start|>": t.vision_start_token_id, "<|vision_end|>": t.vision_end_token_id,
             "<|image_pad|>": t.image_token_id, "<|video_pad|>": t.video_token_id}
    ids, rest = [], text
    while rest:
        for s, i in table.items():
            if rest.startswith(s):
                ids.append(i)
                rest = rest[len(s):]
                break
        else:
            ids.append(0)
            rest = rest[1:]
    return ids


def test_missing_inputs_for_expansion(processor, vis):
    t = processor.tokens
    with pytest.raises(ValueError, match="needs encode="):
        expand_prompt_ids([t.video_token_id], t, None, video_grid_thw=vis.video_grid_thw,
                          video_timestamps=vis.video_timestamps)
    with pytest.raises(ValueError, match="one timestamp per temporal group"):
        expand_prompt(PH_VIDEO, t, video_grid_thw=vis.video_grid_thw, video_timestamps=[[0.5]])
    ids_only = VisionTokens(t.image_token_id, t.video_token_id, t.vision_start_token_id, t.vision_end_token_id)
    with pytest.raises(ValueError, match="needs the vision tokens' text"):
        expand_prompt(PH_IMAGE, ids_only, vis.image_grid_thw[:1])
