"""The batched sampler against independent float64 references: top-k / top-p / min-p masks exact on crafted logits,
penalties exact, temperature 0 == greedy, seeds reproducible and independent of the batch, sampled frequencies match
the reference distribution (chi-square), raw logprobs. Sampler: python/qwen35_native/engine/sampling.py."""

import math

import pytest
import torch

from qwen35_native.engine import (
    SamplingParams,
    SamplingTensors,
    TokenPresence,
    apply_min_p,
    apply_penalties,
    apply_top_k_top_p,
    penalized_logits,
    sample,
    sampling_logits,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return device


def _params(**kw):
    kw.setdefault("seed", 0)
    return SamplingParams(**kw).resolved()


def _tensors(params, vocab, device="cpu", steps=None):
    return SamplingTensors.build(params, steps or [0] * len(params), vocab, device)


# ---------------------------------------------------------------------------------------------------------------
# float64 references, written from the definitions
def _softmax64(row):
    m = max(v for v in row if v != -math.inf)
    e = [math.exp(v - m) if v != -math.inf else 0.0 for v in row]
    s = sum(e)
    return [x / s for x in e]


def ref_kept(row, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """Token ids that survive min-p, then top-k, then top-p (vLLM's order), by their definitions."""
    x = [v / temperature for v in row]
    keep = set(range(len(x)))
    if min_p > 0:
        p = _softmax64(x)
        keep = {i for i in keep if p[i] >= min_p * max(p)}
    if top_k > 0:
        kth = sorted((x[i] for i in keep), reverse=True)[min(top_k, len(keep)) - 1]
        keep = {i for i in keep if x[i] >= kth}
    if top_p < 1:
        p = _softmax64([x[i] if i in keep else -math.inf for i in range(len(x))])
        mass, kept = 0.0, set()
        for i in sorted(sorted(keep), key=lambda i: -p[i]):  # most likely (then lowest id) first, until mass >= p
            kept.add(i)
            mass += p[i]
            if mass >= top_p:
                break
        keep = kept
    return keep


def ref_distribution(row, **kw):
    keep = ref_kept(row, **kw)
    t = kw.get("temperature", 1.0)
    return _softmax64([v / t if i in keep else -math.inf for i, v in enumerate(row)])


def _finite(t):
    return {i for i, v in enumerate(t.tolist()) if v != -math.inf}


# ---------------------------------------------------------------------------------------------------------------
PROBS = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]  # cumulative 0.40 0.65 0.80 0.90 0.96 1.00


@pytest.mark.parametrize("top_p,expected", [(0.3, {0}), (0.5, {0, 1}), (0.7, {0, 1, 2}), (0.85, {0, 1, 2, 3}),
                                            (0.95, {0, 1, 2, 3, 4}), (1.0, set(range(6)))])
def test_top_p_mask_exact(top_p, expected):
    logits = torch.tensor([PROBS], dtype=torch.float64).log().float()[:, [3, 0, 5, 1, 4, 2]]  # shuffled ids
    perm = [3, 0, 5, 1, 4, 2]
    out = apply_top_k_top_p(logits, None, torch.tensor([top_p]))
    assert _finite(out[0]) == {perm.index(i) for i in expected}
    assert _finite(out[0]) == ref_kept(logits[0].tolist(), top_p=top_p)
    kept = sorted(_finite(out[0]))
    assert torch.equal(out[0, kept], logits[0, kept])  # survivors unchanged


@pytest.mark.parametrize("k", [1, 2, 3, 6, 7])
def test_top_k_mask_exact_with_ties(k):
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, -1.0, 2.0]])
    out = apply_top_k_top_p(logits, torch.tensor([min(k, 6)]), None)
    assert _finite(out[0]) == ref_kept(logits[0].tolist(), top_k=k)
    if k == 1:
        assert _finite(out[0]) == {1, 3}  # ties at the k-th value are kept


def test_top_p_ties_favour_the_lower_id():
    out = apply_top_k_top_p(torch.zeros(1, 4), None, torch.tensor([0.5]))
    assert _finite(out[0]) == {0, 1}


@pytest.mark.parametrize("min_p,expected", [(0.0, set(range(6))), (0.2, {0, 1, 2, 3}), (0.5, {0, 1}),
                                            (0.7, {0}), (1.0, {0})])
def test_min_p_mask_exact(min_p, expected):
    logits = torch.tensor([PROBS]).log()
    out = apply_min_p(logits, torch.tensor([min_p]))
    assert _finite(out[0]) == expected == ref_kept(logits[0].tolist(), min_p=min_p)


def test_combined_masks_per_row_match_reference():
    gen = torch.Generator().manual_seed(0)
    vocab, rows = 50, []
    for b in range(40):
        rows.append(dict(temperature=[0.3, 0.7, 1.0, 1.6][b % 4], top_k=[0, 1, 5, 20, 50][b % 5],
                         top_p=[1.0, 0.9, 0.5, 0.75][b % 4 if b % 3 else 0], min_p=[0.0, 0.05, 0.3][b % 3]))
    logits = torch.randn(len(rows), vocab, generator=gen) * 2
    params = [_params(**r) for r in rows]
    tensors = _tensors(params, vocab)
    out = sampling_logits(penalized_logits(logits, tensors), tensors)
    checked = 0
    for b, r in enumerate(rows):
        x = logits[b].double() / r["temperature"]
        # skip rows whose top-p boundary is within rounding of a cumulative sum (ambiguous in fp32)
        p = sorted(_softmax64([v if i in ref_kept(logits[b].tolist(), temperature=r["temperature"],
                                                  top_k=r["top_k"], min_p=r["min_p"]) else -math.inf
                               for i, v in enumerate(x.tolist())]), reverse=True)
        cums = [sum(p[:j + 1]) for j in range(len(p))]
        if any(abs(c - r["top_p"]) < 1e-5 for c in cums) and r["top_p"] < 1:
            continue
        assert _finite(out[b]) == ref_kept(logits[b].tolist(), **r), (b, r)
        kept = sorted(_finite(out[b]))
        torch.testing.assert_close(out[b, kept], (logits[b, kept] / r["temperature"]), rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked >= 35


def _coarse_logits(rows, vocab, seed):
    """Logits on a 1/8 grid, like bf16 logits: many exact ties, also at the top-k boundary."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, vocab, generator=gen) * 3 * 8).round() / 8


def test_topk_candidate_path_equals_full_sort_path():
    """All sampling rows with top-k -> torch.topk candidates; one row without top-k forces the full sort. Kept sets
    and sampled tokens must agree (ties included), so a request's token never depends on its batch."""
    vocab = 500
    logits = _coarse_logits(24, vocab, 6)
    configs = [dict(top_k=k, top_p=p, min_p=m, temperature=t)
               for k, p, m, t in [(1, 1.0, 0.0, 1.0), (5, 1.0, 0.0, 0.7), (20, 0.95, 0.0, 0.6), (20, 0.8, 0.05, 0.7),
                                  (40, 0.5, 0.0, 1.3), (3, 0.99, 0.2, 1.0)]]
    params = [_params(seed=1000 + b, **configs[b % len(configs)]) for b in range(24)]
    steps = list(range(24))
    fast = _tensors(params, vocab, steps=steps)
    assert fast.max_top_k == 40
    ids_fast = sample(logits, fast).token_ids
    extra = torch.randn(1, vocab)
    full = _tensors(params + [_params(seed=1, temperature=1.0)], vocab, steps=steps + [0])
    assert full.max_top_k is None
    ids_full = sample(torch.cat([logits, extra]), full).token_ids[:24]
    assert ids_fast.tolist() == ids_full.tolist()
    kept = sampling_logits(penalized_logits(logits, fast), fast)
    for b in range(24):
        c = configs[b % len(configs)]
        assert _finite(kept[b]) == ref_kept(logits[b].tolist(), **c), b
        assert ids_fast[b].item() in _finite(kept[b])
    ties = [(logits[b] == logits[b].sort(descending=True).values[configs[b % 6]["top_k"] - 1]).sum() for b in range(24)]
    assert max(ties) > 1  # the grid really produced ties at the k-th logit


def test_candidate_path_distribution():
    """Chi-square of 20000 draws through the top-k candidate path (vocab 300, top-k 6, top-p 0.9)."""
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(300, generator=gen)
    logits[[10, 50, 51, 120, 200, 299]] += torch.tensor([4.0, 3.5, 3.5, 3.0, 2.0, 1.0])
    config = dict(temperature=0.9, top_k=6, top_p=0.9)
    n = 20000
    tensors = _tensors([_params(seed=3, **config)] * n, 300, steps=list(range(n)))
    assert tensors.max_top_k == 6
    ids = sample(logits.expand(n, -1).contiguous(), tensors).token_ids
    counts = torch.bincount(ids, minlength=300).double()
    expected = torch.tensor(ref_distribution(logits.tolist(), **config), dtype=torch.float64) * n
    _assert_chi_square(counts, expected)


def _assert_chi_square(counts, expected):
    assert (counts[expected == 0] == 0).all(), "a masked token was sampled"
    live = expected > 0
    chi2 = ((counts[live] - expected[live]) ** 2 / expected[live]).sum()
    dof = int(live.sum()) - 1
    p_value = torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), chi2 / 2).item()
    assert p_value > 1e-3, (counts[live].tolist(), expected[live].tolist(), p_value)


def test_penalties_exact():
    logits = torch.tensor([[2.0, -1.0, 0.0, 4.0, -3.0, 0.5], [1.0, 1.0, -2.0, 0.0, 3.0, -0.5]])
    prompt = [[0, 1], [5]]
    output = [[3, 4, 3], [2]]
    rep, pres, freq = [1.5, 0.8], [0.5, -1.0], [0.75, -0.25]
    expected = logits.clone().double()
    for b in range(2):
        for v in range(6):
            x = expected[b, v].item()
            if v in prompt[b] or v in output[b]:
                x = x / rep[b] if x > 0 else x * rep[b]
            x -= freq[b] * output[b].count(v)  # per occurrence
            if v in output[b]:
                x -= pres[b]  # once, however often the token appeared
            expected[b, v] = x
    presence = TokenPresence(num_slots=4, vocab_size=6)
    presence.enable_counts()
    slots = torch.tensor([2, 0])
    for slot, p, o in zip(slots.tolist(), prompt, output):
        presence.start(slot, p, o[:1])  # a resumed sequence: its first output token known at start
        for tok in o[1:]:
            presence.append(torch.tensor([slot]), torch.tensor([tok]))
    presence.append(torch.tensor([1, 1]), torch.tensor([5, 5]))  # two tokens of one slot in one call
    assert presence.counts[1].tolist() == [0, 0, 0, 0, 0, 2]
    prompt_mask, output_mask = presence.masks(slots)
    counts = presence.counts_of(slots)
    out = apply_penalties(logits, torch.tensor(pres), torch.tensor(rep), prompt_mask, output_mask,
                          torch.tensor(freq), counts)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    # through the sampler: penalised greedy argmax
    params = [_params(temperature=0.0, repetition_penalty=r, presence_penalty=p, frequency_penalty=f)
              for r, p, f in zip(rep, pres, freq)]
    ids = sample(logits, _tensors(params, 6), prompt_mask, output_mask, counts).token_ids
    assert ids.tolist() == expected.argmax(-1).tolist()
    # a slot started again (another sequence) forgets the old counts
    presence.start(2, [1], [4])
    assert presence.counts[2].tolist() == [0, 0, 0, 0, 1, 0]


def test_penalties_need_masks():
    t = _tensors([_params(repetition_penalty=1.2)], 4)
    with pytest.raises(ValueError, match="prompt_mask"):
        sample(torch.zeros(1, 4), t)
    with pytest.raises(ValueError, match="output_mask must be a bool tensor"):
        sample(torch.zeros(1, 4), t, torch.zeros(1, 4, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool))
    t = _tensors([_params(frequency_penalty=0.5)], 4)
    with pytest.raises(ValueError, match="output_counts must be given"):
        sample(torch.zeros(1, 4), t)
    with pytest.raises(ValueError, match="output_counts must be an int32 tensor"):
        sample(torch.zeros(1, 4), t, None, None, torch.zeros(1, 4, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_temperature_zero_is_greedy_with_lowest_id_on_ties(device, dtype):
    device = _device(device)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 300, generator=gen).to(dtype)
    logits[0, [7, 100, 250]] = 50.0  # a three-way tie for the maximum
    params = [_params(temperature=0.0, top_k=3, top_p=0.1, min_p=0.9, seed=None)] * 9
    ids = sample(logits.to(device), _tensors(params, 300, device)).token_ids.cpu()
    assert ids.tolist() == logits.float().argmax(-1).tolist() and ids[0] == 7


def test_mixed_greedy_and_sampling_rows():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 40, generator=gen)
    params = [_params(temperature=0.0) if b % 2 else _params(temperature=1.0, seed=b) for b in range(6)]
    ids = sample(logits, _tensors(params, 40)).token_ids
    alone = [sample(logits[b:b + 1], _tensors([params[b]], 40)).token_ids.item() for b in range(6)]
    assert ids.tolist() == alone
    assert [ids[b].item() for b in (1, 3, 5)] == logits[[1, 3, 5]].argmax(-1).tolist()


def test_fixed_seed_reproducible_and_batch_independent():
    gen = torch.Generator().manual_seed(3)
    vocab = 64
    target = torch.randn(vocab, generator=gen)
    p = _params(temperature=1.0, top_k=30, top_p=0.95, seed=1234)
    steps = list(range(30))
    alone = [sample(target[None], _tensors([p], vocab, steps=[s])).token_ids.item() for s in steps]
    again = [sample(target[None], _tensors([p], vocab, steps=[s])).token_ids.item() for s in steps]
    assert alone == again and len(set(alone)) > 3  # reproducible, and the step changes the draw
    for s in steps[:8]:
        others = torch.randn(5, vocab, generator=gen)
        batch = torch.cat([others[:2], target[None], others[2:]])
        ps = [_params(temperature=0.5 + 0.3 * i, top_p=0.8, seed=100 + i) for i in range(5)]
        ps.insert(2, p)
        out = sample(batch, _tensors(ps, vocab, steps=[7, 0, s, 3, 9, 1])).token_ids
        assert out[2].item() == alone[s]
    other_seed = [sample(target[None], _tensors([_params(temperature=1.0, top_k=30, top_p=0.95, seed=99)], vocab,
                                                 steps=[s])).token_ids.item() for s in steps]
    assert other_seed != alone


@pytest.mark.parametrize("config", [dict(temperature=1.0), dict(temperature=0.7, top_k=4),
                                    dict(temperature=1.3, top_p=0.8), dict(temperature=1.0, min_p=0.1, top_k=6)])
def test_sampled_frequencies_match_reference_distribution(config):
    """Chi-square goodness of fit of 20000 draws (one seed, 20000 steps, one batched call) vs the float64
    reference."""
    logits = torch.tensor([1.2, 0.3, -0.4, 2.0, 0.0, -1.5, 0.9, -0.2])
    n = 20000
    params = [_params(seed=11, **config)] * n
    ids = sample(logits.expand(n, -1).contiguous(), _tensors(params, 8, steps=list(range(n)))).token_ids
    counts = torch.bincount(ids, minlength=8).double()
    expected = torch.tensor(ref_distribution(logits.tolist(), **config), dtype=torch.float64) * n
    _assert_chi_square(counts, expected)


def test_logprobs_are_raw_and_ranked():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 20, generator=gen)
    params = [_params(temperature=0.8, logprobs=3, seed=5, presence_penalty=1.0), _params(temperature=0.0),
              _params(temperature=1.0, logprobs=0, seed=6)]
    presence = TokenPresence(3, 20)
    out = sample(logits, _tensors(params, 20), *presence.masks(torch.arange(3)))
    raw = logits.double().log_softmax(-1)
    ids = out.token_ids
    torch.testing.assert_close(out.logprobs.double(), raw.gather(1, ids[:, None])[:, 0], rtol=1e-5, atol=1e-5)
    assert out.ranks.tolist() == [int((raw[b] > raw[b, ids[b]]).sum()) + 1 for b in range(3)]
    top = raw.topk(3, dim=-1)
    assert out.top_ids.tolist() == top.indices.tolist()
    host = out.to_host()
    assert host.token_ids == ids.tolist() and host.ranks == out.ranks.tolist()
    assert host.top_ids == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(host.top_logprobs, dtype=torch.float64), top.values, rtol=1e-5, atol=1e-5)
    assert sample(logits, _tensors([_params()] * 3, 20)).logprobs is None


def test_sampler_does_not_modify_logits_and_checks_shapes():
    logits = torch.randn(2, 10)
    before = logits.clone()
    t = _tensors([_params(top_k=2, top_p=0.5, min_p=0.1)] * 2, 10)
    sample(logits, t)
    assert torch.equal(logits, before)
    with pytest.raises(ValueError, match=r"logits must have shape \[B, V\]=\[2, 10\]"):
        sample(torch.randn(3, 10), t)
    with pytest.raises(ValueError, match="params and steps"):
        SamplingTensors.build([_params()], [0, 1], 10)
    with pytest.raises(ValueError, match="resolved"):
        SamplingTensors.build([SamplingParams(seed=1)], [0], 10)
    with pytest.raises(ValueError, match="no seed"):
        SamplingTensors.build([SamplingParams(temperature=1.0).resolved()], [0], 10)


@pytest.mark.gpu
def test_cuda_matches_cpu_and_never_syncs():
    _device("cuda")
    gen = torch.Generator().manual_seed(5)
    vocab, b = 4096, 32
    logits = torch.randn(b, vocab, generator=gen) * 3
    params = [_params(temperature=0.0 if i % 4 == 0 else 0.9, top_k=[0, 40][i % 2], top_p=[1.0, 0.9][i % 3 > 0],
                      min_p=0.02 * (i % 2), presence_penalty=0.5, repetition_penalty=1.1, logprobs=2, seed=i)
              for i in range(b)]
    steps = list(range(b))
    presence_cpu = TokenPresence(b, vocab)
    presence_gpu = TokenPresence(b, vocab, "cuda")
    for i in range(b):
        prompt = torch.randint(0, vocab, (50,), generator=gen).tolist()
        presence_cpu.start(i, prompt)
        presence_gpu.start(i, prompt)
    slots_cpu, slots_gpu = torch.arange(b), torch.arange(b, device="cuda")
    ref = sample(logits, _tensors(params, vocab, steps=steps), *presence_cpu.masks(slots_cpu)).to_host()
    logits_gpu = logits.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tensors = _tensors(params, vocab, "cuda", steps=steps)
        out = sample(logits_gpu, tensors, *presence_gpu.masks(slots_gpu))
        presence_gpu.append(slots_gpu, out.token_ids)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    host = out.to_host()
    assert host.token_ids == ref.token_ids
    assert host.logprobs == pytest.approx(ref.logprobs, abs=1e-4)
