"""``LLM.generate`` on a tiny checkpoint (CPU): greedy decoding against the model's own full forward, batched vs
one-by-one, n > 1, logprobs, stop ids and strings, streaming vs non-streaming, token-id prompts without a
tokenizer. Code: python/qwen35_native/engine/{llm,core,model_runner}.py."""

import pytest
import torch

import qwen35_native as q35

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [100, 200, 300], [42] * 19, [7]]


def greedy_by_full_forward(model, prompt, steps):
    """Reference: argmax of the last position of an uncached full forward, recomputed for every new token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_greedy_equals_argmax_of_full_forward(make_llm, tiny_model):
    llm = make_llm()
    outs = llm.generate(PROMPTS, q35.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    for prompt, out in zip(PROMPTS, outs):
        assert out.prompt_token_ids == prompt and out.finish_reason == "length"
        assert out.token_ids == greedy_by_full_forward(tiny_model, prompt, 6)


def test_greedy_equals_full_forward_on_dense_model(tmp_path):
    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path / "dense"), "tiny-dense", seed=2)
    llm = q35.LLM(path, backend="reference")
    out = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
    assert out.token_ids == greedy_by_full_forward(llm.model, PROMPTS[0], 5)


def test_batched_equals_one_by_one_for_the_same_seeds(make_llm):
    params = [q35.SamplingParams(temperature=0.9, top_k=40, top_p=0.95, max_tokens=7, ignore_eos=True, seed=100 + i,
                                 presence_penalty=0.5 * (i % 2), repetition_penalty=1.0 + 0.2 * (i % 3 == 0))
              for i in range(len(PROMPTS))]
    batched = make_llm().generate(PROMPTS, params)
    alone = [make_llm().generate([p], [sp])[0] for p, sp in zip(PROMPTS, params)]
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]
    assert len({tuple(o.token_ids) for o in batched}) == len(PROMPTS)


def test_llm_seed_makes_unseeded_requests_reproducible(make_llm):
    params = q35.SamplingParams(temperature=1.0, max_tokens=6, ignore_eos=True)
    a = make_llm(seed=7).generate(PROMPTS[:2], params)
    b = make_llm(seed=7).generate(PROMPTS[:2], params)
    c = make_llm(seed=8).generate(PROMPTS[:2], params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b] != [o.token_ids for o in c]


def test_n_samples_use_seed_plus_index(make_llm):
    llm = make_llm()
    out = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=1.0, n=3, seed=11, max_tokens=5,
                                                        ignore_eos=True))[0]
    assert [o.index for o in out.outputs] == [0, 1, 2] and out.token_ids == out.outputs[0].token_ids
    for i, sample in enumerate(out.outputs):
        single = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=1.0, seed=11 + i, max_tokens=5,
                                                               ignore_eos=True))[0]
        assert sample.token_ids == single.token_ids
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1


def test_logprobs_match_log_softmax_of_full_forward(make_llm, tiny_model):
    out = make_llm().generate([PROMPTS[1]], q35.SamplingParams(temperature=0.8, seed=3, max_tokens=4, logprobs=3,
                                                               ignore_eos=True))[0]
    assert len(out.logprobs) == 4
    ids = list(PROMPTS[1])
    for token, lp in zip(out.token_ids, out.logprobs):
        with torch.no_grad():
            ref = tiny_model(torch.tensor([ids]))[0, -1].double().log_softmax(-1)
        assert lp.token_id == token and abs(lp.logprob - ref[token].item()) < 1e-4
        assert lp.rank == 1 + int((ref > ref[token]).sum())
        top = ref.topk(3)
        assert [t for t, _ in lp.top] == top.indices.tolist()
        assert max(abs(a - b) for (_, a), b in zip(lp.top, top.values.tolist())) < 1e-4
        ids.append(token)


def test_stop_token_ids_and_eos(make_llm):
    llm = make_llm()
    free = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    stop_id = free.token_ids[3]
    first = free.token_ids.index(stop_id)
    out = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[stop_id]))[0]
    assert out.finish_reason == "stop" and out.outputs[0].stop_reason == stop_id
    assert out.token_ids == free.token_ids[:first + 1]
    # The same token as an eos id (generation_config) stops too, with stop_reason None; ignore_eos runs on.
    llm.engine.eos_ids = [stop_id]
    eos = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=8))[0]
    assert eos.token_ids == free.token_ids[:first + 1] and eos.finish_reason == "stop"
    assert eos.outputs[0].stop_reason is None
    ignored = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    assert ignored.token_ids == free.token_ids and ignored.finish_reason == "length"


def test_stop_strings_cut_the_text(make_llm):
    llm = make_llm()
    prompt = "The capital of France is"
    free = llm.generate(prompt, q35.SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    text = free.text
    stop = text[3:5] if len(text) >= 5 and text[3:5].strip() else text[-2:]
    cut = text.index(stop)
    out = llm.generate(prompt, q35.SamplingParams(temperature=0, max_tokens=12, stop=[stop]))[0]
    assert out.finish_reason == "stop" and out.outputs[0].stop_reason == stop and out.text == text[:cut]
    assert free.token_ids[:len(out.token_ids)] == out.token_ids
    kept = llm.generate(prompt, q35.SamplingParams(temperature=0, max_tokens=12, stop=[stop],
                                                   include_stop_str_in_output=True))[0]
    assert kept.text == text[:cut + len(stop)]


def test_max_tokens_and_context_limit(make_llm):
    llm = make_llm(max_model_len=12)
    out = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, ignore_eos=True))[0]
    assert len(out.token_ids) == 12 - len(PROMPTS[0]) and out.finish_reason == "length"


def test_streaming_yields_the_same_text_and_tokens(make_llm):
    llm = make_llm()
    prompts = ["Hello there, how are you?", "1 2 3 4"]
    params = q35.SamplingParams(temperature=0.7, seed=5, max_tokens=10, n=2, stop=["e "], ignore_eos=True)
    full = llm.generate(prompts, params)
    texts, tokens, reasons = {}, {}, {}
    for d in llm.generate(prompts, params, stream=True):
        key = (d.prompt_index, d.sample_index)
        texts[key] = texts.get(key, "") + d.text
        tokens[key] = tokens.get(key, []) + d.token_ids
        assert key not in reasons  # nothing after a sample's last delta
        if d.finished:
            reasons[key] = d.finish_reason
    for i, out in enumerate(full):
        for sample in out.outputs:
            key = (i, sample.index)
            assert texts[key] == sample.text and tokens[key] == sample.token_ids
            assert reasons[key] == sample.finish_reason


def test_stopping_a_stream_early_frees_the_cache(make_llm):
    llm = make_llm()
    stream = llm.generate(PROMPTS, q35.SamplingParams(temperature=0, max_tokens=20, ignore_eos=True), stream=True)
    next(stream)
    stream.close()
    scheduler = llm.engine.scheduler
    assert not scheduler.has_unfinished() and scheduler.blocks.num_free == scheduler.blocks.size
    assert scheduler.slots.num_free == scheduler.slots.size


def test_token_ids_without_tokenizer(make_llm):
    llm = make_llm(tokenizer=False)
    out = llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    assert len(out.token_ids) == 4 and out.prompt is None
    with pytest.raises(ValueError, match="without tokenizer files"):
        _ = out.text
    with pytest.raises(ValueError, match="needs a tokenizer"):
        llm.generate("text", q35.SamplingParams(max_tokens=2))
    deltas = list(llm.generate([PROMPTS[0]], q35.SamplingParams(temperature=0, max_tokens=4, ignore_eos=True),
                               stream=True))
    assert [t for d in deltas for t in d.token_ids] == out.token_ids and all(d.text is None for d in deltas)


def test_checkpoint_directory_with_generation_config(tiny_dir):
    llm = q35.LLM(tiny_dir, backend="reference", max_num_seqs=2)
    p = llm.engine.resolve(None)
    assert (p.temperature, p.top_k, p.top_p) == (0.6, 20, 0.95)   # make-tiny's generation_config.json
    im_end, eot = llm.tokenizer.token_to_id("<|im_end|>"), llm.tokenizer.token_to_id("<|endoftext|>")
    assert set(llm.engine.eos_ids) == {im_end, eot}
    out = llm.generate("Hi", q35.SamplingParams(max_tokens=3, seed=0))[0]
    assert len(out.token_ids) <= 3 and isinstance(out.text, str)


@pytest.mark.parametrize("frequency,presence", [(0.0, 1.5), (1.25, 1.5), (-1.0, 0.0)])
def test_penalties_count_prompt_and_output_tokens(make_llm, tiny_model, frequency, presence):
    """Greedy with penalties == argmax of the full-forward logits penalised by hand: repetition over prompt and
    output tokens, frequency per occurrence in the output, presence over output tokens only."""
    prompt = [296, 143, 109, 72, 214, 427, 146, 75]   # a prompt where the penalties change a greedy choice
    params = q35.SamplingParams(temperature=0, repetition_penalty=3.0, presence_penalty=presence, max_tokens=6,
                                ignore_eos=True, frequency_penalty=frequency)
    llm = make_llm()
    if frequency:  # a sequence without frequency penalty first: counts start later, for the slots started since
        llm.generate([prompt[:3]], q35.SamplingParams(temperature=0, presence_penalty=1.0, max_tokens=2))
    out = llm.generate([prompt], params)[0]
    ids, changed = list(prompt), 0
    with torch.no_grad():
        for token in out.token_ids:
            logits = tiny_model(torch.tensor([ids]))[0, -1].float()
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[ids] = True
            penalised = torch.where(seen, torch.where(logits > 0, logits / 3.0, logits * 3.0), logits)
            generated = torch.zeros_like(seen)
            generated[ids[len(prompt):]] = True
            counts = torch.bincount(torch.tensor(ids[len(prompt):], dtype=torch.long), minlength=len(logits))
            penalised = penalised - frequency * counts.float() - presence * generated
            assert token == int(penalised.argmax())
            changed += int(penalised.argmax() != logits.argmax())
            ids.append(token)
    assert changed > 0


def test_checkpoint_without_tokenizer_files(tiny_dir, tmp_path):
    import os

    for name in ("config.json", "model.safetensors", "generation_config.json"):
        os.symlink(os.path.join(tiny_dir, name), tmp_path / name)
    llm = q35.LLM(str(tmp_path), backend="reference", max_num_seqs=2)
    assert llm.tokenizer is None
    out = llm.generate([[5, 6, 7]], q35.SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert len(out.token_ids) == 3
    with pytest.raises(ValueError, match="without tokenizer files"):
        _ = out.text
