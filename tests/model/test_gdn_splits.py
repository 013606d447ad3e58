"""GDN state snapshots inside a prefill chunk (model/gdn_splits.py): the cached forward with ``gdn_snapshots`` gives
the logits and final states of the plain forward, and each snapshot slot holds what the states are after the
sequence's first ``offset`` new tokens alone (conv and recurrent, every GDN layer); bad snapshots are refused.
Code: python/qwen35_native/model/gdn_splits.py, cache.py (ForwardBatch.build), layers.py (_prefill_in_rounds)."""

import pytest
import torch
from model_helpers import max_abs, random_ids

from qwen35_native.model import ForwardBatch
from qwen35_native.model.gdn_splits import plan_rounds

TOL = 2e-5  # fp32: a cut chunk sums its GDN recurrence in another order


def test_rounds_of_a_batch():
    rounds = plan_rounds([10, 6, 4], [False, True, False], [3, 5, 0], [(0, 7, 9), (0, 2, 8), (1, 3, 7)], "cpu")
    assert len(rounds) == 3
    r0, r1, r2 = rounds
    assert r0.rows.tolist() == [0, 1, 10, 11, 12, 16, 17, 18, 19] and r0.cu_seqlens.tolist() == [0, 2, 5, 9]
    assert r0.slots.tolist() == [3, 5, 0] and r0.has_initial.tolist() == [False, True, False]
    assert r0.copy_from.tolist() == [3, 5] and r0.copy_to.tolist() == [8, 7]
    assert r1.rows.tolist() == [2, 3, 4, 5, 6, 13, 14, 15] and r1.cu_seqlens.tolist() == [0, 5, 8]
    assert r1.has_initial.tolist() == [True, True] and r1.copy_from.tolist() == [3] and r1.copy_to.tolist() == [9]
    assert r2.rows.tolist() == [7, 8, 9] and r2.slots.tolist() == [3] and r2.copy_from.numel() == 0
    assert r0.span is None and r1.span is None and r2.span == (7, 10)   # consecutive rows: a slice, not a gather
    one = plan_rounds([12], [True], [4], [(0, 5, 6)], "cpu")
    assert [r.span for r in one] == [(0, 5), (5, 12)] and [r.rows.tolist() for r in one] == [[0, 1, 2, 3, 4],
                                                                                         list(range(5, 12))]


@pytest.mark.parametrize("snapshots,message", [
    ([(0, 0, 9)], "an offset inside its new tokens"), ([(0, 10, 9)], "an offset inside its new tokens"),
    ([(2, 1, 9)], "an offset inside"), ([(0, 1, 3)], "no sequence's slot"),
    ([(0, 1, 9), (1, 1, 9)], "distinct"), ([(0, 4, 9), (0, 4, 8)], "same offset"),
])
def test_bad_snapshots(snapshots, message):
    with pytest.raises(ValueError, match=message):
        plan_rounds([10, 6], [False, False], [3, 5], snapshots, "cpu")


def _forward(model, items, snapshots=None, num_slots=8):
    """items: (slot, ids) prefilled from scratch in one step; returns (logits, cache)."""
    cache = model.allocate_cache(num_blocks=32, block_size=8, num_slots=num_slots)
    for t in [*cache.conv.values(), *cache.ssm.values()]:
        t.fill_(float("nan"))  # snapshots must be written, never read
    lens = [len(ids) for _, ids in items]
    tables = torch.arange(32, dtype=torch.int32).reshape(4, 8)[:len(items)]
    batch = ForwardBatch.build(lens, [0] * len(items), [s for s, _ in items], tables, 8, "cpu", logits="all",
                               num_slots=num_slots, gdn_snapshots=snapshots)
    return model.forward_cached(torch.cat([ids for _, ids in items]), batch, cache), cache


def test_snapshots_hold_the_states_of_the_prefix(tiny_models):
    model = tiny_models["tiny-moe"]
    a, b = random_ids(37, seed=3), random_ids(20, seed=4)
    plain, plain_cache = _forward(model, [(1, a), (2, b)])
    logits, cache = _forward(model, [(1, a), (2, b)], snapshots=[(0, 16, 5), (0, 32, 6), (1, 8, 7)])
    assert max_abs(logits, plain) <= TOL
    layers = list(cache.ssm)
    assert layers
    for i in layers:
        for slot in (1, 2):
            assert max_abs(cache.ssm[i][slot], plain_cache.ssm[i][slot]) <= TOL
            # (conv states: raw inputs, which differ a little from the second layer on)
            assert max_abs(cache.conv[i][slot], plain_cache.conv[i][slot]) <= TOL
    for ids, n, slot in ((a, 16, 5), (a, 32, 6), (b, 8, 7)):
        _, alone = _forward(model, [(0, ids[:n])])
        for i in layers:
            assert max_abs(cache.ssm[i][slot], alone.ssm[i][0]) <= TOL, (n, slot, i)
            assert max_abs(cache.conv[i][slot], alone.conv[i][0]) <= TOL, (n, slot, i)


def test_batch_checks(tiny_models):
    model = tiny_models["tiny-moe"]
    with pytest.raises(ValueError, match=r"snapshot slots must be in \[0, num_slots=8\)"):
        _forward(model, [(1, random_ids(9, seed=1))], snapshots=[(0, 4, 8)])
    tables = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    both = ForwardBatch.build([2, 9], [5, 0], [0, 1], tables, 8, "cpu", num_slots=4, decode_width=2,
                              spec_scratch=[[2]], gdn_snapshots=[(1, 4, 3)])   # drafts verified beside a snapshot
    assert both.spec_scratch is not None and len(both.gdn_rounds) == 2
    with pytest.raises(ValueError, match=r"taken in prefill sequences \(from 1 on\)"):
        ForwardBatch.build([1, 9], [5, 0], [0, 1], torch.tensor([[0, 1], [2, 3]], dtype=torch.int32), 8, "cpu",
                           num_slots=4, gdn_snapshots=[(0, 1, 3)])
