"""Whole-model logits with images and videos against transformers in fp32 (MODEL_SPEC §5.15: max abs <= 1e-4), and
the 3-stream positions against transformers' ``get_rope_index`` (exact)."""

import pytest
import torch
from vision_helpers import chat_ids, hf_logits, max_abs, mm_token_type_ids, random_image, random_video, record

import qwen35_native as q35
from qwen35_native.model.mrope import get_rope_index, rope_index

TOL = 1e-4

IMG, VID = {"type": "image"}, {"type": "video"}


def text(s):
    return {"type": "text", "text": s}


CASES = {  # name: (chat content, images (h, w), videos (frames, h, w, fps))
    "one image": ([IMG, text("What is in the picture?")], [(70, 130)], []),
    "two images of different sizes": ([text("Compare"), IMG, text("with"), IMG], [(200, 90), (64, 64)], []),
    "extreme aspect ratio image": ([IMG, text("Read it.")], [(20, 700)], []),
    "video of 6 frames": ([VID, text("What happens?")], [], [(6, 64, 96, 2.0)]),
    "image and video": ([IMG, text("then"), VID], [(96, 160)], [(5, 40, 80, 4.0)]),
}


def inputs(processor, tokenizer, case, seed=0):
    content, images, videos = CASES[case]
    vis = processor(images=[random_image(h, w, seed=seed + i) for i, (h, w) in enumerate(images)],
                    videos=[random_video(t, h, w, seed=seed + 10 + i) for i, (t, h, w, _) in enumerate(videos)],
                    video_fps=[fps for *_, fps in videos])
    return chat_ids(tokenizer, processor, content, vis), vis


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, model, hf, processor, tokenizer):
    ids, vis = inputs(processor, tokenizer, case)
    ours = model(ids[None], **vis.model_kwargs())
    ref = hf_logits(hf, ids[None], vis)
    err = record(f"logits: {case}", max_abs(ours, ref))
    assert ours.shape == ref.shape and err <= TOL, f"{case}: max abs {err:.2e}"


@pytest.mark.parametrize("case", list(CASES))
def test_positions_match_get_rope_index(case, model, hf, processor, tokenizer):
    ids, vis = inputs(processor, tokenizer, case)
    cfg = model.config
    ref_pos, ref_delta = hf.model.get_rope_index(ids[None], mm_token_type_ids(ids[None], cfg), vis.image_grid_thw,
                                                 vis.video_grid_thw)
    pos, delta = rope_index(ids, vis.image_grid_thw, vis.video_grid_thw, image_token_id=cfg.image_token_id,
                            video_token_id=cfg.video_token_id)
    assert torch.equal(pos, ref_pos[:, 0]) and delta == int(ref_delta)


def _padded_batch(processor, tokenizer, cases, left):
    """Several prompts with their own images/videos, padded to one length; the grids follow prompt order."""
    seqs, vis_all = zip(*(inputs(processor, tokenizer, c, seed=7 * i) for i, c in enumerate(cases)))
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        sl = slice(T - len(s), T) if left else slice(0, len(s))
        ids[b, sl], mask[b, sl] = s, 1
    cat = {}
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        parts = [getattr(v, key) for v in vis_all if getattr(v, key) is not None]
        cat[key] = torch.cat(parts) if parts else None
    return seqs, vis_all, ids, mask, cat


BATCH = ["two images of different sizes", "video of 6 frames", "one image", "image and video"]


def test_batched_positions_match_get_rope_index_with_left_padding(model, hf, processor, tokenizer):
    _, _, ids, mask, cat = _padded_batch(processor, tokenizer, BATCH, left=True)
    cfg = model.config
    ref = hf.model.get_rope_index(ids, mm_token_type_ids(ids, cfg), cat["image_grid_thw"], cat["video_grid_thw"],
                                  attention_mask=mask)
    ours = get_rope_index(ids, cat["image_grid_thw"], cat["video_grid_thw"], attention_mask=mask,
                          image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_padded_batch_with_different_images_per_sequence(model, hf, processor, tokenizer, left):
    """One forward over prompts with different images and videos each; every row equals transformers' logits of
    that prompt alone (images are assigned to prompts in order, as transformers does)."""
    seqs, vis_all, ids, mask, cat = _padded_batch(processor, tokenizer, BATCH, left=left)
    ours = model(ids, attention_mask=mask, **cat)
    T = ids.shape[1]
    for b, (s, vis) in enumerate(zip(seqs, vis_all)):
        rows = slice(T - len(s), T) if left else slice(0, len(s))
        err = record(f"logits: {'left' if left else 'right'}-padded batch, different images per row",
                     max_abs(ours[b, rows], hf_logits(hf, s[None], vis)[0]))
        assert err <= TOL
        assert int(ours[b].abs().sum(-1).ne(0).sum()) == len(s), "padded positions must give 0"


def test_dense_model_with_an_image(tmp_path_factory, processor, tokenizer):
    transformers = pytest.importorskip("transformers")
    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path_factory.mktemp("dense")), "tiny-dense", seed=4)
    hf_dense = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    ids, vis = inputs(processor, tokenizer, "image and video", seed=3)
    err = record("logits: tiny-dense, image and video", max_abs(
        q35.from_pretrained(path, backend="reference")(ids[None], **vis.model_kwargs()),
        hf_logits(hf_dense, ids[None], vis)))
    assert err <= TOL


def _split_first_run(ids, token_id):
    """Moves the first pad token of the first image one step left, past the vision start token: same count, but
    the image's run is broken in two."""
    first = int(torch.nonzero(ids == token_id)[0])
    ids = ids.clone()
    start_token = int(ids[first - 1])
    ids[first - 1], ids[first] = token_id, start_token
    return ids


@pytest.mark.parametrize("mutate,message", [
    (lambda ids, vis, cfg: (ids[ids != cfg.image_token_id][:-1].clone(), vis),
     "image features and image tokens do not match: the prompt has 0 image pad tokens, the images give 8 features"),
    (lambda ids, vis, cfg: (ids, {**vis, "image_grid_thw": None}), "image input needs both"),
    (lambda ids, vis, cfg: (_split_first_run(ids, cfg.image_token_id), vis),
     "a run of 1 image tokens at position .* does not match its grid"),
    (lambda ids, vis, cfg: (ids, {**vis, "image_grid_thw": vis["image_grid_thw"][:, [0, 2, 1]] * 2}),
     r"the prompt has 8 image pad tokens, the images give 64 features"),
    (lambda ids, vis, cfg: (ids, {**vis, "image_grid_thw": vis["image_grid_thw"][0]}),
     r"image_grid_thw must be an integer tensor \[num_images, 3\]"),
])
def test_mismatched_placeholders_are_clear_errors(model, processor, tokenizer, mutate, message):
    ids, vis = inputs(processor, tokenizer, "one image")
    ids, kwargs = mutate(ids, vis.model_kwargs(), model.config)
    _expect_error(model, ids, kwargs, message)


def test_images_in_the_wrong_order_are_a_clear_error(model, processor, tokenizer):
    """Two images of different sizes with their grids (and pixels) swapped: each run must match its own grid."""
    ids, vis = inputs(processor, tokenizer, "two images of different sizes")
    n0 = int(vis.image_grid_thw[0].prod())
    swapped = {**vis.model_kwargs(), "image_grid_thw": vis.image_grid_thw.flip(0),
               "pixel_values": torch.cat([vis.pixel_values[n0:], vis.pixel_values[:n0]])}
    _expect_error(model, ids, swapped, r"a run of 18 image tokens at position \d+ does not match its grid "
                                       r"\(1, 4, 4\) \(4 tokens after the 2x2 merge\)")


def _expect_error(model, ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(ids[None], **kwargs)
    with pytest.raises(ValueError, match=message):
        model.prepare_multimodal(ids, **kwargs)


def test_bf16_error_within_twice_transformers_bf16(vision_dir, model, hf, processor, tokenizer):
    """MODEL_SPEC §5.15: our bf16 model vs HF fp32 is no worse than 2x HF's own bf16 model vs HF fp32."""
    transformers = pytest.importorskip("transformers")
    ids, vis = inputs(processor, tokenizer, "image and video", seed=21)
    ref = hf_logits(hf, ids[None], vis)
    hf16 = transformers.AutoModelForImageTextToText.from_pretrained(vision_dir, dtype=torch.bfloat16).eval()
    hf16.set_experts_implementation("eager")
    ours16 = q35.from_pretrained(vision_dir, dtype=torch.bfloat16, backend="reference")
    err_hf = (hf_logits(hf16, ids[None], vis).float() - ref).norm() / ref.norm()
    err_ours = (ours16(ids[None], **vis.model_kwargs()).float() - ref).norm() / ref.norm()
    record("bf16 image and video: relative error ours / transformers bf16 (bound 2)", err_ours / err_hf)
    assert err_ours <= 2 * err_hf
