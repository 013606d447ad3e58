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


def check_vision_counts(model, input_ids: torch.Tensor, image_grid_thw, video_grid_thw) -> None:
    """Pad tokens of each modality must number exactly the merged tokens of its grids (checked before the tower)."""
    cfg, m2 = model.config, model.config.vision.spatial_merge_size ** 2
    for what, token_id, grid in (("image", cfg.image_token_id, image_grid_thw),
                                 ("video", cfg.video_token_id, video_grid_thw)):
        if grid is not None and (not isinstance(grid, torch.Tensor) or grid.dim() != 2 or grid.shape[1] != 3 or
                                 grid.dtype.is_floating_point):
            raise ValueError(f"qwen35_native: {what}_grid_thw must be an integer tensor [num_{what}s, 3], got "
                             f"{getattr(grid, 'shape', type(grid).__name__)}")
        found = int((input_ids == token_id).sum())
        given = 0 if grid is None else sum(int(t) * int(h) * int(w) // m2 for t, h, w in grid.tolist())
        if found != given:
            raise ValueError(f"qwen35_native: {what} features and {what} tokens do not match: the prompt has {found} "
                             f"{what} pad tokens, the {what}s give {given} features")


def vision_embeds_for(model, input_ids: torch.Tensor, image_grid_thw, video_grid_thw, pixel_values,
                      pixel_values_videos) -> tuple[torch.Tensor, torch.Tensor]:
    """(pad-token indices into ``input_ids`` [K], features [K, H]): image features fill the image pad tokens in
    order, video features the video pad tokens (counts checked by :func:`check_vision_counts`)."""
    cfg = model.config
    ids = input_ids.cpu()
    index, feats = [], []
    for token_id, values, grid in ((cfg.image_token_id, pixel_values, image_grid_thw),
                                   (cfg.video_token_id, pixel_values_videos, video_grid_thw)):
        if grid is not None:
            index.append(torch.nonzero(ids == token_id).flatten())
            feats.append(model.encode_vision(values, grid))
    if not index:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, model.text_config.hidden_size, dtype=model.dtype,
                                                             device=model.device)
    return torch.cat(index), torch.cat(feats)


def _check_inputs(model, ids: torch.Tensor, pixel_values, image_grid_thw, pixel_values_videos,
                  video_grid_thw) -> dict:
    """Validates a multimodal call before any work; returns the token-id arguments of the rope index."""
    cfg = model.config
    if cfg.vision is None or cfg.image_token_id is None or cfg.video_token_id is None:
        raise ValueError("qwen35_native: config.json has no vision_config / image_token_id / video_token_id "
                         "(text-only checkpoint): this model cannot take images or videos")
    for what, values, grid in (("image", pixel_values, image_grid_thw), ("video", pixel_values_videos,
                                                                          video_grid_thw)):
        if (values is None) != (grid is None):
            raise ValueError(f"qwen35_native: {what} input needs both its pixel values and its grid_thw")
    check_vision_counts(model, ids, image_grid_thw, video_grid_thw)
    return {"image_token_id": cfg.image_token_id, "video_token_id": cfg.video_token_id,
            "spatial_merge_size": cfg.vision.spatial_merge_size}


def prepare_multimodal(model, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                       video_grid_thw=None) -> MultimodalPrompt:
    """See :meth:`Qwen35ForCausalLM.prepare_multimodal`."""
    ids = torch.as_tensor(input_ids).cpu().long()
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"qwen35_native: prepare_multimodal takes one prompt [L], got shape {list(ids.shape)}")
    model._check_ids(ids)
    token_ids = _check_inputs(model, ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
    positions, delta = rope_index(ids, image_grid_thw, video_grid_thw, **token_ids)
    index, feats = vision_embeds_for(model, ids, image_grid_thw, video_grid_thw, pixel_values, pixel_values_videos)
    return MultimodalPrompt(ids, positions, delta, index, feats)


def packed_multimodal_inputs(model, packed: torch.Tensor, lens: list[int], pixel_values=None, image_grid_thw=None,
                             pixel_values_videos=None, video_grid_thw=None):
    """Positions ``[3, T]`` and vision embeds of packed sequences sharing the image / video lists in order."""
    ids = packed.cpu()
    token_ids = _check_inputs(model, ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
    positions, _ = packed_rope_index(ids, lens, image_grid_thw, video_grid_thw, **token_ids)
    return positions, vision_embeds_for(model, ids, image_grid_thw, video_grid_thw, pixel_values,
                                        pixel_values_videos)
