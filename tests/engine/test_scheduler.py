"""Continuous batching: requests arriving mid-run, chunked prefill under a small token budget, preemption when the
KV cache runs out, and the scheduler's bookkeeping (decode steps first, budget, slots and blocks freed at once).
Every request must get the tokens it gets when run alone. Code: python/qwen35_native/engine/scheduler.py."""

import pytest

import qwen35_native as q35
from qwen35_native.engine.scheduler import FreeList, Scheduler
from qwen35_native.engine.sequence import Sequence
from qwen35_native.engine.stopping import StopChecker

PROMPTS = [list(range(3, 3 + n)) for n in (37, 5, 60, 12, 1, 23)]


def params(i, max_tokens=6):
    """Greedy and sampled requests of different lengths, some with penalties."""
    if i % 2:
        return q35.SamplingParams(temperature=0, max_tokens=max_tokens + i, ignore_eos=True)
    return q35.SamplingParams(temperature=0.8, top_k=30, seed=50 + i, max_tokens=max_tokens + i, ignore_eos=True,
                              repetition_penalty=1.3 if i % 4 == 0 else 1.0)


@pytest.fixture
def alone(make_llm):
    """Tokens of each request run by itself on a fresh engine."""
    return [make_llm().generate([p], params(i))[0].token_ids for i, p in enumerate(PROMPTS)]


def drain(llm, requests):
    while llm.engine.has_unfinished():
        llm.engine.step()
    return [llm.engine.output(r).token_ids for r in requests]


def test_requests_joining_mid_run_match_running_alone(make_llm, alone):
    llm = make_llm(max_num_seqs=3)
    engine = llm.engine
    requests = [engine.add_request(PROMPTS[i], params(i)) for i in range(2)]
    arrivals = {2: [2, 3], 5: [4], 7: [5]}   # step index -> requests added before it
    step = 0
    while engine.has_unfinished() or len(requests) < len(PROMPTS):
        for i in arrivals.get(step, []):
            requests.append(engine.add_request(PROMPTS[i], params(i)))
        assert len(engine.scheduler.running) <= 3
        engine.step()
        step += 1
    assert [engine.output(r).token_ids for r in requests] == alone


def test_chunked_prefill_matches_unchunked(make_llm, alone):
    llm = make_llm(max_num_seqs=4, max_num_batched_tokens=8)
    requests = [llm.engine.add_request(p, params(i)) for i, p in enumerate(PROMPTS)]
    steps = []
    while llm.engine.has_unfinished():
        out = llm.engine.scheduler.schedule()
        assert out.num_tokens <= 8
        decodes = [s.is_decode for s in out.scheduled]
        assert decodes == sorted(decodes, reverse=True)  # decode steps first
        steps.append([(s.num_new, s.samples) for s in out.scheduled])
        # run the step the engine way with the schedule we inspected
        llm.engine.run_scheduled(out)
    assert (8, False) in [s for step in steps for s in step]  # a prompt was chunked
    assert [llm.engine.output(r).token_ids for r in requests] == alone


def test_preemption_when_the_cache_runs_out(make_llm, alone):
    # 14 blocks of 8 tokens: the longest request alone needs 9 blocks, all six together far more.
    llm = make_llm(max_num_seqs=6, block_size=8, num_blocks=14, max_model_len=100)
    requests = [llm.engine.add_request(p, params(i)) for i, p in enumerate(PROMPTS)]
    assert drain(llm, requests) == alone
    assert sum(s.num_preemptions for r in requests for s in r.seqs) > 0
    scheduler = llm.engine.scheduler
    assert scheduler.blocks.num_free == 14 and scheduler.slots.num_free == 6


def test_finished_sequences_free_their_slot_and_blocks_at_once(make_llm):
    llm = make_llm(max_num_seqs=2, block_size=4, num_blocks=64)
    short = llm.engine.add_request([1, 2, 3], q35.SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    long = llm.engine.add_request([4, 5, 6, 7, 8], q35.SamplingParams(temperature=0, max_tokens=9, ignore_eos=True))
    waiting = llm.engine.add_request([9], q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    scheduler = llm.engine.scheduler
    llm.engine.step()                      # prefill of the first two; the third waits for a slot
    assert waiting.seqs[0].slot is None and scheduler.slots.num_free == 0
    llm.engine.step()                      # short finishes: its slot and blocks return immediately
    assert short.finished and short.seqs[0].blocks == [] and scheduler.slots.num_free == 1
    assert scheduler.blocks.num_free == 64 - len(long.seqs[0].blocks)
    llm.engine.step()                      # the waiting request is admitted next step
    assert waiting.seqs[0].slot is not None
    drain(llm, [long, waiting])
    assert scheduler.blocks.num_free == 64


def make_seq(seq_id, prompt_len, max_tokens=4):
    p = q35.SamplingParams(temperature=0, max_tokens=max_tokens).resolved()
    return Sequence(seq_id, seq_id, 0, list(range(prompt_len)), p, StopChecker(p))


def test_scheduler_budget_admission_and_order():
    sched = Scheduler(num_blocks=10, block_size=4, max_num_seqs=3, max_num_batched_tokens=6)
    a, b, c, d = make_seq(0, 5), make_seq(1, 3), make_seq(2, 2), make_seq(3, 1)
    for s in (a, b, c, d):
        sched.add(s)
    out = sched.schedule()
    assert [(s.seq.seq_id, s.num_new) for s in out.scheduled] == [(0, 5), (1, 1)]  # budget 6: b gets a chunk of 1
    assert [s.seq_id for s in out.admitted] == [0, 1] and len(a.blocks) == 2 and len(b.blocks) == 1
    for s in out.scheduled:
        s.seq.num_computed += s.num_new
    a.checker.append(7)  # a sampled its first token: decode phase
    out = sched.schedule()
    # decode of a first (1 token), then b's next chunk (2 tokens), then c admitted (2) and d has no slot left
    assert [(s.seq.seq_id, s.num_new, s.is_decode) for s in out.scheduled] == [(0, 1, True), (1, 2, False),
                                                                               (2, 2, False)]
    assert d.slot is None and list(sched.waiting) == [d]
    sched.finish(c)
    assert c.slot is None and sched.slots.num_free == 1 and sched.blocks.num_free == 10 - 2 - 1


def test_scheduler_rejects_budget_below_max_num_seqs():
    with pytest.raises(ValueError, match="max_num_batched_tokens must be >= max_num_seqs"):
        Scheduler(num_blocks=4, block_size=4, max_num_seqs=8, max_num_batched_tokens=4)


def test_free_list_round_trip():
    fl = FreeList(5)
    taken = fl.take(3)
    assert taken == [0, 1, 2] and fl.num_free == 2
    fl.give(taken)
    assert fl.num_free == 5 and sorted(fl.take(5)) == list(range(5))
    with pytest.raises(RuntimeError, match="internal error"):
        fl.take(1)
