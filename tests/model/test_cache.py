"""The cached forward (paged KV cache, GDN state slots) against the full forward: prefill + decode steps, chunked
prefill, batches mixing sequences of different lengths and decode steps, no cross-talk between sequences."""

import pytest
import torch
from model_helpers import max_abs, random_ids

from qwen35_native.model import ForwardBatch

TOL = 2e-5  # fp32; the decode path (recurrent step, decode attention) sums in another order than the full forward


class MiniEngine:
    """Just enough bookkeeping to drive forward_cached: shuffled KV blocks, arbitrary GDN slots, poisoned caches."""

    def __init__(self, model, num_blocks=64, block_size=8, num_slots=8, seed=0):
        self.model, self.block_size = model, block_size
        self.cache = model.allocate_cache(num_blocks=num_blocks, block_size=block_size, num_slots=num_slots)
        for t in [*self.cache.conv.values(), *self.cache.ssm.values()] + [x for kv in self.cache.kv.values()
                                                                           for x in kv]:
            t.fill_(float("nan"))  # a sequence must never read another's (or stale) cache contents
        self.free = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
        self.blocks, self.context = {}, {}

    def step(self, items, logits="all"):
        """items: list of (seq_id, slot, new token ids). Returns the logits of all new tokens, split per item."""
        max_blocks = 0
        for sid, _, toks in items:
            need = -(-(self.context.get(sid, 0) + len(toks)) // self.block_size)
            table = self.blocks.setdefault(sid, [])
            while len(table) < need:
                table.append(self.free.pop())
            max_blocks = max(max_blocks, len(table))
        tables = torch.zeros(len(items), max_blocks, dtype=torch.int32)
        for i, (sid, _, _) in enumerate(items):
            tables[i, :len(self.blocks[sid])] = torch.tensor(self.blocks[sid])
        batch = ForwardBatch.build([len(t) for _, _, t in items], [self.context.get(s, 0) for s, _, _ in items],
                                   [slot for _, slot, _ in items], tables, self.block_size, "cpu", logits=logits,
                                   num_slots=self.cache.num_slots, num_blocks=self.cache.num_blocks)
        out = self.model.forward_cached(torch.cat([t for _, _, t in items]), batch, self.cache)
        for sid, _, toks in items:
            self.context[sid] = self.context.get(sid, 0) + len(toks)
        return list(out.split([len(t) for _, _, t in items])) if logits == "all" else out


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-dense"])
def test_prefill_then_decode_matches_full_forward(name, tiny_models):
    model = tiny_models[name]
    ids = random_ids(30, seed=1)
    full = model(ids[None])[0]
    eng = MiniEngine(model)
    (logits,) = eng.step([(0, 3, ids[:22])])
    assert max_abs(logits, full[:22]) <= TOL
    for t in range(22, 30):
        batch_logits = eng.step([(0, 3, ids[t:t + 1])], logits="last")
        assert eng.model is model and batch_logits.shape == (1, 512)
        assert max_abs(batch_logits[0], full[t]) <= TOL, f"decode step at position {t}"


def test_chunked_prefill_matches_one_piece(tiny_models):
    model = tiny_models["tiny-moe"]
    ids = random_ids(150, seed=2)
    full = model(ids[None])[0]
    eng = MiniEngine(model)
    start = 0
    for size in (64, 1, 40, 45):  # chunk boundaries inside and across the GDN's 64-token chunks and KV blocks
        (logits,) = eng.step([(0, 0, ids[start:start + size])])
        assert max_abs(logits, full[start:start + size]) <= TOL, f"chunk at {start}"
        start += size


def test_mixed_batch_equals_each_alone(tiny_models):
    """One step holding decode tokens (first, as an engine orders them), a continuing prefill chunk and a new prompt;
    then a step where a decode token comes after a prefill (it takes the prefill path)."""
    model = tiny_models["tiny-moe"]
    seqs = {0: random_ids(40, seed=10), 1: random_ids(25, seed=11), 2: random_ids(70, seed=12),
            3: random_ids(9, seed=13)}
    full = {s: model(ids[None])[0] for s, ids in seqs.items()}
    eng = MiniEngine(model, num_slots=8)
    slot = {0: 6, 1: 1, 2: 4, 3: 0}
    # step 1: prompts of 0 and 1 (different lengths), part of 2
    out = eng.step([(0, slot[0], seqs[0][:39]), (1, slot[1], seqs[1][:20]), (2, slot[2], seqs[2][:33])])
    for (s, n), o in zip([(0, 39), (1, 20), (2, 33)], out):
        assert max_abs(o, full[s][:n]) <= TOL
    # step 2: decodes of 0 and 1 first, then the rest of 2's prompt, then a new prompt 3
    out = eng.step([(0, slot[0], seqs[0][39:40]), (1, slot[1], seqs[1][20:21]), (2, slot[2], seqs[2][33:70]),
                    (3, slot[3], seqs[3][:8])])
    for (s, a, b), o in zip([(0, 39, 40), (1, 20, 21), (2, 33, 70), (3, 0, 8)], out):
        assert max_abs(o, full[s][a:b]) <= TOL, f"sequence {s}"
    # step 3: a decode listed after a multi-token chunk is not a leading decode: it runs as a one-token prefill
    out = eng.step([(1, slot[1], seqs[1][21:25]), (3, slot[3], seqs[3][8:9])])
    assert max_abs(out[0], full[1][21:25]) <= TOL and max_abs(out[1], full[3][8:9]) <= TOL
    # step 4: two decode steps with tokens that were not in the prompts
    out = eng.step([(2, slot[2], torch.tensor([5])), (3, slot[3], torch.tensor([7]))])
    ref2 = model(torch.cat([seqs[2], torch.tensor([5])])[None])[0, -1]
    ref3 = model(torch.cat([seqs[3], torch.tensor([7])])[None])[0, -1]
    assert max_abs(out[0][0], ref2) <= TOL and max_abs(out[1][0], ref3) <= TOL


def test_no_cross_talk_between_slots(tiny_models):
    """Running other sequences leaves a sequence's GDN states and KV blocks untouched, bit for bit."""
    model = tiny_models["tiny-dense"]
    eng = MiniEngine(model, num_slots=4)
    eng.step([(0, 2, random_ids(17, seed=20))])
    conv = {i: t[2].clone() for i, t in eng.cache.conv.items()}
    ssm = {i: t[2].clone() for i, t in eng.cache.ssm.items()}
    blocks = eng.blocks[0][:]
    kv = {i: (k[blocks].clone(), v[blocks].clone()) for i, (k, v) in eng.cache.kv.items()}
    eng.step([(1, 0, random_ids(30, seed=21)), (2, 3, random_ids(5, seed=22))])
    eng.step([(1, 0, random_ids(1, seed=23)), (2, 3, random_ids(1, seed=24))])
    assert all(torch.equal(conv[i], eng.cache.conv[i][2]) for i in conv)
    assert all(torch.equal(ssm[i], eng.cache.ssm[i][2]) for i in ssm)
    assert all(same(kv[i][0], k[blocks]) and same(kv[i][1], v[blocks]) for i, (k, v) in eng.cache.kv.items())


def same(a, b):
    """Bitwise equality where unwritten (NaN-poisoned) cache rows compare equal."""
    return torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


def test_slot_reuse_starts_from_scratch(tiny_models):
    """A new sequence in a slot that held another one does not see the old state (context 0 -> zero state)."""
    model = tiny_models["tiny-moe"]
    eng = MiniEngine(model, num_slots=2)
    eng.step([(0, 1, random_ids(50, seed=30))])
    ids = random_ids(12, seed=31)
    (logits,) = eng.step([(1, 1, ids)])
    assert max_abs(logits, model(ids[None])[0]) <= TOL


def test_forward_batch_validation(tiny_models):
    table = torch.zeros(1, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="slots must be distinct"):
        ForwardBatch.build([3, 2], [0, 0], [1, 1], torch.zeros(2, 2, dtype=torch.int32), 8, "cpu")
    with pytest.raises(ValueError, match="query_lens must be >= 1"):
        ForwardBatch.build([0], [0], [0], table, 8, "cpu")
    with pytest.raises(ValueError, match="block_tables row 0 must hold 3 valid blocks"):
        ForwardBatch.build([20], [0], [0], table, 8, "cpu")
    with pytest.raises(ValueError, match="positions must have shape"):
        ForwardBatch.build([3], [0], [0], table, 8, "cpu", positions=torch.zeros(3, 4, dtype=torch.long))
    batch = ForwardBatch.build([1, 1, 5], [4, 2, 0], [0, 1, 2], torch.zeros(3, 2, dtype=torch.int32), 8, "cpu")
    assert batch.num_decodes == 2 and batch.prefill_cu_seqlens.tolist() == [0, 5]
    with pytest.raises(ValueError, match="input_ids must be"):
        tiny_models["tiny-moe"].forward_cached(torch.zeros(3, dtype=torch.long), batch,
                                               tiny_models["tiny-moe"].allocate_cache(4, 8, 3))
