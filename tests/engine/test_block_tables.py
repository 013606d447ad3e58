"""BlockTableMirror (engine/block_tables.py): the step's block table equals the plan's lists padded with the padding
block, through random admissions, appends, preemptions (same slot, new key), plans without keys, duplicate or
foreign slots and tables longer than the mirror; only what a row gained is copied."""

import random

import torch

from qwen35_native.engine.block_tables import BlockTableMirror

PAD = 999


def reference(tables, pad=PAD):
    width = max([1] + [len(t) for t in tables])
    return torch.tensor([t + [pad] * (width - len(t)) for t in tables], dtype=torch.int32).reshape(len(tables), width)


def test_random_steps_match_the_lists():
    rng = random.Random(0)
    mirror = BlockTableMirror(num_slots=6, max_blocks=8, pad_block=PAD)
    live = {}      # slot -> (key, blocks)
    next_key = 0
    for step in range(400):
        for slot in range(6):
            r = rng.random()
            if slot not in live or r < 0.08:       # a new sequence (or a preempted one readmitted): new key
                live[slot] = ((next_key, 0), [rng.randrange(500) for _ in range(rng.randrange(0, 6))])
                next_key += 1
            elif r < 0.5:                           # the scheduler appends
                live[slot][1].extend(rng.randrange(500) for _ in range(rng.choice([1, 1, 2, 7])))
        slots = rng.sample(range(6), rng.randrange(1, 7))
        keyed = rng.random() < 0.8
        tables = [live[s][1] for s in slots]
        keys = [live[s][0] for s in slots] if keyed else None
        assert torch.equal(mirror.table(slots, tables, keys), reference(tables)), step
    assert mirror.rows.shape[1] > 8          # grew past max_blocks


def test_a_new_sequence_in_a_slot_rewrites_the_row():
    """Same slot, same length, other blocks: a changed key (another sequence, or a preemption) is not trusted."""
    mirror = BlockTableMirror(2, 4, PAD)
    assert mirror.table([0], [[1, 2, 3]], [(7, 0)]).tolist() == [[1, 2, 3]]
    assert mirror.table([0], [[4, 5, 6]], [(7, 1)]).tolist() == [[4, 5, 6]]
    assert mirror.table([0], [[8, 9]], [(8, 0)]).tolist() == [[8, 9]]
    assert mirror.table([0], [[1, 2, 3]], None).tolist() == [[1, 2, 3]]
    kept = [5, 6]
    mirror.table([1], [kept], [(9, 0)])
    kept.append(7)
    assert mirror.table([1, 0], [kept, [1]], [(9, 0), None]).tolist() == [[5, 6, 7], [1, PAD, PAD]]


def test_plans_that_are_not_one_row_per_slot():
    mirror = BlockTableMirror(2, 4, PAD)
    assert mirror.table([1, 1], [[1], [2, 3]], [(0, 0), (1, 0)]).tolist() == [[1, PAD], [2, 3]]
    assert mirror.table([5], [[4]], None).tolist() == [[4]]
    assert mirror.table([0], [[]], [(3, 0)]).tolist() == [[PAD]]


def test_a_shorter_list_under_the_same_key_is_rewritten():
    mirror = BlockTableMirror(1, 4, PAD)
    mirror.table([0], [[1, 2, 3]], [(0, 0)])
    assert mirror.table([0], [[4]], [(0, 0)]).tolist() == [[4]]


def test_the_engine_only_appends_under_a_key(make_llm):
    """The invariant the mirror relies on, through preemptions and prefix hits: while a plan names a sequence by
    the same key, its block list only grows; and every step's table equals its lists."""
    import qwen35_native as q35

    llm = make_llm(tokenizer=False, max_num_seqs=3, num_blocks=9, block_size=8, max_num_batched_tokens=16,
                   enable_prefix_caching=True)
    mirror, seen = llm.engine.runner.tables, {}
    real = mirror.table

    def checked(slots, tables, keys=None):
        for key, blocks in zip(keys or [], tables):
            old = seen.get(key, [])
            assert blocks[:len(old)] == old, f"blocks of {key} changed"
            seen[key] = list(blocks)
        out = real(slots, tables, keys)
        assert torch.equal(out, reference(tables, mirror.pad_block))
        return out

    mirror.table = checked
    prompts = [[(5 * i + j) % 300 for j in range(20 + 3 * i)] for i in range(5)] * 2
    params = q35.SamplingParams(temperature=0, max_tokens=14, ignore_eos=True)
    llm.generate(prompts, params)
    assert llm.engine.scheduler.num_preemptions > 0 and llm.engine.prefix_stats.num_hit_tokens > 0
