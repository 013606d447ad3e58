"""SamplingParams: validation (clear errors naming the field), generation_config resolution, presets, n/seeds."""

import pytest

from qwen35_native.engine import SamplingParams

INVALID = [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", "hot"),
    ("top_p", 0.0), ("top_p", 1.5), ("top_p", -0.2), ("min_p", -0.01), ("min_p", 1.01), ("top_k", -2),
    ("top_k", 2.5), ("top_k", True), ("repetition_penalty", 0.0), ("repetition_penalty", -1.0),
    ("presence_penalty", 2.5), ("presence_penalty", -3.0), ("frequency_penalty", 2.01), ("frequency_penalty", "x"),
    ("n", 0), ("n", 1.0), ("max_tokens", 0),
    ("max_tokens", -5), ("max_tokens", 3.0), ("logprobs", -1), ("seed", 1.5), ("seed", "7"), ("stop", 5),
    ("stop", [""]), ("stop", ["ok", 3]), ("stop_token_ids", [-1]), ("stop_token_ids", "12"),
    ("stop_token_ids", [1.5]), ("ignore_eos", 1),
]


@pytest.mark.parametrize("name,value", INVALID, ids=[f"{n}={v!r}" for n, v in INVALID])
def test_invalid_values_are_errors_naming_the_field(name, value):
    with pytest.raises(ValueError, match=rf"SamplingParams: {name} "):
        SamplingParams(**{name: value})


def test_valid_edge_values():
    SamplingParams(temperature=0, top_p=1.0, min_p=0.0, top_k=-1, repetition_penalty=0.5, presence_penalty=-2,
                   n=3, max_tokens=1, logprobs=0, seed=-7, stop="x", stop_token_ids=[0, 5])
    SamplingParams(min_p=1.0, top_k=0, presence_penalty=2, frequency_penalty=-2)


def test_stop_normalised_to_tuples():
    p = SamplingParams(stop="END", stop_token_ids=[3, 4])
    assert p.stop == ("END",) and p.stop_token_ids == (3, 4)
    assert SamplingParams().stop == () and SamplingParams().stop_token_ids == ()


def test_resolved_defaults_are_vllms():
    r = SamplingParams().resolved()
    assert (r.temperature, r.top_p, r.top_k, r.min_p, r.presence_penalty, r.repetition_penalty) == \
        (1.0, 1.0, 0, 0.0, 0.0, 1.0)
    assert r.frequency_penalty == 0.0
    assert r.max_tokens is None and r.is_resolved and not SamplingParams().is_resolved


def test_resolved_takes_generation_config_for_unset_fields_only():
    gc = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "repetition_penalty": 1.1,
          "max_new_tokens": 77, "eos_token_id": [5, 6]}
    r = SamplingParams(top_p=0.5).resolved(gc)
    assert (r.temperature, r.top_k, r.top_p, r.repetition_penalty, r.max_tokens) == (0.6, 20, 0.5, 1.1, 77)
    assert (r.min_p, r.presence_penalty) == (0.0, 0.0)
    # explicit values, including "off" values, are never overridden
    r = SamplingParams(temperature=0.0, top_k=0, max_tokens=3).resolved(gc)
    assert (r.temperature, r.top_k, r.max_tokens) == (0.0, 0, 3) and r.greedy


def test_resolved_validates_generation_config_values():
    with pytest.raises(ValueError, match="SamplingParams: top_p "):
        SamplingParams().resolved({"top_p": 1.7})


def test_top_k_minus_one_resolves_to_zero():
    assert SamplingParams(top_k=-1).resolved().top_k == 0
    assert SamplingParams().resolved({"top_k": -1}).top_k == 0


def test_greedy_needs_resolution_and_uses_vllm_epsilon():
    with pytest.raises(ValueError, match="resolved"):
        _ = SamplingParams(temperature=0.0).greedy
    assert SamplingParams(temperature=1e-6).resolved().greedy
    assert not SamplingParams(temperature=1e-4).resolved().greedy


def test_presets():
    t = SamplingParams.thinking()
    assert (t.temperature, t.top_p, t.top_k, t.min_p, t.presence_penalty) == (0.6, 0.95, 20, 0.0, 0.0)
    i = SamplingParams.instruct(max_tokens=9)
    assert (i.temperature, i.top_p, i.top_k, i.presence_penalty, i.max_tokens) == (0.7, 0.8, 20, 1.5, 9)
    # presets are complete: a generation config cannot change them
    assert SamplingParams.thinking().resolved({"temperature": 1.3, "top_k": 5}).temperature == 0.6


def test_for_sample_seeds():
    p = SamplingParams(n=3, seed=10, temperature=0.5).resolved()
    kids = [p.for_sample(i) for i in range(3)]
    assert [k.seed for k in kids] == [10, 11, 12] and all(k.n == 1 and k.is_resolved for k in kids)
    assert SamplingParams(n=2).for_sample(1, default_seed=99).seed == 99
    with pytest.raises(ValueError, match="index"):
        p.for_sample(3)
