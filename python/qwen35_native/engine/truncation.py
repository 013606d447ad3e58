"""Truncating a distribution (min-p, top-k, top-p) and drawing from it, batch-composition independent.

Masks are decided on a canonical order of the candidate tokens: logit descending, ties by ascending token id.
With ``w = exp(x - max)`` in float64 (the probability relative to the most likely token, no normaliser):
- min-p keeps ``w >= min_p`` (vLLM: ``p < min_p * p_max`` is dropped);
- top-k keeps logits ``>= `` the k-th largest, so ties at the boundary are kept;
- top-p, on what min-p and top-k kept, keeps a token while the (float64) mass of the tokens before it in canonical
  order is below p: the smallest most-likely set reaching p, ties favouring the lower id; ``top_p = 1`` keeps all.
The draw then walks the kept tokens in token-id order: the first whose float64 cumulative weight exceeds
``u x total``. Every quantity is a per-element function of the row (or a sum over it in a fixed order), so a
row's token does not depend on the other rows or on which path computed it.

Two paths give the same kept set and token: sorting the whole vocabulary, or, when every sampling row uses top-k,
``torch.topk`` of ``max(k) + TIE_MARGIN`` candidates (far cheaper on a 248k vocabulary). On that path more than
``TIE_MARGIN`` logits tied at a row's k-th value are cut to the candidates fetched.
"""

from __future__ import annotations

import torch

TIE_MARGIN = 64  # extra top-k candidates fetched so ties at the k-th logit stay in the kept set


def relative_weights(x: torch.Tensor) -> torch.Tensor:
    """``exp(x - rowmax)`` in float64: each token's probability relative to the row's most likely token."""
    x = x.double()
    return (x - x.amax(dim=-1, keepdim=True)).exp()


def keep_in_canonical_order(sorted_logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                            min_p: torch.Tensor | None) -> torch.Tensor:
    """Kept mask [B, C] over logits sorted canonically (descending, ties by id). ``top_k`` [B] int64 (>= C or V:
    off), ``top_p`` [B] fp32 (1: off), ``min_p`` [B] fp32 (0: off); None skips a stage."""
    w = relative_weights(sorted_logits)
    keep = torch.ones_like(sorted_logits, dtype=torch.bool)
    if min_p is not None:
        keep &= w >= min_p.double()[:, None]
    if top_k is not None:
        last = sorted_logits.shape[-1] - 1
        kth = sorted_logits.gather(1, (top_k - 1).clamp(0, last)[:, None])
        keep &= sorted_logits >= kth
    if top_p is not None:
        kept = w * keep
        p = kept / kept.sum(dim=-1, keepdim=True)
        before = p.cumsum(dim=-1) - p  # mass of the more likely tokens
        keep &= (before < top_p.double()[:, None]) | (top_p >= 1.0)[:, None]
    return keep


def canonical_sort(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, ids) sorted by logit descending, ties by ascending id (a stable sort of the id-ordered row)."""
    return logits.sort(dim=-1, descending=True, stable=True)


def topk_candidates(logits: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` largest logits per row in canonical order (``torch.topk`` orders ties arbitrarily)."""
    values, ids = logits.topk(count, dim=-1, sorted=False)
    ids, order = ids.sort(dim=-1)
    values = values.gather(1, order)
    values, order = values.sort(dim=-1, descending=True, stable=True)
    return values, ids.gather(1, order)


def draw_in_id_order(weights: torch.Tensor, uniform: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF draw over float64 ``weights`` [B, C] (0 = not kept), walked in token-id order: ``ids`` [B, C]
    ascending per row, or None when column c is token c. ``uniform`` [B] float64 in [0, 1 - 2^-52], so the target
    ``u x total`` is below the last cumulative value and the token found always has weight > 0."""
    cdf = weights.cumsum(dim=-1)
    target = (uniform * cdf[:, -1]).unsqueeze(1)
    col = torch.searchsorted(cdf, target, right=True).clamp_(max=weights.shape[-1] - 1)
    return col.squeeze(1) if ids is None else ids.gather(1, col).squeeze(1)


def truncate_and_draw(x: torch.Tensor, uniform: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                      min_p: torch.Tensor | None, max_top_k: int | None) -> torch.Tensor:
    """Samples one token per row of temperature-scaled logits ``x`` [B, V] fp32. ``max_top_k``: the largest top-k
    of the sampling rows when every one of them uses top-k (enables the candidate path), else None."""
    vocab = x.shape[-1]
    if top_k is None and top_p is None:
        w = relative_weights(x)
        if min_p is not None:
            w = w * (w >= min_p.double()[:, None])
        return draw_in_id_order(w, uniform)
    if max_top_k is not None and max_top_k + TIE_MARGIN < vocab // 2:
        values, ids = topk_candidates(x, max_top_k + TIE_MARGIN)
        keep = keep_in_canonical_order(values, top_k, top_p, min_p)
        ids, order = ids.sort(dim=-1)  # back to id order for the draw
        w = relative_weights(values).gather(1, order) * keep.gather(1, order)
        return draw_in_id_order(w, uniform, ids)
    values, order = canonical_sort(x)
    keep = torch.zeros_like(x, dtype=torch.bool).scatter_(1, order, keep_in_canonical_order(values, top_k, top_p,
                                                                                           min_p))
    return draw_in_id_order(relative_weights(x) * keep, uniform)


def truncated_logits(x: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                     min_p: torch.Tensor | None) -> torch.Tensor:
    """``x`` with the tokens min-p/top-k/top-p drop set to -inf (the full-sort path); its softmax is the exact
    distribution ``truncate_and_draw`` samples from."""
    if top_k is None and top_p is None and min_p is None:
        return x
    values, order = canonical_sort(x)
    keep = torch.zeros_like(x, dtype=torch.bool).scatter_(1, order, keep_in_canonical_order(values, top_k, top_p,
                                                                                           min_p))
    return x.masked_fill(~keep, float("-inf"))
