"""Multimodal prompts through the cached path (what the engine does): ``prepare_multimodal``, chunked prefill with the
vision features scattered per chunk, decode steps at ``position + rope_delta``; equal to a full recompute, to
transformers' own cached generation, and free of cross-talk in mixed batches."""

import pytest
import torch
from vision_helpers import chat_ids, max_abs, mm_token_type_ids, random_image, random_video, record

from qwen35_native.model import ForwardBatch
from qwen35_native.model.mrope import sequence_positions
from qwen35_native.model.multimodal import concat_vision_embeds

TOL = 2e-5   # fp32: decode kernels sum in another order than the full forward (as in tests/model/test_cache.py)


class Engine:
    """Minimal bookkeeping around forward_cached: per-sequence blocks, slots, context lengths, multimodal prompts."""

    def __init__(self, model, block_size=8, num_blocks=96, num_slots=4):
        self.model, self.bs = model, block_size
        self.cache = model.allocate_cache(num_blocks=num_blocks, block_size=block_size, num_slots=num_slots)
        for t in [*self.cache.conv.values(), *self.cache.ssm.values(), *(x for kv in self.cache.kv.values()
                                                                          for x in kv)]:
            t.fill_(float("nan"))
        self.free = list(range(num_blocks))[::-1]
        self.blocks, self.context, self.mm = {}, {}, {}

    def step(self, items):
        """items: (seq id, slot, new token ids [q]); returns the logits of the last new token of each item."""
        positions, embeds, offset = [], [], 0
        for sid, _, toks in items:
            ctx, q = self.context.get(sid, 0), len(toks)
            table = self.blocks.setdefault(sid, [])
            while len(table) * self.bs < ctx + q:
                table.append(self.free.pop())
            mm = self.mm.get(sid)
            positions.append(mm.positions_for(ctx, q) if mm else sequence_positions(ctx, q))
            if mm is not None:
                embeds.append(mm.embeds_for(ctx, ctx + q, offset=offset))
            offset += q
        width = max(len(self.blocks[sid]) for sid, _, _ in items)
        bt = torch.tensor([self.blocks[sid] + [0] * (width - len(self.blocks[sid])) for sid, _, _ in items])
        batch = ForwardBatch.build([len(t) for *_, t in items], [self.context.get(s, 0) for s, _, _ in items],
                                   [slot for _, slot, _ in items], bt, self.bs, self.model.device,
                                   positions=torch.cat(positions, dim=1), num_slots=self.cache.num_slots)
        out = self.model.forward_cached(torch.cat([t for *_, t in items]).to(self.model.device), batch, self.cache,
                                        vision_embeds=concat_vision_embeds(embeds))
        for sid, _, toks in items:
            self.context[sid] = self.context.get(sid, 0) + len(toks)
        return out


def _prompt(processor, tokenizer, kind, seed):
    if kind == "image":
        vis = processor(images=[random_image(90, 150, seed=seed), random_image(40, 300, seed=seed + 1)])
        content = [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]
    else:
        vis = processor(videos=[random_video(7, 48, 80, seed=seed)], video_fps=3.0)
        content = [{"type": "video"}, {"type": "text", "text": "Describe the video"}]
    return chat_ids(tokenizer, processor, content, vis), vis


@pytest.mark.parametrize("kind", ["image", "video"])
def test_chunked_prefill_and_decode_equal_full_recompute(kind, model, processor, tokenizer):
    """Prefill in chunks whose boundaries fall inside the vision token runs, then greedy decode with rope_delta;
    every step's logits equal the full forward over prompt + generated tokens."""
    ids, vis = _prompt(processor, tokenizer, kind, seed=1)
    mm = model.prepare_multimodal(ids, **vis.model_kwargs())
    assert mm.rope_delta < 0 and mm.features.shape[0] == len(mm.vision_index)
    eng = Engine(model)
    eng.mm[0] = mm
    first_pad = int(mm.vision_index[0])
    cuts = [0, first_pad + 3, first_pad + 11, len(ids) - 5, len(ids)]
    full = model(ids[None], **vis.model_kwargs())[0]
    for a, b in zip(cuts[:-1], cuts[1:]):
        assert max_abs(eng.step([(0, 2, ids[a:b])])[0], full[b - 1]) <= TOL, f"prefill chunk [{a}, {b})"
    tokens, logits, steps = ids.tolist(), full[-1], []
    for _ in range(4):   # greedy decode on the cache; one full forward over the result checks every step
        tokens.append(int(logits.argmax()))
        logits = eng.step([(0, 2, torch.tensor(tokens[-1:]))])[0]
        steps.append(logits)
    full = model(torch.tensor(tokens)[None], **vis.model_kwargs())[0]
    for k, got in enumerate(steps):
        assert record(f"cached {kind} prefill + decode vs our full recompute", max_abs(got, full[len(ids) + k])) \
            <= TOL, f"decode step {k}"


def test_decode_matches_transformers_generation(model, hf, processor, tokenizer):
    """transformers' cached greedy generation (its rope_deltas path) gives the same tokens and logits."""
    ids, vis = _prompt(processor, tokenizer, "image", seed=5)
    hf.model.rope_deltas = None
    with torch.no_grad():
        out = hf.generate(input_ids=ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          mm_token_type_ids=mm_token_type_ids(ids[None], hf.config), max_new_tokens=5,
                          do_sample=False, output_logits=True, return_dict_in_generate=True,
                          pixel_values=vis.pixel_values, image_grid_thw=vis.image_grid_thw)
    eng = Engine(model)
    eng.mm[0] = model.prepare_multimodal(ids, **vis.model_kwargs())
    logits = eng.step([(0, 0, ids)])[0]
    for step, ref in enumerate(out.logits):
        assert record("cached decode after an image vs transformers generate", max_abs(logits, ref[0])) <= 1e-4
        nxt = int(out.sequences[0, len(ids) + step])
        assert nxt == int(logits.argmax())
        logits = eng.step([(0, 0, torch.tensor([nxt]))])[0]


def test_mixed_batch_has_no_cross_talk(model, processor, tokenizer):
    """One step holding a multimodal decode, a text decode, and a multimodal prefill chunk: each equals its own
    full recompute."""
    img_ids, img_vis = _prompt(processor, tokenizer, "image", seed=11)
    vid_ids, vid_vis = _prompt(processor, tokenizer, "video", seed=12)
    text_ids = torch.tensor(tokenizer.encode("plain text prompt with no pictures", add_special_tokens=False))
    eng = Engine(model)
    eng.mm[0] = model.prepare_multimodal(img_ids, **img_vis.model_kwargs())
    eng.mm[2] = model.prepare_multimodal(vid_ids, **vid_vis.model_kwargs())
    eng.step([(0, 3, img_ids), (1, 1, text_ids), (2, 0, vid_ids[:20])])
    extra = [7, 9]
    out = eng.step([(0, 3, torch.tensor(extra[:1])), (1, 1, torch.tensor(extra[1:])), (2, 0, vid_ids[20:])])
    ref0 = model(torch.cat([img_ids, torch.tensor(extra[:1])])[None], **img_vis.model_kwargs())[0, -1]
    ref1 = model(torch.cat([text_ids, torch.tensor(extra[1:])])[None])[0, -1]
    ref2 = model(vid_ids[None], **vid_vis.model_kwargs())[0, -1]
    for got, ref in zip(out, (ref0, ref1, ref2)):
        assert max_abs(got, ref) <= TOL


def test_bad_vision_embeds_are_clear_errors(model):
    eng = Engine(model)
    ids = torch.arange(5)
    batch = ForwardBatch.build([5], [0], [0], torch.tensor([[0]]), 8, "cpu")
    H = model.text_config.hidden_size
    for embeds, message in (((torch.tensor([5]), torch.zeros(1, H)), r"indices must be token indices in \[0, 5\)"),
                            ((torch.tensor([0, 1]), torch.zeros(1, H)), r"must be \(index \[K\], features \[K, H")):
        with pytest.raises(ValueError, match=message):
            model.forward_cached(ids, batch, eng.cache, vision_embeds=embeds)


@pytest.mark.gpu
def test_multimodal_forward_and_cached_path_on_cuda(vision_dir, model, processor, tokenizer):
    import qwen35_native as q35

    ids, vis = _prompt(processor, tokenizer, "image", seed=31)
    gpu = q35.from_pretrained(vision_dir, device="cuda", dtype=torch.float32)
    ref = model(ids[None], **vis.model_kwargs())[0]
    assert max_abs(gpu(ids[None], **vis.model_kwargs())[0].cpu(), ref) <= 1e-4
    eng = Engine(gpu)
    eng.mm[0] = gpu.prepare_multimodal(ids, **vis.model_kwargs())
    batch_logits = eng.step([(0, 0, ids)])
    assert max_abs(batch_logits[0].cpu(), ref[-1]) <= 1e-4
