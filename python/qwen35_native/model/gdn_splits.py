"""GDN state snapshots inside a prefill chunk (prefix caching's save points, engine/prefix_cache.py).

A Gated DeltaNet layer carries a sequence's whole past in one state, and the prefill op leaves only the state at the
end of each sequence's tokens. To keep the state at an earlier position ``p`` of a chunk as well, the layer runs its
prefill op in *rounds*: round 0 takes every sequence's tokens up to its first snapshot point (all of them for the
sequences without one), then the states of the sequences cut there are copied into their snapshot slots, and
round 1 continues those sequences from their slots up to the next point, and so on. Everything else in the step
(projections, attention, MoE) runs once over all tokens: a snapshot costs one more GDN op call per layer, not an
engine step of its own (which streams every weight again). The GDN values are those of a chunk cut at ``p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GdnRound:
    rows: torch.Tensor          # int64 [R]: the round's tokens, as rows of the prefill part
    cu_seqlens: torch.Tensor    # int32 [n + 1] over those rows
    slots: torch.Tensor         # int32 [n] the sequences' GDN slots
    has_initial: torch.Tensor   # bool [n]
    copy_from: torch.Tensor     # int64 [m] slots whose state is a snapshot after this round ...
    copy_to: torch.Tensor       # int64 [m] ... and the snapshot slots they go to
    span: tuple[int, int] | None = None   # (first, end) when the rows are consecutive: a slice, no gather


def batch_rounds(snapshots: list[tuple[int, int, int]], query_lens: list[int], context_lens: list[int],
                 slots: list[int], num_decodes: int, num_slots: int | None, device) -> list[GdnRound]:
    """``plan_rounds`` for a ForwardBatch's snapshots ``(sequence index in the batch, offset, slot)``: the
    sequences must be prefill ones (after the ``num_decodes`` decode sequences), the slots in the cache."""
    if num_slots is not None and any(not 0 <= s < num_slots for *_, s in snapshots):
        raise ValueError(f"GDN snapshot slots must be in [0, num_slots={num_slots}), got {snapshots}")
    if any(i < num_decodes for i, *_ in snapshots):
        raise ValueError(f"GDN snapshots are taken in prefill sequences (from {num_decodes} on), got {snapshots}")
    return plan_rounds(query_lens[num_decodes:], [c > 0 for c in context_lens[num_decodes:]], slots[num_decodes:],
                       [(i - num_decodes, o, s) for i, o, s in snapshots], device)


def plan_rounds(query_lens: list[int], has_initial: list[bool], slots: list[int],
                snapshots: list[tuple[int, int, int]], device) -> list[GdnRound]:
    """Rounds of the prefill sequences (``query_lens`` etc. of the prefill part, in order) for ``snapshots``
    ``(sequence index within the prefill part, offset in its new tokens, snapshot slot)``; each offset in
    ``[1, query_len)``, at most one per (sequence, offset), snapshot slots distinct from each other and the
    sequences' slots."""
    n = len(query_lens)
    cuts: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    seen: set[int] = set()
    for seq, offset, slot in snapshots:
        if not 0 <= seq < n or not 0 < offset < query_lens[seq]:
            raise ValueError(f"a GDN snapshot must name a prefill sequence (< {n}) and an offset inside its new "
                             f"tokens, got sequence {seq}, offset {offset}")
        if slot in seen or slot in slots or slot < 0:
            raise ValueError(f"GDN snapshot slots must be distinct and no sequence's slot, got {slot}")
        seen.add(slot)
        cuts[seq].append((offset, slot))
    for c in cuts:
        c.sort()
        if len({o for o, _ in c}) != len(c):
            raise ValueError(f"two GDN snapshots of one sequence at the same offset: {c}")
    starts = [sum(query_lens[:i]) for i in range(n)]
    rounds = []
    for k in range(1 + max(len(c) for c in cuts)):
        rows, lens, rslots, init, src, dst = [], [], [], [], [], []
        for i in range(n):
            if k > len(cuts[i]):
                continue
            begin = 0 if k == 0 else cuts[i][k - 1][0]
            end = cuts[i][k][0] if k < len(cuts[i]) else query_lens[i]
            rows.append(torch.arange(starts[i] + begin, starts[i] + end))
            lens.append(end - begin)
            rslots.append(slots[i])
            init.append(has_initial[i] if k == 0 else True)
            if k < len(cuts[i]):
                src.append(slots[i])
                dst.append(cuts[i][k][1])
        cu = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        flat = torch.cat(rows)
        first = int(flat[0]) if flat.numel() else 0
        consecutive = flat.numel() > 0 and int(flat[-1]) - first + 1 == flat.numel()   # ascending by construction
        rounds.append(GdnRound(flat.to(device), cu.to(device),
                               torch.tensor(rslots, dtype=torch.int32, device=device),
                               torch.tensor(init, dtype=torch.bool, device=device),
                               torch.tensor(src, dtype=torch.long, device=device),
                               torch.tensor(dst, dtype=torch.long, device=device),
                               (first, first + flat.numel()) if consecutive else None))
    return rounds
