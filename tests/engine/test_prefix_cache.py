"""Prefix caching (engine/prefix_cache.py): a prompt that starts like an earlier one resumes from its cached KV
blocks and GDN state snapshot and gets exactly the tokens of an engine without the cache; shared blocks are never
written; the block pool and the snapshots evict least recently used first; the hash chain covers each block's next
token (the MTP head's rows read it) and stops before a prompt's first vision token."""

import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine.prefix_cache import BlockPool, FreeList, PrefixCache, prefix_block_hashes

BS = 8  # KV block size of these tests: prompts of a few blocks


def _prompts():
    g = torch.Generator().manual_seed(3)
    base = torch.randint(0, 448, (37,), generator=g).tolist()
    other = torch.randint(0, 448, (21,), generator=g).tolist()
    # base; base extended (a chat's next turn); base again; another prompt; base's first 2 blocks + a new tail
    return [base, base + [9, 8, 7, 6, 5, 4, 3, 2, 1], base, other, base[:16] + other]


def _params():
    return [q35.SamplingParams(temperature=0, max_tokens=9, ignore_eos=True),
            q35.SamplingParams(temperature=0.9, top_p=0.9, seed=5, max_tokens=7, ignore_eos=True, logprobs=3),
            q35.SamplingParams(temperature=0.7, top_k=20, presence_penalty=0.8, repetition_penalty=1.3, seed=6,
                               max_tokens=8, ignore_eos=True),
            q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
            q35.SamplingParams(temperature=1.0, min_p=0.05, seed=7, max_tokens=8, n=2, ignore_eos=True)]


def _llm(model, caching, **kw):
    kw.setdefault("max_num_seqs", 4)
    return q35.LLM(model, tokenizer=False, generation_config={}, block_size=BS, enable_prefix_caching=caching, **kw)


def _outputs(results):
    return [[(c.token_ids, None if c.logprobs is None else [t.token_id for t in c.logprobs]) for c in r.outputs]
            for r in results]


@pytest.fixture(scope="module")
def plain(tiny_model):
    """Each prompt on a fresh engine without prefix caching."""
    return [_outputs(_llm(tiny_model, False).generate([p], s)) for p, s in zip(_prompts(), _params())]


# ---------------------------------------------------------------------------------------------------------------
def test_block_hashes_chain_the_blocks_and_their_next_token():
    ids = list(range(100, 133))                            # 33 tokens: 4 full blocks, each with a next token
    hashes = prefix_block_hashes(ids, BS)
    assert len(hashes) == 4 and len(set(hashes)) == 4
    assert prefix_block_hashes(ids[:32], BS) == hashes[:3]  # block 3 has no next token
    assert prefix_block_hashes(ids, BS, limit=25) == hashes[:3]
    changed = list(ids)
    changed[16] = 0                                         # first token of block 2 = the next token of block 1
    again = prefix_block_hashes(changed, BS)
    assert again[0] == hashes[0] and again[1] != hashes[1] and again[2] != hashes[2]
    changed = list(ids)
    changed[3] = 0                                          # block 0: every later hash changes with it
    assert all(a != b for a, b in zip(prefix_block_hashes(changed, BS), hashes))


def test_block_pool_without_hashes_is_a_free_list():
    pool, free = BlockPool(6), FreeList(6)
    for count, released in ((2, [0]), (1, []), (3, [1, 4]), (2, [])):
        assert pool.take(count) == free.take(count)
        pool.give(released)
        free.give(released)
        assert pool.num_free == free.num_free and pool.free_indices() == free.free_indices()


def test_block_pool_keeps_released_cached_blocks_until_needed():
    pool = BlockPool(4)
    a, b = pool.take(2)
    pool.register(a, b"a")
    pool.give([a, b])
    assert pool.num_free == 4 and pool.lookup(b"a") == a and pool.num_cached == 1
    assert a not in pool.take(3)                            # never-cached blocks go first
    assert pool.lookup(b"a") == a
    pool.acquire(a)                                         # a hit: a is in use, no longer free
    assert pool.num_free == 0 and not pool.is_unused(a)
    pool.give([a])
    assert pool.take(1) == [a] and pool.lookup(b"a") is None   # evicted: its hash is gone
    pool.give([a])
    with pytest.raises(RuntimeError, match="released twice"):
        pool.give([a])
    with pytest.raises(RuntimeError, match="requested"):
        pool.take(2)


def test_snapshots_are_found_only_with_every_block_and_evicted_lru():
    class Seq:
        def __init__(self, ids, blocks=()):
            self.prompt_ids, self.multimodal, self.prefix_hashes, self.blocks = ids, None, None, list(blocks)

    pool = BlockPool(16)
    cache = PrefixCache(pool, BS, num_states=2)
    seqs = [Seq(list(range(i, i + 30)), pool.take(4)) for i in (0, 100, 200)]
    for s in seqs:                                          # save points at 24 (3 blocks with a next token)
        assert cache.save_points(s) == [24]
    states = [cache.reserve_state() for _ in range(2)]
    cache.commit(seqs[0], 24, states[0])
    cache.commit(seqs[1], 24, states[1])
    assert cache.save_points(seqs[0]) == [] and cache.match(Seq(seqs[0].prompt_ids)).num_tokens == 24
    twin = Seq(seqs[0].prompt_ids, seqs[2].blocks)          # saved the same prefix in the same step: its snapshot
    cache.commit(twin, 24, 7)                               # goes back to the free ones (none were left)
    assert cache.reserve_state() == 7 and cache.match(Seq(seqs[0].prompt_ids)).blocks == seqs[0].blocks[:3]
    hit = cache.match(Seq(seqs[0].prompt_ids))
    cache.use(Seq(seqs[0].prompt_ids), hit)                 # seq 0's snapshot is now the newer one
    assert not pool.is_unused(hit.blocks[0])
    pool.give(hit.blocks)                                   # the user of the hit finishes
    assert cache.reserve_state() == states[1]               # seq 1's, the least recently used, is evicted
    assert cache.match(Seq(seqs[1].prompt_ids)) is None
    for s in seqs:
        pool.give(s.blocks)
    pool.take(13)                                           # every never-cached block, then one cached: evicted
    assert cache.match(Seq(seqs[0].prompt_ids)) is None     # a missing block makes the snapshot unusable
    with pytest.raises(ValueError, match="at least one"):
        PrefixCache(pool, BS, num_states=0)


# ---------------------------------------------------------------------------------------------------------------
def test_resumed_prompts_give_the_tokens_of_an_engine_without_the_cache(tiny_model, plain):
    llm = _llm(tiny_model, True)
    got = [_outputs(llm.generate([p], s)) for p, s in zip(_prompts(), _params())]
    assert got == plain
    stats = llm.engine.prefix_stats
    # base saves at 32; the extension resumes at 32 and saves at 40; base again at 32; `other` saves at 16; the tail
    # prompt leaves base's blocks after 8 (its branch point) and saves there and at 32; its second sample (n = 2)
    # waits for the first to get there and resumes at 32
    assert stats.num_hit_tokens == 32 + 32 + 32 and stats.num_queried_tokens == sum(
        len(p) * s.n for p, s in zip(_prompts(), _params()))
    assert 0 < stats.hit_rate < 1
    assert _llm(tiny_model, False).engine.prefix_stats is None


def test_the_chunk_before_the_save_point_and_the_resumed_first_chunk(tiny_model):
    """A 37-token prompt computes all 37 tokens in one step, its GDN state at the save point 32 taken inside the
    step (model/gdn_splits.py: no step of its own); the same prompt later computes only the last 5."""
    llm = _llm(tiny_model, True)
    engine, prompt = llm.engine, _prompts()[0]
    params = q35.SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    chunks = []
    for _ in range(2):
        request = engine.add_request(prompt, params)
        while engine.has_unfinished():
            out = engine.scheduler.schedule()
            chunks.append([(s.seq.num_computed, s.num_new) for s in out.scheduled])
            if out.state_restores or out.state_saves:
                chunks[-1].append(("restore", len(out.state_restores), "save", len(out.state_saves)))
            engine.run_scheduled(out)
        assert engine.output(request).token_ids
    assert chunks == [[(0, 37), ("restore", 0, "save", 1)], [(37, 1)],
                      [(32, 5), ("restore", 1, "save", 0)], [(37, 1)]]


def test_a_shared_system_prompt_is_resumed_from_the_third_prompt_on(tiny_model):
    """Three prompts share 29 tokens (3 full blocks whose next token is shared too). The first caches its blocks
    (and its own state at 40); the second leaves those blocks at 24, its branch point, and saves its state there;
    the third resumes at 24."""
    g = torch.Generator().manual_seed(8)
    system = torch.randint(0, 448, (29,), generator=g).tolist()
    prompts = [system + torch.randint(0, 448, (12,), generator=g).tolist() for _ in range(3)]
    params = q35.SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    want = [_llm(tiny_model, False).generate([p], params)[0].token_ids for p in prompts]
    llm = _llm(tiny_model, True)
    engine, got, chunks = llm.engine, [], []
    for prompt in prompts:
        request = engine.add_request(prompt, params)
        chunks.append([])
        while engine.has_unfinished():
            out = engine.scheduler.schedule()
            chunks[-1] += [(s.seq.num_computed, s.num_new) for s in out.scheduled if s.seq.num_computed < len(prompt)]
            engine.run_scheduled(out)
        got.append(engine.output(request).token_ids)
        assert engine.scheduler.prefix.save_points(request.seqs[0]) == []
    assert got == want
    assert chunks == [[(0, 41)], [(0, 41)], [(24, 17)]]   # the states at 24 and 40 taken inside the steps
    assert engine.prefix_stats.num_hit_tokens == 24


def test_samples_of_one_request_compute_their_prompt_once(tiny_model):
    """n = 4: the first sample prefills the prompt to its save point; the other three wait, while a later request is
    admitted past them, and then resume there. Tokens as without the cache."""
    prompt, short = _prompts()[0], _prompts()[3][:5]
    params = q35.SamplingParams(temperature=0.9, seed=4, n=4, max_tokens=5, ignore_eos=True)
    greedy = q35.SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    plain = _llm(tiny_model, False, max_num_batched_tokens=40)
    want = [_outputs(plain.generate([prompt], params)), _outputs(plain.generate([short], greedy))]
    llm = _llm(tiny_model, True, max_num_seqs=5, max_num_batched_tokens=40)
    engine, fed = llm.engine, 0
    requests = [engine.add_request(prompt, params), engine.add_request(short, greedy)]
    out = engine.scheduler.schedule()
    assert [s.seq.request for s in out.scheduled] == requests   # sample 0 and the later request
    while True:
        fed += sum(s.num_new for s in out.scheduled if s.seq.request is requests[0] and s.seq.num_computed < 37)
        engine.run_scheduled(out)
        if not engine.has_unfinished():
            break
        out = engine.scheduler.schedule()
    assert [_outputs([engine.output(r)]) for r in requests] == want
    assert fed == 37 + 3 * 5 and engine.prefix_stats.num_hit_tokens == 3 * 32


def test_shared_blocks_are_never_written(tiny_model):
    llm = _llm(tiny_model, True)
    base = _prompts()[0]
    params = q35.SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    llm.generate([base], params)
    hit = llm.engine.scheduler.prefix.match(_Probe(base))
    cache = llm.engine.runner.cache
    before = {i: (k[hit.blocks].clone(), v[hit.blocks].clone()) for i, (k, v) in cache.kv.items()}
    llm.generate([base + [1, 2, 3], base, base[:33]], [params] * 3)
    for i, (k, v) in cache.kv.items():
        assert torch.equal(k[hit.blocks], before[i][0]) and torch.equal(v[hit.blocks], before[i][1])


class _Probe:
    """A stand-in sequence for ``PrefixCache.match``."""

    def __init__(self, ids):
        self.prompt_ids, self.multimodal, self.prefix_hashes = ids, None, None


def test_eviction_and_preemption_under_a_small_cache(tiny_model, plain):
    """Few blocks and two snapshots: cached blocks and snapshots are evicted, sequences are preempted and recompute
    (resuming their own prefix when it is still cached); the tokens never change."""
    llm = _llm(tiny_model, True, max_num_seqs=2, num_blocks=14, max_num_batched_tokens=16)
    prompts, params = _prompts(), _params()
    got = _outputs(llm.generate(prompts + prompts[:3], params + params[:3]))
    assert got == [x[0] for x in plain] + [x[0] for x in plain[:3]]
    assert llm.engine.prefix_stats.num_hit_tokens > 0
    scheduler = llm.engine.scheduler
    assert scheduler.blocks.num_free == scheduler.blocks.size and scheduler.blocks.num_cached > 0


def test_admission_counts_the_cached_blocks_it_takes(tiny_model):
    """A hit's blocks that nobody uses are counted free: taking them leaves fewer for the rest, so a sequence whose
    hit and new blocks do not both fit waits (here until the running one finishes) instead of failing."""
    base, other = _prompts()[0], _prompts()[3] + _prompts()[3][:9]              # 37 and 30 tokens
    params = q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    want = [_llm(tiny_model, False).generate([p], params)[0].token_ids for p in (other, base + [4] * 20)]
    llm = _llm(tiny_model, True, max_num_seqs=2, num_blocks=8, max_num_batched_tokens=96)
    llm.generate([base], params)                    # blocks 0-3 cached, nobody uses them
    engine = llm.engine
    requests = [engine.add_request(p, params) for p in (other, base + [4] * 20)]
    # `other`'s first chunk (to its save point 24) takes 3 of the 4 uncached blocks: the one left and the 4 cached
    # ones are 5 free blocks, but B needs its 4 cached blocks and 3 new ones (to its save point 56): B waits
    engine.step()
    assert len(engine.scheduler.running) == 1 and len(engine.scheduler.waiting) == 1
    while engine.has_unfinished():
        engine.step()
    assert [engine.output(r).token_ids for r in requests] == want
    assert engine.prefix_stats.num_hit_tokens == 32


def test_a_next_token_that_differs_means_no_hit(tiny_model):
    """Blocks 0..3 of the two prompts are equal, but token 32 (block 3's next token) is not: the MTP head's row at
    position 31 embeds it, so nothing is shared there; the snapshot at 24 was never saved, so nothing at all."""
    base = _prompts()[0][:35]
    params = q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    llm = _llm(tiny_model, True)
    llm.generate([base], params)
    llm.generate([base[:32] + [base[32] + 1] + base[33:]], params)
    assert llm.engine.prefix_stats.num_hit_tokens == 0
    llm.generate([base[:33] + [base[33] + 1] + base[34:]], params)   # token 33 is in no hashed block's range
    assert llm.engine.prefix_stats.num_hit_tokens == 32


@pytest.mark.parametrize("k", [1, 2])
def test_with_speculative_decoding(tiny_dir, k):
    """The MTP head's KV blocks are shared too (its row at a block's last position read the block's next token):
    the plain engine's tokens with drafts and prefix hits together."""
    model = q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True)
    prompts, params = _prompts()[:3], _params()[:3]
    want = [_outputs(_llm(model, False).generate([p], s)) for p, s in zip(prompts, params)]
    llm = _llm(model, True, speculative_config={"method": "mtp", "num_speculative_tokens": k},
               max_num_batched_tokens=16)
    assert [_outputs(llm.generate([p], s)) for p, s in zip(prompts, params)] == want
    assert llm.engine.prefix_stats.num_hit_tokens == 64 and llm.engine.spec_stats.num_drafts > 0


def test_kernel_backend(tmp_path):
    """The restored states feed the conv and chunked scan kernels (SIMT emulator)."""
    from qwen35_native.tiny import write_tiny_checkpoint

    model = q35.from_pretrained(write_tiny_checkpoint(str(tmp_path / "k"), "tiny-kernel", seed=2), backend="kernel")
    prompt = [(7 * i + 3) % 400 for i in range(21)]
    params = q35.SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    want = _llm(model, False, max_num_seqs=2).generate([prompt + [5, 6]], params)[0].token_ids
    llm = _llm(model, True, max_num_seqs=2)
    llm.generate([prompt], params)
    assert llm.generate([prompt + [5, 6]], params)[0].token_ids == want
    assert llm.engine.prefix_stats.num_hit_tokens == 16


def test_multimodal_prompts_share_the_text_before_their_first_image(tiny_dir):
    import numpy as np

    def chat(seed, text):
        picture = (np.random.RandomState(seed).rand(40, 56, 3) * 255).astype(np.uint8)
        return [{"role": "system", "content": "You are a careful assistant. Describe pictures in one line."},
                {"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": text}]}]

    convs = [chat(0, "What is this?"), chat(1, "And this?"), chat(0, "What is this?")]
    params = q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    kw = dict(backend="reference", max_num_seqs=2, block_size=BS)
    want = [q35.LLM(tiny_dir, **kw).chat([c], params)[0].token_ids for c in convs]
    llm = q35.LLM(tiny_dir, enable_prefix_caching=True, **kw)
    got = [llm.chat([c], params)[0] for c in convs]
    assert [r.token_ids for r in got] == want
    first_image = got[0].prompt_token_ids.index(llm.model.config.image_token_id)
    cached = (first_image - 1) // BS * BS
    assert cached > 0 and llm.engine.prefix_stats.num_hit_tokens == 2 * cached


def test_bad_argument(tiny_model):
    with pytest.raises(TypeError, match="enable_prefix_caching must be True or False"):
        q35.LLM(tiny_model, tokenizer=False, enable_prefix_caching="yes")


def test_snapshot_slots_are_allocated_after_the_sequences(tiny_model):
    llm = _llm(tiny_model, True, max_num_seqs=3)
    runner = llm.engine.runner
    assert llm.cache_plan.prefix_states == 3 and runner.prefix_base == 4
    assert all(c.shape[0] == 4 + 3 for c in runner.cache.conv.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_workloads_match_an_engine_without_the_cache(tiny_model, seed):
    """Prompts built from three shared prefixes plus random tails, repeats and extensions, n of 1 or 2, arriving
    between steps into an engine with few blocks, few snapshots and a small budget (evictions, preemptions, cuts):
    every request gets the tokens of the engine without the cache."""
    import random

    rng = random.Random(seed)
    systems = [[rng.randrange(448) for _ in range(rng.randrange(5, 30))] for _ in range(3)]
    prompts = []
    for _ in range(14):
        r = rng.random()
        if prompts and r < 0.25:
            prompts.append(list(rng.choice(prompts)))                                       # a repeat
        elif prompts and r < 0.45:
            prompts.append(rng.choice(prompts) + [rng.randrange(448) for _ in range(rng.randrange(1, 12))])
        else:
            prompts.append(rng.choice(systems) + [rng.randrange(448) for _ in range(rng.randrange(1, 25))])
    params = [q35.SamplingParams(temperature=0 if rng.random() < 0.5 else 0.8, seed=i, n=rng.choice([1, 1, 2]),
                                 max_tokens=rng.randrange(2, 9), ignore_eos=True) for i in range(len(prompts))]
    want = [_outputs(_llm(tiny_model, False).generate([p], s)) for p, s in zip(prompts, params)]
    llm = _llm(tiny_model, True, max_num_seqs=3, num_blocks=16, max_num_batched_tokens=rng.choice([12, 24, 40]))
    engine, requests = llm.engine, []
    for p, s in zip(prompts, params):
        requests.append(engine.add_request(p, s))
        for _ in range(rng.randrange(0, 4)):
            if engine.has_unfinished():
                engine.step()
    while engine.has_unfinished():
        engine.step()
    assert [_outputs([engine.output(r)]) for r in requests] == want
    assert engine.prefix_stats.num_hit_tokens > 0
