"""``GET /metrics``: the server's counters in Prometheus' text format (version 0.0.4), for the dashboards and alerts
that watch vLLM. The names are vLLM's with the prefix ``qwen35:`` instead of ``vllm:`` (replace the prefix to reuse a
vLLM dashboard):

- gauges read at scrape time: ``num_requests_running`` / ``num_requests_waiting`` (sequences: each sample of ``n``
  counts), ``kv_cache_usage_perc`` (the share of KV blocks in use, 0 to 1; cached blocks nobody uses count as
  free, as they do for admission);
- counters: ``prompt_tokens_total``, ``generation_tokens_total``, ``request_success_total{finished_reason}``
  per sequence ("stop", "length", or "abort" for those of requests cancelled or failed),
  ``num_preemptions_total``, and with prefix caching ``prefix_cache_queries_total`` / ``prefix_cache_hits_total``
  (prompt tokens admitted / found cached);
- histograms of finished requests: ``time_to_first_token_seconds``, ``e2e_request_latency_seconds`` and
  ``request_time_per_output_token_seconds`` (the mean gap between output tokens of each request).

Requests are counted by the engine thread as they finish (``engine_loop.py``); a scrape takes a lock that only the
counting holds, never the engine's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

PREFIX = "qwen35:"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
FINISH_REASONS = ("stop", "length", "abort")


class Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        self.count += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum}", f"{name}_count {self.count}"]
        return out


class ServerMetrics:
    """What finished requests add up to; ``render(engine)`` adds the engine's gauges and writes the text."""

    def __init__(self):
        self._lock = threading.Lock()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = dict.fromkeys(FINISH_REASONS, 0)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)

    def record(self, request, aborted: bool = False) -> None:
        """One request that finished (or was aborted: its tokens so far count, its times do not)."""
        outputs = [len(seq.output_ids) for seq in request.seqs]
        m = request.metrics
        with self._lock:
            self.prompt_tokens += len(request.prompt_ids)
            self.generation_tokens += sum(outputs)
            if aborted:
                self.finished["abort"] += len(request.seqs)
                return
            for seq in request.seqs:
                reason = seq.checker.finish_reason or "stop"
                self.finished[reason] = self.finished.get(reason, 0) + 1
            if m.first_token_time is not None:
                self.ttft.observe(m.first_token_time - m.arrival_time)
            if m.finish_time is not None:
                self.e2e.observe(m.finish_time - m.arrival_time)
                if m.first_token_time is not None and max(outputs) > 1:
                    self.tpot.observe((m.finish_time - m.first_token_time) / (max(outputs) - 1))

    def render(self, engine) -> str:
        scheduler = engine.scheduler
        blocks = scheduler.blocks
        stats = engine.prefix_stats
        lines: list[str] = []

        def metric(name: str, kind: str, doc: str, values: list[str]) -> None:
            lines.extend([f"# HELP {PREFIX}{name} {doc}", f"# TYPE {PREFIX}{name} {kind}"])
            lines.extend(f"{PREFIX}{name}{v}" for v in values)

        metric("num_requests_running", "gauge", "Sequences in the running batch.", [f" {len(scheduler.running)}"])
        metric("num_requests_waiting", "gauge", "Sequences waiting to be admitted.", [f" {len(scheduler.waiting)}"])
        usage = 1.0 - blocks.num_free / blocks.size if blocks.size else 0.0
        metric("kv_cache_usage_perc", "gauge", "Share of KV-cache blocks in use (0 to 1).", [f" {usage}"])
        metric("num_preemptions_total", "counter", "Sequences preempted to free KV blocks.",
               [f" {scheduler.num_preemptions}"])
        if stats is not None:
            metric("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
                   [f" {stats.num_queried_tokens}"])
            metric("prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.",
                   [f" {stats.num_hit_tokens}"])
        with self._lock:
            metric("prompt_tokens_total", "counter", "Prompt tokens of finished requests.", [f" {self.prompt_tokens}"])
            metric("generation_tokens_total", "counter", "Tokens generated for finished requests.",
                   [f" {self.generation_tokens}"])
            metric("request_success_total", "counter", "Finished sequences by finish reason.",
                   [f'{{finished_reason="{r}"}} {n}' for r, n in self.finished.items()])
            for name, doc, hist in (
                    ("time_to_first_token_seconds", "Time from arrival to the first token.", self.ttft),
                    ("e2e_request_latency_seconds", "Time from arrival to the last token.", self.e2e),
                    ("request_time_per_output_token_seconds", "Mean time between output tokens of a request.",
                     self.tpot)):
                lines.extend([f"# HELP {PREFIX}{name} {doc}", f"# TYPE {PREFIX}{name} histogram"])
                lines.extend(PREFIX + line for line in hist.lines(name))
        return "\n".join(lines) + "\n"

