"""Multimodal prompts through the model's full and cached forwards (MODEL_SPEC §3f scatter, §3g positions).

The engine's multimodal prefill, one sequence at a time (``vis`` from ``qwen35_native.multimodal.VisionProcessor``,
``ids`` the expanded prompt's token ids)::

    mm = model.prepare_multimodal(ids, **vis.model_kwargs())   # runs the vision tower once; MultimodalPrompt
    # each prefill chunk [start, end) of this sequence, placed at token offset `off` of the packed batch:
    positions = mm.positions_for(start, end - start)            # int64 [3, end - start]
    index, feats = mm.embeds_for(start, end, offset=off)        # vision features of the chunk's pad tokens
    # decode steps of this sequence (context_len tokens cached): positions context_len + mm.rope_delta
    pos = sequence_positions(context_len, 1, mm.rope_delta)     # from qwen35_native.model.mrope
    batch = ForwardBatch.build(..., positions=torch.cat([per-sequence positions in batch order], dim=1))
    logits = model.forward_cached(ids_of_batch, batch, cache,
                                  vision_embeds=concat_vision_embeds([(index, feats), ...]))

Text-only sequences use ``sequence_positions(context, q)`` (delta 0), which is also ForwardBatch's default. Keep
``mm`` (or at least ``rope_delta``) for the sequence's lifetime: every later token's positions depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .mrope import packed_rope_index, rope_index, sequence_positions


@dataclass
class MultimodalPrompt:
    input_ids: torch.Tensor        # int64 [L] (CPU) the expanded prompt
    positions: torch.Tensor        # int64 [3, L] (CPU) M-RoPE positions
    rope_delta: int                # position offset of every token after the prompt
    vision_index: torch.Tensor     # int64 [K] (CPU) prompt indices of the image/video pad tokens, in feature order
    features: torch.Tensor         # [K, H] vision features (model device and dtype)

    def positions_for(self, context_len: int, query_len: int) -> torch.Tensor:
        """int64 ``[3, query_len]`` positions of tokens ``[context_len, context_len + query_len)``."""
        return sequence_positions(context_len, query_len, self.rope_delta, self.positions)

    def embeds_for(self, start: int, end: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of the vision tokens among prompt tokens ``[start, end)``: (token indices ``- start + offset``,
        ``[k, H]`` features); k may be 0."""
        sel = (self.vision_index >= start) & (self.vision_index < end)
        index = self.vision_index[sel] - start + offset
        return index.to(self.features.device), self.features[sel.to(self.features.device)]


def concat_vision_embeds(parts) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Joins ``(index, features)`` pairs of several sequences (indices already offset into the packed batch)."""
    parts = [p for p in parts if p is not None and p[0].numel()]
    if not parts:
        return None
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _features(model, pixel_values, grid_thw, what: str) -> torch.Tensor | None:
    if pixel_values is None and grid_thw is None:
        return None
    if pixel_values is None or grid_thw is None:
        raise ValueError(f"qwen35_native: {what} input needs both its pixel values and its grid_thw")
    return model.encode_vision(pixel_values, grid_thw)


def vision_embeds_for(model, input_ids: torch.Tensor, image_grid_thw, video_grid_thw, pixel_values,
                      pixel_values_videos) -> tuple[torch.Tensor, torch.Tensor]:
    """(pad-token indices into ``input_ids`` [K], features [K, H]): image features fill the image pad tokens in
    order, video features the video pad tokens; the counts must match exactly."""
    cfg = model.config
    ids = input_ids.cpu()
    index, feats = [], []
    for what, token_id, values, grid in (("image", cfg.image_token_id, pixel_values, image_grid_thw),
                                         ("video", cfg.video_token_id, pixel_values_videos, video_grid_thw)):
        positions = torch.nonzero(ids == token_id).flatten()
        f = _features(model, values, grid, what)
        given = 0 if f is None else f.shape[0]
        if positions.numel() != given:
            raise ValueError(f"qwen35_native: {what} features and {what} tokens do not match: the prompt has "
                             f"{positions.numel()} {what} pad tokens, the {what}s give {given} features")
        if f is not None:
            index.append(positions)
            feats.append(f)
    if not index:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, model.text_config.hidden_size, dtype=model.dtype,
                                                             device=model.device)
    return torch.cat(index), torch.cat(feats)


def _token_ids(model) -> dict:
    cfg = model.config
    if cfg.image_token_id is None or cfg.video_token_id is None:
        raise ValueError("qwen35_native: config.json has no image_token_id / video_token_id (text-only checkpoint)")
    return {"image_token_id": cfg.image_token_id, "video_token_id": cfg.video_token_id,
            "spatial_merge_size": cfg.vision.spatial_merge_size}


def prepare_multimodal(model, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                       video_grid_thw=None) -> MultimodalPrompt:
    """See :meth:`Qwen35ForCausalLM.prepare_multimodal`."""
    ids = torch.as_tensor(input_ids).cpu().long()
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"qwen35_native: prepare_multimodal takes one prompt [L], got shape {list(ids.shape)}")
    model._check_ids(ids)
    positions, delta = rope_index(ids, image_grid_thw, video_grid_thw, **_token_ids(model))
    index, feats = vision_embeds_for(model, ids, image_grid_thw, video_grid_thw, pixel_values, pixel_values_videos)
    return MultimodalPrompt(ids, positions, delta, index, feats)


def packed_multimodal_inputs(model, packed: torch.Tensor, lens: list[int], pixel_values=None, image_grid_thw=None,
                             pixel_values_videos=None, video_grid_thw=None):
    """Positions ``[3, T]`` and vision embeds of packed sequences sharing the image / video lists in order."""
    positions, _ = packed_rope_index(packed.cpu(), lens, image_grid_thw, video_grid_thw, **_token_ids(model))
    return positions, vision_embeds_for(model, packed, image_grid_thw, video_grid_thw, pixel_values,
                                        pixel_values_videos)
