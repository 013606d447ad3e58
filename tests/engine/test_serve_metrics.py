"""``GET /metrics`` of the OpenAI server (Prometheus text format, vLLM's metric names under ``qwen35:``): token
counters equal the responses' usage, finish reasons are counted per sequence (a cancelled stream as "abort"),
histograms count every finished request with cumulative buckets, gauges return to idle, prefix-cache counters
follow the engine's, and the route needs no API key.
Code: python/qwen35_native/serve/metrics.py, engine_loop.py (recording), http.py (route)."""

import http.client
import math
import threading
import time

from openai_client import post, request
from qwen35_native.serve import OpenAIServer
from qwen35_native.serve.metrics import PREFIX


def parse_metrics(text: str) -> dict[str, float]:
    """``{name{labels}: value}`` of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = math.inf if value == "+Inf" else float(value)
    return out


def scrape(server) -> tuple[str, dict[str, float]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    finally:
        conn.close()
    return text, {k[len(PREFIX):]: v for k, v in parse_metrics(text).items()}


def wait_idle(server, timeout=30.0):
    end = time.time() + timeout
    while server.loop.num_running and time.time() < end:
        time.sleep(0.02)
    assert not server.loop.num_running


def test_counters_follow_the_responses(make_llm):
    with OpenAIServer(make_llm(max_num_seqs=4), port=0, api_key="k").start() as server:   # /metrics stays open
        _, before = scrape(server)
        assert before["prompt_tokens_total"] == 0 and before["num_requests_running"] == 0
        auth = {"Authorization": "Bearer k"}
        usages, lengths = [], 0
        for body in ({"prompt": "Once upon a time", "max_tokens": 5, "n": 2, "ignore_eos": True},
                     {"prompt": [5, 17, 99], "max_tokens": 3, "temperature": 0, "ignore_eos": True}):
            status, out = request(server.url, "POST", "/v1/completions", body, headers=auth)
            assert status == 200, out
            usages.append(out["usage"])
            lengths += sum(c["finish_reason"] == "length" for c in out["choices"])
        status, out = request(server.url, "POST", "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, headers=auth)
        assert status == 200, out
        usages.append(out["usage"])
        chat_reason = out["choices"][0]["finish_reason"]
        text, m = scrape(server)
    assert m["prompt_tokens_total"] == sum(u["prompt_tokens"] for u in usages)
    assert m["generation_tokens_total"] == sum(u["completion_tokens"] for u in usages)
    assert m['request_success_total{finished_reason="length"}'] == lengths + (chat_reason == "length")
    assert m['request_success_total{finished_reason="abort"}'] == 0
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds",
                 "request_time_per_output_token_seconds"):
        assert m[f"{name}_count"] == 3 and m[f'{name}_bucket{{le="+Inf"}}'] == 3 and m[f"{name}_sum"] > 0
        buckets = [v for k, v in m.items() if k.startswith(f"{name}_bucket")]
        assert buckets == sorted(buckets)   # cumulative
        assert f"# TYPE {PREFIX}{name} histogram" in text
    assert m["num_requests_running"] == 0 and m["num_requests_waiting"] == 0
    assert m["kv_cache_usage_perc"] == 0.0 and "prefix_cache_hits_total" not in m   # every block free again


def test_a_cancelled_stream_counts_as_abort(make_llm):
    with OpenAIServer(make_llm(max_num_seqs=4), port=0).start() as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        conn.request("POST", "/v1/completions", body=b'{"prompt": "x", "max_tokens": 3000, "ignore_eos": true, '
                                                      b'"stream": true, "n": 2}',
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.fp.readline().startswith(b"data: ")   # the first event: the request runs
        _, running = scrape(server)
        response.close()          # the client goes away
        conn.close()
        wait_idle(server)
        _, m = scrape(server)
    assert running["num_requests_running"] + running["num_requests_waiting"] == 2
    assert running["kv_cache_usage_perc"] > 0
    assert m['request_success_total{finished_reason="abort"}'] == 2   # both samples
    assert m["e2e_request_latency_seconds_count"] == 0 and m["prompt_tokens_total"] > 0
    assert 0 < m["generation_tokens_total"] < 2 * 3000   # what the samples had generated when they were cut


def test_prefix_cache_counters(make_llm):
    llm = make_llm(max_num_seqs=2, enable_prefix_caching=True, block_size=8)
    with OpenAIServer(llm, port=0).start() as server:
        body = {"prompt": list(range(3, 40)), "max_tokens": 2, "temperature": 0}
        for _ in range(2):  # one after the other: the second finds the first's blocks
            assert post(server.url, "/v1/completions", body)[0] == 200
        _, m = scrape(server)
    stats = llm.engine.prefix_stats
    assert m["prefix_cache_queries_total"] == stats.num_queried_tokens == 2 * 37
    assert m["prefix_cache_hits_total"] == stats.num_hit_tokens > 0


def test_scrapes_while_requests_run(make_llm):
    """Scrapes from other threads while the engine steps: every one parses, counters never go down."""
    with OpenAIServer(make_llm(max_num_seqs=4), port=0).start() as server:
        seen, stop = [], threading.Event()

        def scraper():
            while not stop.is_set():
                seen.append(scrape(server)[1]["generation_tokens_total"])

        t = threading.Thread(target=scraper)
        t.start()
        for i in range(3):
            assert post(server.url, "/v1/completions", {"prompt": f"p{i}", "max_tokens": 8, "n": 2})[0] == 200
        stop.set()
        t.join()
    assert seen == sorted(seen) and len(seen) >= 2
