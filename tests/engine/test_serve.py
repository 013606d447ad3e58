"""The OpenAI-compatible server's completions endpoint and its mechanics, over real HTTP on a tiny model: the same
text, finish reasons and logprobs as ``LLM.generate`` with the same parameters (sampling is counter-based, so seeded
requests are reproducible whatever else runs), streamed or not, alone or with other requests in flight; echo and
prompt scoring; a client that goes away frees its request; bad requests are 4xx errors naming the field; a failed
engine step is a 500 and the server goes on.
Code: python/qwen35_native/serve/."""

import json
import threading
import time

import pytest

import qwen35_native as q35
from openai_client import finish_reasons, post, request, stream, stream_texts

PROMPTS = ["The capital of France is", "Once upon a time"]


def expected(ref, prompts, **params):
    return ref.generate(prompts, q35.SamplingParams(**params))


def test_completions_equal_generate_for_every_prompt_and_sample(served):
    server, ref = served
    body = {"model": "tiny", "prompt": PROMPTS, "max_tokens": 7, "temperature": 0.9, "top_p": 0.95, "seed": 11,
            "n": 2, "presence_penalty": 0.5, "top_k": 40, "frequency_penalty": 0.3}
    status, out = post(server.url, "/v1/completions", body)
    assert status == 200, out
    want = expected(ref, PROMPTS, max_tokens=7, temperature=0.9, top_p=0.95, seed=11, n=2, presence_penalty=0.5,
                    top_k=40, frequency_penalty=0.3)
    assert out["object"] == "text_completion" and out["model"] == "tiny" and out["id"].startswith("cmpl-")
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    for i, r in enumerate(want):
        for o in r.outputs:
            choice = out["choices"][i * 2 + o.index]
            assert choice["text"] == o.text and choice["finish_reason"] == o.finish_reason
            assert choice["logprobs"] is None
    assert out["usage"] == {"prompt_tokens": sum(len(r.prompt_token_ids) for r in want),
                            "completion_tokens": sum(len(o.token_ids) for r in want for o in r.outputs),
                            "total_tokens": out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]}
    # token-id prompts, and the default max_tokens of 16
    status, out = post(server.url, "/v1/completions", {"prompt": [[5, 17, 99], [230, 4]], "temperature": 0,
                                                         "ignore_eos": True})
    want = expected(ref, [[5, 17, 99], [230, 4]], temperature=0, max_tokens=16, ignore_eos=True)
    assert [c["text"] for c in out["choices"]] == [r.text for r in want]
    assert out["usage"]["completion_tokens"] == 32


def test_streamed_completions_equal_the_whole_response(served):
    server, ref = served
    body = {"prompt": PROMPTS, "max_tokens": 9, "temperature": 0.7, "seed": 5, "n": 2, "stop": ["e"],
            "stream_options": {"include_usage": True}}
    status, events = stream(server.url, "/v1/completions", body)
    assert status == 200 and events[-1] == "[DONE]"
    status, whole = post(server.url, "/v1/completions", {**body, "stream_options": None})
    texts = stream_texts(events)
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert finish_reasons(events) == {c["index"]: c["finish_reason"] for c in whole["choices"]}
    assert events[-2]["choices"] == [] and events[-2]["usage"] == whole["usage"]
    assert all(e["id"] == events[0]["id"] for e in events[:-1])
    # without include_usage no usage chunk
    status, events = stream(server.url, "/v1/completions", {**body, "stream_options": None})
    assert all("usage" not in e for e in events[:-1]) and stream_texts(events) == texts


def test_return_token_ids(served):
    """vLLM's extension: the prompt's token ids and each choice's generated ids, whole or chunk by chunk (a chunk
    per step, text or not)."""
    server, ref = served
    body = {"prompt": PROMPTS, "max_tokens": 6, "temperature": 0.8, "seed": 9, "n": 2, "return_token_ids": True}
    want = expected(ref, PROMPTS, max_tokens=6, temperature=0.8, seed=9, n=2)
    status, out = post(server.url, "/v1/completions", body)
    assert status == 200, out
    for i, r in enumerate(want):
        for o in r.outputs:
            choice = out["choices"][2 * i + o.index]
            assert choice["token_ids"] == o.token_ids and choice["prompt_token_ids"] == r.prompt_token_ids
    status, events = stream(server.url, "/v1/completions", body)
    ids, prompts = {}, {}
    for e in events[:-1]:
        for c in e["choices"]:
            ids[c["index"]] = ids.get(c["index"], []) + c["token_ids"]
            if "prompt_token_ids" in c:
                prompts[c["index"]] = c["prompt_token_ids"]
    assert ids == {c["index"]: c["token_ids"] for c in out["choices"]}
    assert prompts == {c["index"]: c["prompt_token_ids"] for c in out["choices"]}
    carrying = [c["token_ids"] for e in events[:-1] for c in e["choices"] if c["token_ids"]]
    assert all(len(t) == 1 for t in carrying) and len(carrying) == sum(map(len, ids.values()))   # a chunk a token
    # chat: the rendered prompt's ids at the top, each choice's ids
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0,
            "return_token_ids": True}
    reply = ref.chat(chat["messages"], q35.SamplingParams(max_tokens=5, temperature=0))
    status, out = post(server.url, "/v1/chat/completions", chat)
    assert out["prompt_token_ids"] == reply.prompt_token_ids and out["choices"][0]["token_ids"] == reply.token_ids
    status, events = stream(server.url, "/v1/chat/completions", chat)
    assert events[0]["prompt_token_ids"] == reply.prompt_token_ids
    assert [t for e in events[1:-1] for c in e["choices"] for t in c["token_ids"]] == reply.token_ids


def test_logprobs_echo_and_prompt_scoring(served):
    server, ref = served
    texts = server.http.api.texts
    want = expected(ref, PROMPTS[0], max_tokens=4, temperature=0, logprobs=2, prompt_logprobs=2)[0]
    status, out = post(server.url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0,
                                                         "logprobs": 2, "echo": True})
    assert status == 200, out
    choice = out["choices"][0]
    assert choice["text"] == PROMPTS[0] + want.text
    lp = choice["logprobs"]
    ids = want.prompt_token_ids + want.token_ids
    assert lp["tokens"] == [texts(t) for t in ids]
    entries = want.prompt_logprobs + want.logprobs
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx([e.logprob for e in entries[1:]], abs=0)
    for top, e in zip(lp["top_logprobs"][1:], entries[1:]):
        assert top == {**{texts(t): v for t, v in e.top}, **({} if texts(e.token_id) in
                                                             {texts(t) for t, _ in e.top} else
                                                             {texts(e.token_id): e.logprob})}
    assert lp["text_offset"] == [sum(len(texts(t)) for t in ids[:i]) for i in range(len(ids))]
    # max_tokens=0 with echo scores the prompt only (lm-eval's loglikelihood requests)
    status, out = post(server.url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 0, "echo": True,
                                                         "logprobs": 0, "temperature": 0})
    choice = out["choices"][0]
    assert choice["text"] == PROMPTS[0] and choice["finish_reason"] == "length"
    assert choice["logprobs"]["token_logprobs"][1:] == [e.logprob for e in want.prompt_logprobs[1:]]
    assert out["usage"]["completion_tokens"] == 0
    # streamed logprobs of the generated tokens
    status, events = stream(server.url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0,
                                                            "logprobs": 2})
    streamed = [v for e in events[:-1] for c in e["choices"] for v in c["logprobs"]["token_logprobs"]]
    assert streamed == [e.logprob for e in want.logprobs]


def test_prompt_logprobs_in_vllms_form(served):
    server, ref = served
    texts = server.http.api.texts
    want = expected(ref, PROMPTS[0], max_tokens=2, temperature=0, prompt_logprobs=2)[0]
    status, out = post(server.url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 2, "temperature": 0,
                                                         "prompt_logprobs": 2, "n": 2})
    assert status == 200, out
    for choice in out["choices"]:
        got = choice["prompt_logprobs"]
        assert got[0] is None and len(got) == len(want.prompt_token_ids)
        for token, entry, e in zip(want.prompt_token_ids[1:], got[1:], want.prompt_logprobs[1:]):
            # n = 2 prefills two sequences in one batch: the same values up to float rounding
            assert entry[str(token)] == {"logprob": pytest.approx(e.logprob, abs=1e-5), "rank": e.rank,
                                         "decoded_token": texts(token)}
            assert [entry[str(t)]["logprob"] for t, _ in e.top] == pytest.approx([lp for _, lp in e.top], abs=1e-5)
            assert [entry[str(t)]["rank"] for t, _ in e.top][:1] == [1]
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "prompt_logprobs": 0}
    status, out = post(server.url, "/v1/chat/completions", chat)
    assert status == 200 and out["prompt_logprobs"][0] is None
    assert len(out["prompt_logprobs"]) == out["usage"]["prompt_tokens"]
    status, out = post(server.url, "/v1/chat/completions", {**chat, "stream": True})
    assert status == 400 and out["error"]["param"] == "prompt_logprobs"


def test_concurrent_requests_join_one_batch_and_keep_their_outputs(served, monkeypatch):
    server, ref = served
    bodies = [{"prompt": PROMPTS[i % 2], "max_tokens": 6 + i, "temperature": 0.8, "seed": i, "ignore_eos": True}
              for i in range(6)]
    want = [expected(ref, b["prompt"], max_tokens=b["max_tokens"], temperature=0.8, seed=b["seed"],
                     ignore_eos=True)[0].text for b in bodies]
    engine, widths = server.loop.llm.engine, []
    step = engine.step

    def counting_step():
        widths.append(sum(not s.finished for s in engine.scheduler.running))
        return step()

    monkeypatch.setattr(engine, "step", counting_step)
    results = [None] * len(bodies)

    def call(i):
        if i % 2:
            results[i] = stream_texts(stream(server.url, "/v1/completions", bodies[i])[1])[0]
        else:
            results[i] = post(server.url, "/v1/completions", bodies[i])[1]["choices"][0]["text"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == want
    assert max(widths) >= 2  # requests were batched together, not served one after the other


def wait_idle(server, timeout=60.0):
    deadline = time.monotonic() + timeout
    while server.loop.num_running or server.loop.llm.engine.has_unfinished():
        assert time.monotonic() < deadline, "the cancelled request still runs"
        time.sleep(0.05)


def test_a_client_that_goes_away_frees_its_request(served):
    import http.client
    from urllib.parse import urlsplit

    server, _ = served
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": PROMPTS[0], "max_tokens": 3000,
                                                             "ignore_eos": True, "stream": True}).encode(),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.fp.readline().startswith(b"data: ")  # the first chunk came
    seqs = [s for s in server.loop.llm.engine.scheduler.running]
    response.close()
    conn.close()
    wait_idle(server)
    assert seqs and all(len(s.output_ids) < 3000 for s in seqs)
    status, out = post(server.url, "/v1/completions", {"prompt": PROMPTS[1], "max_tokens": 2})
    assert status == 200 and len(out["choices"]) == 1


@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"prompt": "x", "frequency_penalty": 2.5}, 400, "frequency_penalty"),
    ({"prompt": "x", "logit_bias": {"5": 1000}}, 400, "logit_bias"),
    ({"prompt": "x", "best_of": 3}, 400, "best_of"),
    ({"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ({"prompt": "x", "functions": [{"name": "f"}]}, 400, "functions"),
    ({"prompt": "x", "guided_regex": "[0-9]", "guided_choice": ["a"]}, 400, "guided_choice"),
    ({"prompt": "x", "guided_choice": []}, 400, "guided_choice"),
    ({"prompt": "x", "response_format": {"type": "yaml"}}, 400, "response_format"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": -2}, 400, "max_tokens"),
    ({"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ({"prompt": "x", "prompt_logprobs": 1000}, 400, "prompt_logprobs"),
    ({"prompt": "x", "prompt_logprobs": True}, 400, "prompt_logprobs"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"prompt": "x", "echo": True, "logprobs": 1, "stream": True}, 400, "echo"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": [1, "a"]}, 400, "prompt"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "stop": [1]}, 400, "stop"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
])
def test_bad_requests_are_errors_naming_the_field(served, body, status, param):
    server, _ = served
    got, out = post(server.url, "/v1/completions", body)
    assert got == status, out
    assert out["error"]["param"] == param and out["error"]["type"] in ("invalid_request_error", "not_found_error")
    assert out["error"]["message"]


def test_bad_bodies_routes_and_prompts(served):
    server, ref = served
    assert request(server.url, "POST", "/v1/completions", raw=b"{not json")[0] == 400
    status, out = request(server.url, "POST", "/v1/completions", raw=b"[1, 2]")
    assert status == 400 and "JSON object" in out["error"]["message"]
    assert request(server.url, "POST", "/v1/embeddings", {"input": "x"})[0] == 404
    status, out = request(server.url, "POST", "/v1/completions", raw=b"{}", headers={"Content-Length": "x"})
    assert status == 411 and "Content-Length" in out["error"]["message"]
    status, out = request(server.url, "POST", "/v1/completions", raw=b"{}",
                          headers={"Content-Length": str(1 << 30)})
    assert status == 413
    assert request(server.url, "GET", "/v2/x")[0] == 404
    assert request(server.url, "GET", "/health") == (200, {})
    status, out = request(server.url, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in out["data"]] == ["tiny"]
    # a prompt longer than the context: the engine's own message, as a 400
    status, out = post(server.url, "/v1/completions", {"prompt": [5] * (ref.max_model_len + 1)})
    assert status == 400 and f"max_model_len={ref.max_model_len}" in out["error"]["message"]
    status, out = post(server.url, "/v1/completions", {"prompt": [10 ** 9]})
    assert status == 400 and "vocab_size" in out["error"]["message"]
    # the server still serves
    assert post(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 1})[0] == 200


def test_a_failed_engine_step_is_a_500_and_the_server_goes_on(served, monkeypatch):
    server, _ = served
    engine = server.loop.llm.engine
    step, calls = engine.step, []

    def failing_once():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated device failure")
        return step()

    monkeypatch.setattr(engine, "step", failing_once)
    status, out = post(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 5, "ignore_eos": True})
    assert status == 500 and "simulated device failure" in out["error"]["message"]
    assert out["error"]["type"] == "internal_server_error"
    wait_idle(server)
    status, events = stream(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 3})
    assert status == 200 and events[-1] == "[DONE]" and "error" not in events[-2]
    # a failure after the stream started: an error event, then [DONE]
    calls.clear()
    status, events = stream(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 5, "ignore_eos": True})
    assert status == 200 and events[-1] == "[DONE]"  # the headers went out before the failure
    assert "simulated device failure" in events[-2]["error"]["message"]
    wait_idle(server)


def test_the_api_key_comes_from_the_environment_too(make_llm, monkeypatch):
    from qwen35_native.serve import OpenAIServer

    monkeypatch.setenv("QWEN35_API_KEY", "from-env")
    with OpenAIServer(make_llm(), port=0).start() as server:
        assert request(server.url, "GET", "/v1/models")[0] == 401
        assert request(server.url, "GET", "/v1/models", headers={"Authorization": "Bearer from-env"})[0] == 200
        assert request(server.url, "GET", "/v1/models", headers={"Authorization": "Bearer from-en"})[0] == 401


def test_a_burst_of_connections_waits_in_the_backlog(make_llm):
    """64 clients connecting before the server accepts any (a benchmark's burst at concurrency 64) are all served;
    with socketserver's backlog of 5 they were reset."""
    import http.client

    from qwen35_native.serve import OpenAIServer

    with OpenAIServer(make_llm(), port=0) as server:   # listening, not accepting yet
        conns = [http.client.HTTPConnection(server.host, server.port, timeout=30) for _ in range(64)]
        for conn in conns:
            conn.connect()
            conn.request("GET", "/health")
        server.start()
        statuses = []
        for conn in conns:
            response = conn.getresponse()
            statuses.append(response.status)
            response.read()
            conn.close()
        assert statuses == [200] * 64


def test_a_dead_engine_thread_fails_requests_instead_of_hanging(make_llm, monkeypatch):
    from qwen35_native.serve import OpenAIServer

    llm = make_llm()

    def dies():
        raise SystemExit("the engine thread ends")  # a BaseException: not caught by the loop

    monkeypatch.setattr(llm.engine, "step", dies)
    with OpenAIServer(llm, port=0).start() as server:
        status, out = post(server.url, "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert status == 500 and "engine thread has stopped (SystemExit" in out["error"]["message"]
        server.loop._thread.join(10)
        assert not server.loop.alive
        status, out = post(server.url, "/v1/completions", {"prompt": "y", "max_tokens": 2})
        assert status == 500 and "engine loop is closed" in out["error"]["message"]


def test_tokenize_and_detokenize(served):
    server, ref = served
    status, out = post(server.url, "/tokenize", {"prompt": "Once upon a time"})
    assert status == 200 and out["tokens"] == ref.tokenizer.encode("Once upon a time")
    assert out["count"] == len(out["tokens"]) and out["max_model_len"] == ref.max_model_len
    messages = [{"role": "user", "content": "Hi"}]
    status, out = post(server.url, "/tokenize", {"messages": messages,
                                                 "chat_template_kwargs": {"enable_thinking": False}})
    reply = ref.chat(messages, q35.SamplingParams(max_tokens=1), enable_thinking=False)
    assert out["tokens"] == reply.prompt_token_ids   # what /v1/chat/completions feeds the model
    status, out = post(server.url, "/detokenize", {"tokens": reply.prompt_token_ids})
    assert status == 200 and out["prompt"] == reply.prompt
    for path, body, param in (("/tokenize", {}, "prompt"), ("/tokenize", {"prompt": 5}, "prompt"),
                              ("/detokenize", {"tokens": [1, -2]}, "tokens"),
                              ("/tokenize", {"messages": [{"role": "user", "content": [
                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]},
                               "messages")):
        status, out = post(server.url, path, body)
        assert status == 400 and out["error"]["param"] == param, out
