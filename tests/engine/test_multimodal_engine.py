"""Images and videos through the engine: chat / generate with media give the tokens of the model's own multimodal
full forward, also when the prompt is prefilled in chunks (vision tokens split across steps), batched with text
prompts, preempted and recomputed, or decoded on the static (CUDA-graph) path. Code: engine/prompts.py,
engine/model_runner.py (positions, vision features per chunk)."""

import numpy as np
import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine.cuda_graphs import DecodeGraphs

GREEDY = q35.SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)


def image(seed, h=40, w=56):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def video(seed, frames=4):
    return (np.random.RandomState(seed).rand(frames, 32, 48, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mm_llm_factory(tiny_dir):
    """LLMs on the tiny checkpoint directory (its vision processor config), sharing one loaded model."""
    base = q35.LLM(tiny_dir, backend="reference", max_num_seqs=4)
    model = base.model

    def make(**kwargs):
        llm = q35.LLM(model, tokenizer=base.tokenizer, generation_config=base.generation_config, **kwargs)
        llm.prompts._processor = base.prompts.processor()   # the checkpoint's preprocessor settings
        return llm

    return make


def full_forward_greedy(llm, prompt_ids, steps, **vision):
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(llm.model(torch.tensor([ids]), **vision)[0, -1].argmax()))
    return ids[len(prompt_ids):]


def image_chat(seed, text="What is in the picture?"):
    return [{"role": "user", "content": [{"type": "image", "image": image(seed)}, {"type": "text", "text": text}]}]


def test_chat_with_an_image_matches_the_full_forward(mm_llm_factory):
    llm = mm_llm_factory()
    reply = llm.chat(image_chat(0), GREEDY)
    assert reply.prompt.count("<|image_pad|>") == 1   # the rendered conversation; the ids spell every vision token
    vis = llm.prompts.processor()(images=[image(0)])
    pad = llm.model.config.image_token_id
    assert reply.prompt_token_ids.count(pad) == int(vis.image_grid_thw.prod(-1).sum()) // 4
    assert reply.token_ids == full_forward_greedy(llm, reply.prompt_token_ids, 5, **vis.model_kwargs())


def test_video_through_chat_matches_the_full_forward(mm_llm_factory):
    llm = mm_llm_factory()
    messages = [{"role": "user", "content": [{"type": "video", "video": video(1), "fps": 2.0},
                                             {"type": "text", "text": "Describe."}]}]
    reply = llm.chat(messages, GREEDY, enable_thinking=False)
    vis = llm.prompts.processor()(videos=[video(1)], video_fps=[2.0])
    assert reply.token_ids == full_forward_greedy(llm, reply.prompt_token_ids, 5, **vis.model_kwargs())


def test_chunked_batched_and_preempted_multimodal_prefill(mm_llm_factory):
    """Two image prompts and a text prompt; a token budget of 7 splits the vision tokens across steps, and a small
    cache forces preemption (recompute from the prompt's positions and features)."""
    convs = [image_chat(2), [{"role": "user", "content": "Plain text here."}], image_chat(3, "Second one?")]
    alone = [mm_llm_factory().chat(c, GREEDY).token_ids for c in convs]
    chunked = mm_llm_factory(max_num_batched_tokens=7, max_num_seqs=3).chat(convs, GREEDY)
    assert [r.token_ids for r in chunked] == alone
    tight = mm_llm_factory(max_num_seqs=3, block_size=4, num_blocks=14, max_model_len=40)
    replies = tight.chat(convs, GREEDY)
    assert [r.token_ids for r in replies] == alone
    assert tight.engine.scheduler.num_preemptions > 0


def test_static_decode_path_with_rope_delta(mm_llm_factory):
    """Decode positions are ``context + rope_delta`` on the static-buffer (CUDA-graph) path too."""
    eager = mm_llm_factory().chat([image_chat(4), image_chat(5, "And this?")], GREEDY)
    llm = mm_llm_factory()
    llm.engine.runner.graphs = DecodeGraphs(llm.engine.runner, [1, 2, 4], strict=True, capture=False)
    static = llm.chat([image_chat(4), image_chat(5, "And this?")], GREEDY)
    assert [r.token_ids for r in static] == [r.token_ids for r in eager]
    assert llm.engine.runner.graphs.replays > 0
    rendered = llm.tokenizer.apply_chat_template(image_chat(4), add_generation_prompt=True)
    mm = llm.prompts.prepare({"prompt": rendered, "multi_modal_data": {"image": image(4)}}).multimodal
    assert mm.rope_delta != 0   # decode positions really are shifted
    assert llm.engine.scheduler.running == [] and eager[0].prompt_token_ids == static[0].prompt_token_ids


def test_generate_with_a_dict_prompt(mm_llm_factory, tiny_tokenizer):
    llm = mm_llm_factory()
    text = "<|vision_start|><|image_pad|><|vision_end|>Caption:"
    by_text = llm.generate({"prompt": text, "multi_modal_data": {"image": image(6)}}, GREEDY)[0]
    ids = tiny_tokenizer.encode(text)
    by_ids = llm.generate({"prompt_token_ids": ids, "multi_modal_data": {"image": [image(6)]}}, GREEDY)[0]
    assert by_text.prompt_token_ids == by_ids.prompt_token_ids and by_text.token_ids == by_ids.token_ids
    vis = llm.prompts.processor()(images=[image(6)])
    assert by_text.token_ids == full_forward_greedy(llm, by_text.prompt_token_ids, 5, **vis.model_kwargs())


def test_multimodal_errors(mm_llm_factory, tiny_dir):
    llm = mm_llm_factory()
    with pytest.raises(ValueError, match="the prompt has 0 image placeholder.s. but 1 image.s. were given"):
        llm.generate({"prompt": "no placeholder", "multi_modal_data": {"image": image(0)}}, GREEDY)
    with pytest.raises(ValueError, match="a video needs its frame rate"):
        llm.chat([{"role": "user", "content": [{"type": "video", "video": video(0)}]}], GREEDY)
    with pytest.raises(ValueError, match="a dict prompt takes 'prompt' .text. or 'prompt_token_ids'"):
        llm.generate({"text": "x"}, GREEDY)
    with pytest.raises(ValueError, match="multi_modal_data takes 'image', 'video' and 'video_fps'"):
        llm.generate({"prompt": "x", "multi_modal_data": {"audio": 1}}, GREEDY)
    text_only = q35.LLM(q35.from_pretrained(tiny_dir, backend="reference", load_vision=False), max_num_seqs=2,
                        tokenizer=llm.tokenizer)
    with pytest.raises(ValueError, match="need a model with a vision tower"):
        text_only.chat(image_chat(0), GREEDY)
    assert not llm.engine.has_unfinished() and not text_only.engine.has_unfinished()


def test_cli_generate_with_an_image(tiny_dir, tmp_path, capsys):
    from PIL import Image

    from qwen35_native.cli import main

    path = tmp_path / "picture.png"
    Image.fromarray(image(7)).save(path)
    base = ["generate", "--model", tiny_dir, "--prompt", "What is this?", "--max-tokens", "3", "--temperature", "0"]
    assert main(base) == 0
    text_tokens = int(capsys.readouterr().err.split("[prompt ")[1].split()[0])
    assert main(base + ["--image", str(path)]) == 0
    err = capsys.readouterr().err
    assert int(err.split("[prompt ")[1].split()[0]) > text_tokens + 3
    assert main(base + ["--image", str(path), "--raw"]) == 2
    assert "--image/--video need a text --prompt sent through the chat template" in capsys.readouterr().err


@pytest.mark.gpu
def test_multimodal_chat_on_cuda_matches_cpu(tiny_dir):
    convs = [image_chat(8), image_chat(9, "More?"), [{"role": "user", "content": "Text only."}]]
    cpu = q35.LLM(tiny_dir, device="cpu", backend="reference", max_num_seqs=4).chat(convs, GREEDY)
    cuda = q35.LLM(tiny_dir, device="cuda", max_num_seqs=4, max_num_batched_tokens=64, num_blocks=64)
    cuda = cuda.chat(convs, GREEDY)
    assert [r.token_ids for r in cuda] == [r.token_ids for r in cpu]
