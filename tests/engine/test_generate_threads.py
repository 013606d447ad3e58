"""``LLM.generate`` / ``chat`` from several threads at once: every call gets exactly what it gets alone (sampling is
counter-based, so batching changes no token), the calls' requests run in the same engine steps, a bad call fails
alone, and a thread may generate beside the OpenAI server's engine thread on the same LLM.
Code: python/qwen35_native/engine/llm.py (``engine_lock``, ``_step_until``), serve/engine_loop.py."""

import threading

import pytest

import qwen35_native as q35
from openai_client import post

PROMPTS = [[5, 17, 99, 230, 4], [100, 200, 300], [42] * 11, [7, 8, 9, 10], [300, 1, 2]]


def _params(i):
    return q35.SamplingParams(temperature=0.8 if i % 2 else 0, seed=i, max_tokens=5 + 3 * i, ignore_eos=True,
                              presence_penalty=0.5 * (i % 3 == 0), logprobs=1 if i == 2 else None)


def _in_threads(calls):
    results, errors = [None] * len(calls), []

    def run(i):
        try:
            results[i] = calls[i]()
        except BaseException as e:
            errors.append((i, e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results, errors


def _widths(llm, monkeypatch):
    """Records how many sequences run in each engine step."""
    engine, widths = llm.engine, []
    step = engine.step

    def counting():
        widths.append(len(engine.scheduler.running))
        return step()

    monkeypatch.setattr(engine, "step", counting)
    return widths


def test_concurrent_generate_calls_batch_together_and_keep_their_tokens(make_llm, monkeypatch):
    alone = [make_llm(tokenizer=False).generate([p], _params(i))[0] for i, p in enumerate(PROMPTS)]
    llm = make_llm(tokenizer=False, max_num_seqs=8)
    widths = _widths(llm, monkeypatch)
    calls = [lambda i=i, p=p: llm.generate([p], _params(i))[0] for i, p in enumerate(PROMPTS)]
    calls.append(lambda: [d.token_ids for d in llm.generate([PROMPTS[1]], _params(1), stream=True)])
    results, errors = _in_threads(calls)
    assert not errors
    assert [r.token_ids for r in results[:-1]] == [r.token_ids for r in alone]
    assert results[2].logprobs[0].logprob == pytest.approx(alone[2].logprobs[0].logprob, abs=1e-5)
    assert [t for ids in results[-1] for t in ids] == alone[1].token_ids
    assert max(widths) >= 2 and not llm.engine.has_unfinished()


def test_a_bad_call_fails_alone(make_llm):
    llm = make_llm(tokenizer=False)
    vocab = llm.engine.vocab_size
    calls = [lambda: llm.generate([PROMPTS[0]], _params(0))[0].token_ids,
             lambda: llm.generate([[vocab + 5]], _params(1)),
             lambda: llm.generate([PROMPTS[1]], _params(2))[0].token_ids]
    results, errors = _in_threads(calls)
    assert [i for i, _ in errors] == [1] and "vocab_size" in str(errors[0][1])
    alone = make_llm(tokenizer=False)
    assert results[0] == alone.generate([PROMPTS[0]], _params(0))[0].token_ids
    assert results[2] == alone.generate([PROMPTS[1]], _params(2))[0].token_ids


def test_generate_beside_the_server_on_one_llm(make_llm):
    from qwen35_native.serve import OpenAIServer

    want_text = make_llm().generate("Once upon a time", q35.SamplingParams(temperature=0, max_tokens=8,
                                                                           ignore_eos=True))[0].text
    want_ids = make_llm().generate([PROMPTS[2]], _params(3))[0].token_ids
    llm = make_llm()
    with OpenAIServer(llm, port=0).start() as server:
        calls = [lambda: post(server.url, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 8,
                                                               "temperature": 0, "ignore_eos": True}),
                 lambda: llm.generate([PROMPTS[2]], _params(3))[0].token_ids]
        results, errors = _in_threads(calls)
    assert not errors
    assert results[0][0] == 200 and results[0][1]["choices"][0]["text"] == want_text
    assert results[1] == want_ids
