"""Speculative decoding with the MTP head (engine/spec_decode.py): a speculative engine emits exactly the tokens of
the plain engine, whatever the sampling parameters, with drafts that are accepted, rejected, or cut short by a
stop; its MTP drafts are those of the head run over the whole sequence at once (its KV cache survives roll-backs);
bad configurations are refused with a clear error."""

import json
import os

import pytest
import torch

import qwen35_native as q35
from qwen35_native.engine.core import LLMEngine
from qwen35_native.engine.spec_decode import SpeculativeConfig, accepted_count
from qwen35_native.model import ForwardBatch

SPEC = {"method": "mtp", "num_speculative_tokens": 1}


def spec(k):
    return {"method": "mtp", "num_speculative_tokens": k}


@pytest.fixture(scope="module")
def mtp_model(tiny_dir):
    return q35.from_pretrained(tiny_dir, backend="reference", load_mtp=True)


@pytest.fixture(scope="module")
def generation_config(tiny_dir):
    with open(os.path.join(tiny_dir, "generation_config.json")) as f:
        return json.load(f)


def _llm(model, generation_config, k, **kw):
    """An engine on ``model``; ``k`` drafts per step (0: the plain engine)."""
    kw.setdefault("max_num_seqs", 4)
    return q35.LLM(model, tokenizer=False, generation_config=generation_config, seed=0,
                   speculative_config=spec(k) if k else None, **kw)


def _prompts():
    g = torch.Generator().manual_seed(11)
    return [torch.randint(0, 448, (n,), generator=g).tolist() for n in (5, 23, 9, 40, 7)]


def _params():
    return [q35.SamplingParams(temperature=0, max_tokens=14, ignore_eos=True),
            q35.SamplingParams(temperature=0.9, top_p=0.9, seed=5, max_tokens=17, ignore_eos=True, logprobs=3),
            q35.SamplingParams(temperature=0.7, top_k=20, presence_penalty=0.8, repetition_penalty=1.3, seed=6,
                               max_tokens=12, ignore_eos=True, frequency_penalty=-0.5),
            q35.SamplingParams(temperature=1.0, min_p=0.05, seed=7, max_tokens=15, stop_token_ids=[3, 17, 101]),
            q35.SamplingParams(temperature=0, presence_penalty=2.0, repetition_penalty=5.0, max_tokens=24,
                               ignore_eos=True, frequency_penalty=1.5)]


def _same(a, b):
    for x, y in zip(a, b):
        for cx, cy in zip(x.outputs, y.outputs):
            assert cx.token_ids == cy.token_ids
            assert cx.finish_reason == cy.finish_reason
            if cx.logprobs is not None:
                assert [t.token_id for t in cx.logprobs] == [t.token_id for t in cy.logprobs]
                torch.testing.assert_close(torch.tensor([t.logprob for t in cx.logprobs]),
                                           torch.tensor([t.logprob for t in cy.logprobs]), rtol=0, atol=1e-5)


@pytest.fixture
def oracle(monkeypatch):
    """Replaces the MTP drafts by the plain engine's next tokens (``answers``: prompt tuple -> output ids), right
    where ``right(position)`` says so and off by one elsewhere, to drive acceptance and rejection."""
    real = LLMEngine._usable_draft
    state = {"answers": {}, "right": lambda i: True, "real": real}

    def usable(self, seq, draft):
        out = state["answers"][tuple(seq.prompt_ids)]
        i = len(seq.output_ids)  # draft j stands for output position i + j (the pending token is i - 1)
        guess = [out[i + j] if i + j < len(out) else 0 for j in range(len(draft))]
        return real(self, seq, [g if state["right"](i + j) else (g + 1) % 448 for j, g in enumerate(guess)])

    monkeypatch.setattr(LLMEngine, "_usable_draft", usable)
    return state


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mtp_drafts_give_the_plain_engines_tokens(mtp_model, generation_config, k):
    prompts, params = _prompts(), _params()
    plain = _llm(mtp_model, generation_config, 0).generate(prompts, params)
    llm = _llm(mtp_model, generation_config, k, max_num_batched_tokens=16)   # prompts prefill in chunks
    _same(llm.generate(prompts, params), plain)
    stats = llm.engine.spec_stats
    assert stats.num_verify_steps > 0 and stats.num_drafts > 0


@pytest.mark.parametrize("pattern", ["all", "every-third-wrong", "none"])
@pytest.mark.parametrize("k", [1, 3])
def test_accepted_and_rejected_drafts_keep_the_tokens(mtp_model, generation_config, oracle, pattern, k):
    prompts, params = _prompts(), _params()
    plain = _llm(mtp_model, generation_config, 0).generate(prompts, params)
    oracle["answers"] = {tuple(p): r.outputs[0].token_ids for p, r in zip(prompts, plain)}
    oracle["right"] = {"all": lambda i: True, "every-third-wrong": lambda i: i % 3 != 0,
                       "none": lambda i: False}[pattern]
    llm = _llm(mtp_model, generation_config, k)
    _same(llm.generate(prompts, params), plain)
    stats = llm.engine.spec_stats
    if pattern == "none":
        assert stats.num_accepted == 0 and stats.num_drafts > 0
    else:  # right guesses are accepted (drafts past a sequence's last token cannot be)
        assert 0 < stats.num_accepted <= stats.num_drafts
        assert (stats.num_accepted >= 0.9 * stats.num_drafts) == (pattern == "all")
    if pattern == "all":  # every draft right: about k + 1 tokens per step
        total = sum(len(r.outputs[0].token_ids) for r in plain)
        assert stats.num_verify_steps <= total * (1.2 / (k + 1))


@pytest.mark.parametrize("k,answer", [(1, list(range(1, 20))), (2, [7] * 19)])
def test_a_verified_position_counts_the_drafts_before_it_as_output(mtp_model, generation_config, oracle,
                                                                   monkeypatch, k, answer):
    """The penalties of the position after a draft see the draft as generated (its token is what the plain engine
    generated there when the draft is accepted); the sampler's output mask and counts say so, a draft written twice
    counting twice."""
    from qwen35_native.engine import model_runner, spec_decode

    plans, checked = [], []
    real_build, real_sample = model_runner.ModelRunner.build_batch, spec_decode.sample

    def build(self, plan, *args, **kwargs):
        plans.append(plan)
        return real_build(self, plan, *args, **kwargs)

    def sample(logits, tensors, prompt_mask=None, output_mask=None, output_counts=None):
        plan = plans[-1]
        for i, draft in enumerate(plan.drafts):  # verifying sequences lead: sampler rows (k + 1) i + j
            base = (k + 1) * i
            for j in range(1, k + 1):
                for d in set(draft[:j]):
                    assert output_mask[base + j, d], "a draft is not in a later position's output mask"
                    assert output_counts[base + j, d] == output_counts[base, d] + draft[:j].count(d), \
                        "a draft is not counted once per time it was written"
            checked.append(draft[0])
        return real_sample(logits, tensors, prompt_mask, output_mask, output_counts)

    monkeypatch.setattr(model_runner.ModelRunner, "build_batch", build)
    monkeypatch.setattr(spec_decode, "sample", sample)
    prompts, params = _prompts()[:2], q35.SamplingParams(temperature=0, presence_penalty=1.0, max_tokens=8,
                                                         frequency_penalty=0.5)
    oracle["answers"] = {tuple(p): answer for p in prompts}  # drafts that are never all right
    _llm(mtp_model, generation_config, k).generate(prompts, params)
    assert len(checked) >= 4


def test_preemption_and_sample_counts(mtp_model, generation_config, oracle):
    """Sequences preempted (a cache of few blocks) restart their prompt and drafts; n > 1 samples."""
    prompts = _prompts()[:3]
    params = q35.SamplingParams(temperature=0.8, seed=3, max_tokens=20, ignore_eos=True, n=2)
    plain = _llm(mtp_model, generation_config, 0, num_blocks=12, block_size=8).generate(prompts, params)
    oracle["answers"] = {}
    for p, r in zip(prompts, plain):  # both samples share a prompt: draft from sample 0's tokens
        oracle["answers"][tuple(p)] = r.outputs[0].token_ids
    llm = _llm(mtp_model, generation_config, 2, num_blocks=12, block_size=8)
    got = llm.generate(prompts, params)
    _same(got, plain)
    assert llm.engine.scheduler.num_preemptions > 0


@pytest.mark.parametrize("pattern", ["mtp", "oracle"])
@pytest.mark.parametrize("k", [1, 2])
def test_mtp_rows_and_drafts_match_one_pass_over_the_sequence(mtp_model, generation_config, oracle, monkeypatch,
                                                              pattern, k):
    """Every MTP row a step computes with the right next token equals the head run once over the finished
    sequence, and every draft is that pass's greedy token: the head's KV cache is right across prefill chunks,
    verification steps and roll-backs (``oracle``: drafts forced right except every third, so that both happen;
    the head's own drafts are still the ones checked). A second draft is the head's greedy token on its own output
    for the first draft, one position further."""
    from qwen35_native.engine import model_runner

    model, rows, drafts, main_pass = mtp_model, [], [], [False]
    real_step = model_runner.execute_speculative

    def step(runner, plan):
        main_pass[0] = True  # the first MTP call of a step runs over the step's rows; later ones draft further
        return real_step(runner, plan)

    real_mtp, draft_with = model.forward_mtp, LLMEngine._usable_draft if pattern == "oracle" else oracle["real"]

    def mtp(next_ids, hidden, batch, cache, vision_embeds=None):
        out = real_mtp(next_ids, hidden, batch, cache, vision_embeds=vision_embeds)
        if main_pass[0]:
            rows.extend(zip(batch.positions[0].tolist(), next_ids.tolist(), out))
        main_pass[0] = False
        return out

    def usable(self, seq, draft):
        drafts.append((len(seq.output_ids), list(draft)))
        return draft_with(self, seq, draft)

    monkeypatch.setattr(model_runner, "execute_speculative", step)
    monkeypatch.setattr(model, "forward_mtp", mtp)
    monkeypatch.setattr(LLMEngine, "_usable_draft", usable)
    params = q35.SamplingParams(temperature=0.8, seed=2, max_tokens=12, ignore_eos=True)
    for prompt in _prompts()[:2]:   # one sequence per engine: every row of a step is this sequence's
        rows.clear()
        drafts.clear()
        plain = _llm(model, generation_config, 0).generate([prompt], params)[0].outputs[0].token_ids
        oracle["answers"] = {tuple(prompt): plain}
        oracle["right"] = lambda i: i % 3 != 0
        out = _llm(model, generation_config, k, max_num_batched_tokens=16, block_size=8).generate([prompt], params)
        ids = torch.tensor(prompt + out[0].outputs[0].token_ids)
        n = len(ids) - 1  # the last output token is never fed
        cache = model.allocate_cache(num_blocks=8, block_size=64, num_slots=1, with_mtp=True)
        batch = ForwardBatch.build([n], [0], [0], torch.arange(8, dtype=torch.int32)[None], 64, "cpu", logits="all")
        _, hidden = model.forward_cached(ids[:n], batch, cache, return_hidden=True)
        full = real_mtp(ids[1:n + 1], hidden, batch, cache)
        greedy = model.compute_logits(full).argmax(-1)
        valid = [(p, h) for p, t, h in rows if p < n and t == int(ids[p + 1])]
        assert len(valid) >= n
        for p, h in valid:
            torch.testing.assert_close(h, full[p], rtol=0, atol=2e-5, msg=f"MTP row at position {p}")
        for i, d in drafts:  # the draft of output i (position L + i): row L + i - 2, whose next token is the pending
            row = len(prompt) + i - 2
            assert d[0] == int(greedy[row]), f"draft for output position {i}"
            if k == 2 and row + 1 < n:  # the head on its own output full[row] and d[0], at position row + 1
                again = {j: (kc.clone(), vc.clone()) for j, (kc, vc) in cache.mtp_kv.items()}
                one = ForwardBatch.build([1], [row + 1], [0], batch.block_tables, 64, "cpu", logits="all")
                step_out = real_mtp(torch.tensor([d[0]]), full[row:row + 1], one,
                                    type(cache)(**{**vars(cache), "mtp_kv": again}))
                assert d[1] == int(model.compute_logits(step_out).argmax(-1)), f"second draft at output {i}"


@pytest.mark.parametrize("k", [1, 2])
def test_kernel_backend_matches_plain_engine(tmp_path, oracle, k):
    """The verification step on the kernels (SIMT emulator): decode ops position by position, decode attention over
    the drafts, the roll-back; accepted and rejected drafts."""
    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path / "k"), "tiny-kernel", seed=2)
    model = q35.from_pretrained(path, backend="kernel", load_mtp=True)
    prompts = [[5, 9, 200, 31, 7], [1, 2, 3]]
    params = [q35.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
              q35.SamplingParams(temperature=0.8, seed=1, max_tokens=5, ignore_eos=True)]
    plain = q35.LLM(model, tokenizer=False, generation_config={}, max_num_seqs=2).generate(prompts, params)
    oracle["answers"] = {tuple(p): r.outputs[0].token_ids for p, r in zip(prompts, plain)}
    oracle["right"] = lambda i: i % 2 == 0
    llm = q35.LLM(model, tokenizer=False, generation_config={}, max_num_seqs=2, speculative_config=spec(k))
    _same(llm.generate(prompts, params), plain)
    assert 0 < llm.engine.spec_stats.num_accepted < llm.engine.spec_stats.num_drafts


def test_from_a_checkpoint_directory(tiny_dir, generation_config):
    """A checkpoint path loads the MTP head when speculative decoding is asked for."""
    params = q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    kw = dict(tokenizer=False, generation_config=generation_config, max_num_seqs=2)
    llm = q35.LLM(tiny_dir, speculative_config=spec(2), **kw)
    assert llm.model.mtp is not None and llm.engine.spec_stats.num_drafts == 0
    assert llm.generate([[4, 5, 6]], params)[0].token_ids == q35.LLM(tiny_dir, **kw).generate([[4, 5, 6]], params)[
        0].token_ids
    assert llm.engine.spec_stats.num_drafts > 0


def test_accepted_count():
    assert accepted_count([4], [4]) == 1 and accepted_count([4], [5]) == 0
    assert accepted_count([1, 2, 3], [1, 2, 9]) == 2 and accepted_count([], []) == 0


def test_bad_configurations(tiny_model):
    with pytest.raises(ValueError, match="method must be one of"):
        SpeculativeConfig.parse({"method": "eagle"})
    assert SpeculativeConfig.parse({"num_speculative_tokens": 3}) == SpeculativeConfig("mtp", 3)
    with pytest.raises(ValueError, match="positive integer"):
        SpeculativeConfig.parse({"num_speculative_tokens": 0})
    with pytest.raises(ValueError, match="unknown speculative_config keys"):
        SpeculativeConfig.parse({"method": "mtp", "draft_model": "x"})
    with pytest.raises(TypeError, match="must be a dict"):
        SpeculativeConfig.parse("mtp")
    with pytest.raises(ValueError, match="built without its MTP head"):
        q35.LLM(tiny_model, tokenizer=False, speculative_config=SPEC)
    with pytest.raises(ValueError, match="allocate_cache"):
        tiny_model.allocate_cache(4, with_mtp=True)


def test_images_and_their_m_rope_positions(tiny_dir, oracle):
    """Image prompts (vision features in the prefill, decode positions shifted by rope_delta) verify drafts at the
    shifted positions, eagerly and on the static CUDA-graph path: the plain engine's tokens."""
    import numpy as np

    from qwen35_native.engine.spec_graphs import SpecGraphs

    def chat(seed, text):
        picture = (np.random.RandomState(seed).rand(40, 56, 3) * 255).astype(np.uint8)
        return [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": text}]}]

    convs, params = [chat(0, "What is this?"), chat(1, "And this one?")], q35.SamplingParams(
        temperature=0, max_tokens=9, ignore_eos=True)
    plain = q35.LLM(tiny_dir, backend="reference", max_num_seqs=2).chat(convs, params)
    oracle["answers"] = {tuple(r.prompt_token_ids): r.token_ids for r in plain}
    oracle["right"] = lambda i: i % 4 != 3
    for graphs in (None, [1, 2]):
        llm = q35.LLM(tiny_dir, backend="reference", max_num_seqs=2, speculative_config=spec(2))
        if graphs:
            llm.engine.runner.spec_graphs = SpecGraphs(llm.engine.runner, graphs, capture=False)
        assert [r.token_ids for r in llm.chat(convs, params)] == [r.token_ids for r in plain]
        assert 0 < llm.engine.spec_stats.num_accepted < llm.engine.spec_stats.num_drafts


def test_the_mtp_head_embeds_vision_features_where_the_target_did(tiny_dir, monkeypatch):
    """In an image prompt's prefill (chunked so that a chunk ends inside the image), the MTP row of position p takes
    the vision features of position p + 1 when that token is an image pad token, as the target's input did, and
    the embedding of the token otherwise."""
    import numpy as np

    from qwen35_native.engine import model_runner

    llm = q35.LLM(tiny_dir, backend="reference", max_num_seqs=1, max_num_batched_tokens=6, speculative_config=spec(1))
    model, rows, plans = llm.engine.runner.model, [], []
    real_forward, real_build = model.mtp.forward, model_runner.ModelRunner.build_batch

    def forward(x, hidden, batch, kv):
        rows.append(x.detach().clone())
        return real_forward(x, hidden, batch, kv)

    def build(self, plan, *args, **kwargs):
        plans.append(plan)
        return real_build(self, plan, *args, **kwargs)

    monkeypatch.setattr(model.mtp, "forward", forward)
    monkeypatch.setattr(model_runner.ModelRunner, "build_batch", build)
    picture = (np.random.RandomState(3).rand(40, 56, 3) * 255).astype(np.uint8)
    reply = llm.chat([{"role": "user", "content": [{"type": "image", "image": picture},
                                                   {"type": "text", "text": "What is it?"}]}],
                     q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    m = next(p.multimodal[0] for p in plans if p.multimodal is not None)
    ids = m.input_ids.tolist()
    L = len(ids)
    fed = torch.cat(rows)[:L]   # the prefill chunks' rows, position by position
    expected = model.embed(torch.tensor(ids[1:] + [reply.token_ids[0]]))
    vision = m.vision_index.tolist()
    expected[torch.tensor(vision) - 1] = m.features.to(expected.dtype)
    assert len(vision) > 4 and any(p % 6 == 0 for p in vision[1:])   # a chunk starts inside the image
    torch.testing.assert_close(fed, expected, rtol=0, atol=0)
