"""3-stream M-RoPE positions of multimodal prompts (MODEL_SPEC §3g; transformers' ``get_rope_index``).

Walking a sequence left to right with a running start ``cur``:
- a text run of n tokens (the vision start/end tokens and the timestamp text are text) gets ``cur + arange(n)`` on
  all three streams (temporal, height, width); ``cur += n``;
- a run of image pad tokens is one image, a run of video pad tokens one video temporal group (each video of
  ``grid_t`` groups is split into ``grid_t`` blocks of t = 1); with ``gh = h / merge``, ``gw = w / merge`` its
  tokens (row-major over gh x gw) get T = ``cur + t_index``, H = ``cur + row``, W = ``cur + col``;
  ``cur += max(gh, gw)``.
- ``rope_delta = max(positions) + 1 - len(sequence)``: token i >= len(prompt) (generated text) sits at
  ``i + rope_delta`` on all three streams, so decode steps need only the delta (:func:`sequence_positions`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _runs(kinds: torch.Tensor) -> list[tuple[int, int, int]]:
    """(kind, start, end) of each run of equal values."""
    n = kinds.numel()
    change = torch.nonzero(kinds[1:] != kinds[:-1]).flatten() + 1
    bounds = [0] + change.tolist() + [n]
    return [(int(kinds[s]), s, e) for s, e in zip(bounds[:-1], bounds[1:])]


def _video_groups(video_grid_thw) -> list[tuple[int, int, int]]:
    if video_grid_thw is None:
        return []
    return [(1, int(h), int(w)) for t, h, w in video_grid_thw.tolist() for _ in range(int(t))]


def _images(image_grid_thw) -> list[tuple[int, int, int]]:
    return [] if image_grid_thw is None else [tuple(int(v) for v in g) for g in image_grid_thw.tolist()]


def _sequence(ids: torch.Tensor, grids: dict[int, Iterator], image_token_id: int, video_token_id: int,
              merge: int) -> tuple[torch.Tensor, int]:
    ids = ids.cpu().long()
    kinds = (ids == image_token_id).long() + 2 * (ids == video_token_id).long()
    parts, cur = [], 0
    for kind, start, end in _runs(kinds):
        n = end - start
        if kind == 0:
            parts.append((torch.arange(n) + cur).expand(3, n))
            cur += n
            continue
        what = "image" if kind == 1 else "video temporal group"
        grid = next(grids[kind], None)
        if grid is None:
            raise ValueError(f"qwen35_native: the prompt has more {what} placeholder runs than given grids "
                             f"(image_grid_thw / video_grid_thw)")
        t, gh, gw = grid[0], grid[1] // merge, grid[2] // merge
        if n != t * gh * gw:
            raise ValueError(f"qwen35_native: a run of {n} {what} tokens at position {start} does not match its grid "
                             f"{grid} ({t * gh * gw} tokens after the {merge}x{merge} merge)")
        tt = torch.arange(t).view(t, 1, 1).expand(t, gh, gw)
        hh = torch.arange(gh).view(1, gh, 1).expand(t, gh, gw)
        ww = torch.arange(gw).view(1, 1, gw).expand(t, gh, gw)
        parts.append(torch.stack([tt, hh, ww]).reshape(3, -1) + cur)
        cur += max(gh, gw)
    positions = torch.cat(parts, dim=1)
    return positions, int(positions.max()) + 1 - ids.numel()


def _check_used(grids: dict[int, Iterator]) -> None:
    for kind, what in ((1, "image"), (2, "video temporal group")):
        if next(grids[kind], None) is not None:
            raise ValueError(f"qwen35_native: more {what} grids were given than the prompt has {what} placeholder "
                             f"runs")


def rope_index(input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None = None,
               video_grid_thw: torch.Tensor | None = None, *, image_token_id: int, video_token_id: int,
               spatial_merge_size: int = 2) -> tuple[torch.Tensor, int]:
    """Positions of one sequence with all its images and videos: (int64 ``[3, L]`` on the CPU, rope_delta)."""
    if input_ids.dim() != 1 or input_ids.numel() == 0:
        raise ValueError(f"qwen35_native: rope_index takes one non-empty sequence [L], got shape "
                         f"{list(input_ids.shape)}")
    grids = {1: iter(_images(image_grid_thw)), 2: iter(_video_groups(video_grid_thw))}
    positions, delta = _sequence(input_ids, grids, image_token_id, video_token_id, spatial_merge_size)
    _check_used(grids)
    return positions, delta


def packed_rope_index(input_ids: torch.Tensor, lens: list[int], image_grid_thw: torch.Tensor | None = None,
                      video_grid_thw: torch.Tensor | None = None, *, image_token_id: int, video_token_id: int,
                      spatial_merge_size: int = 2) -> tuple[torch.Tensor, list[int]]:
    """Packed sequences (lengths ``lens``) sharing the grid lists in order (sequence 0's items first, as
    transformers assigns them in a batch): (int64 ``[3, sum(lens)]``, rope_delta per sequence)."""
    grids = {1: iter(_images(image_grid_thw)), 2: iter(_video_groups(video_grid_thw))}
    parts, deltas, start = [], [], 0
    for n in lens:
        pos, delta = _sequence(input_ids[start:start + n], grids, image_token_id, video_token_id, spatial_merge_size)
        parts.append(pos)
        deltas.append(delta)
        start += n
    _check_used(grids)
    return torch.cat(parts, dim=1), deltas


def get_rope_index(input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None = None,
                   video_grid_thw: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                   image_token_id: int, video_token_id: int,
                   spatial_merge_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' signature and outputs for a padded batch ``[B, T]`` (left or right padding given by
    ``attention_mask``; padded slots get 0): (int64 ``[3, B, T]``, rope deltas ``[B, 1]``)."""
    B, T = input_ids.shape
    mask = torch.ones(B, T, dtype=torch.bool) if attention_mask is None else attention_mask.bool().cpu()
    ids = input_ids.cpu()
    packed = torch.cat([ids[b][mask[b]] for b in range(B)])
    flat, deltas = packed_rope_index(packed, mask.sum(1).tolist(), image_grid_thw, video_grid_thw,
                                     image_token_id=image_token_id, video_token_id=video_token_id,
                                     spatial_merge_size=spatial_merge_size)
    out = torch.zeros(3, B, T, dtype=torch.long)
    out[:, mask] = flat
    return out.to(input_ids.device), torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def sequence_positions(context_len: int, query_len: int, rope_delta: int = 0,
                       prompt_positions: torch.Tensor | None = None) -> torch.Tensor:
    """int64 ``[3, query_len]`` positions of tokens ``[context_len, context_len + query_len)`` of one sequence:
    taken from ``prompt_positions [3, L]`` (from :func:`rope_index`) for prompt tokens, ``i + rope_delta`` on all
    three streams for tokens past the prompt (decode steps, or any token of a text-only sequence with delta 0)."""
    idx = torch.arange(context_len, context_len + query_len)
    out = (idx + rope_delta).expand(3, query_len).clone()
    if prompt_positions is not None:
        inside = idx < prompt_positions.shape[1]
        out[:, inside] = prompt_positions[:, idx[inside]].to(out.dtype)
    return out
