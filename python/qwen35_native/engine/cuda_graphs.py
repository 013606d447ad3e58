"""CUDA graphs of decode steps: the model forward and the sampler of a batch of one-token decode steps, captured
lazily per (padded batch size, sampler stages) and replayed with new inputs copied into static buffers.

Static buffers (device, sized for the largest graph): token ids, M-RoPE positions, KV slot mapping, sequence
lengths, GDN slots, block tables, the sampler's packed per-row parameters (``SamplingTensors.pack`` layout). A batch
of ``b`` sequences runs the smallest captured size ``G >= b``; rows ``b..G-1`` are padding: token 0 at position 0
in the runner's padding KV block, a greedy sampler row, and a GDN slot no sequence holds (the padding slot, then
free slots: their contents are dead, a sequence admitted later starts from scratch without reading them), so
padding never touches a live sequence and slots stay distinct. Padding outputs are dropped.

Graph keys: ``G`` and the sampler's :class:`SamplingFlags` with ``any_greedy`` forced on (padding rows are greedy;
computing the greedy branch for a batch without greedy rows changes no token), so a workload with one kind of
sampling parameters uses one graph per batch size. Graphs share one memory pool; they never run concurrently and
each step reads its outputs before the next replay.

The first step of a key runs eagerly on the static buffers (on a side stream: this is also the warm-up that
initialises cuBLAS workspaces and the like) and gives that step's result; the graph is then captured from the same
buffers (capture executes nothing, so no state changes) and replayed from the next such step on. An op that
synchronises with the host (a pure-torch reference that reads device values) cannot be captured: with ``strict``
that is an error; otherwise a warning is logged once and decode steps stay eager. Off CUDA (tests only),
``capture=False`` runs the same static-buffer path eagerly every step.

Tests: tests/engine/test_cuda_graphs.py (CPU static path; -m gpu capture); bench: bench/e2e.py.
"""

from __future__ import annotations

import logging
import traceback

import torch

from ..model import ForwardBatch
from .sampling import NUM_COLUMNS, HostSamplerOutput, SamplerOutput, SamplingFlags, SamplingTensors, pad_rows, sample

logger = logging.getLogger("qwen35_native")

_META_ROWS = 5  # token id, position, KV slot mapping, sequence length, GDN slot


class DecodeGraphs:
    def __init__(self, runner, sizes: list[int], strict: bool = False, capture: bool = True):
        if not sizes or min(sizes) < 1 or max(sizes) > runner.num_slots:
            raise ValueError(f"qwen35_native.LLM: CUDA graph batch sizes must be in [1, max_num_seqs="
                             f"{runner.num_slots}] (padding rows use slots no sequence holds), got {sizes}")
        self.runner = runner
        self.sizes = sorted(set(sizes))
        self.strict, self.capture = strict, capture
        self.enabled = True
        self.disabled_reason: str | None = None
        self.replays = 0
        G, W, dev = self.sizes[-1], runner.max_blocks_per_seq, runner.device
        pad_block, pad_slot = runner.pad_block, runner.pad_slot
        self.ids = torch.zeros(G, dtype=torch.long, device=dev)
        self.positions_flat = torch.zeros(3 * G, dtype=torch.long, device=dev)  # [3, g] views stay contiguous
        self.slot_mapping = torch.full((G,), pad_block * runner.block_size, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(G, dtype=torch.int32, device=dev)
        self.slots = torch.full((G,), pad_slot, dtype=torch.int32, device=dev)
        self.block_tables = torch.full((G, W), pad_block, dtype=torch.int32, device=dev)
        self.cu_seqlens = torch.arange(G + 1, dtype=torch.int32, device=dev)
        self.has_initial_state = torch.ones(G, dtype=torch.bool, device=dev)
        self.prefill_cu_seqlens = torch.zeros(1, dtype=torch.int32, device=dev)
        self.sampler_rows = pad_rows(G, runner.vocab_size).to(dev)
        pin = dev.type == "cuda"
        self.host_meta = _staging(_META_ROWS * G, torch.long, pin)
        self.dev_meta = torch.empty(_META_ROWS * G, dtype=torch.long, device=dev)
        self.host_table = _staging(G * W, torch.int32, pin)
        self.dev_table = torch.empty(G * W, dtype=torch.int32, device=dev)
        self.host_rows = _staging(G * NUM_COLUMNS, torch.float64, pin)
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.graphs: dict[tuple[int, SamplingFlags], tuple[torch.cuda.CUDAGraph | None, SamplerOutput | None]] = {}

    def positions(self, G: int) -> torch.Tensor:
        return self.positions_flat[:3 * G].view(3, G)

    def size_for(self, batch: int) -> int | None:
        return next((s for s in self.sizes if s >= batch), None)

    def run(self, plan) -> HostSamplerOutput | None:
        """Runs a decode-only plan (every row sampled) on the static buffers, through a graph once captured; None
        when it cannot (too large, not enough dead slots to pad with, graphs disabled): the caller runs it
        eagerly."""
        b = len(plan.query_lens)
        G = self.size_for(b) if self.enabled else None
        if G is None:
            return None
        pad_slots = ([self.runner.pad_slot] + list(plan.free_slots))[:G - b]
        if len(pad_slots) < G - b:
            return None
        host_rows, flags = SamplingTensors.pack(plan.sample_params, plan.sample_steps, self.runner.vocab_size)
        if flags.any_token_edits:  # logit biases, allow-lists, grammars: per-row token lists, eager steps
            return None
        flags = flags._replace(any_greedy=True)
        self._fill(plan, G, host_rows, pad_slots)
        entry = self.graphs.get((G, flags))
        if entry is None or entry[0] is None:
            out = self._first_run(G, flags)
        else:
            graph, out = entry
            graph.replay()
            self.replays += 1
        result = SamplerOutput(*(None if t is None else t[:b] for t in
                                 (out.token_ids, out.logprobs, out.ranks, out.top_logprobs, out.top_ids)))
        self.runner.record_sampled(self.slots[:b].long(), result)
        return result.to_host()

    def _first_run(self, G: int, flags: SamplingFlags) -> SamplerOutput:
        """This step eagerly on the static buffers, then (on CUDA) the capture of the same computation."""
        if not self.capture:
            self.graphs[(G, flags)] = (None, None)
            self.replays += 1
            return self._body(G, flags)
        out, graph, static_out = warm_up_and_capture(lambda: self._body(G, flags), self.pool)
        if graph is None:  # any capture failure: report it, then stay eager (or raise when strict)
            self._disable(G, static_out)
            return out
        self.graphs[(G, flags)] = (graph, static_out)
        logger.info("qwen35_native: captured the decode step for batch size %d in a CUDA graph", G)
        return out

    # ------------------------------------------------------------------------------------------------------------
    def _batch(self, G: int) -> ForwardBatch:
        return ForwardBatch(cu_seqlens=self.cu_seqlens[:G + 1], seq_lens=self.seq_lens[:G],
                            has_initial_state=self.has_initial_state[:G], slots=self.slots[:G],
                            block_tables=self.block_tables[:G], positions=self.positions(G),
                            slot_mapping=self.slot_mapping[:G], logits_indices=None, num_decodes=G,
                            prefill_cu_seqlens=self.prefill_cu_seqlens, num_tokens=G)

    def _body(self, G: int, flags: SamplingFlags) -> SamplerOutput:
        """What a graph holds: forward of G one-token decode steps, then the sampler, all on static buffers."""
        runner = self.runner
        logits = runner.model.forward_cached(self.ids[:G], self._batch(G), runner.cache)      # [G, vocab]
        tensors = SamplingTensors.from_packed(self.sampler_rows[:G], flags, runner.vocab_size)
        return sample(logits, tensors, *runner.penalty_masks(tensors, self.slots[:G].long()))

    def _disable(self, G: int, error: Exception) -> None:
        reason = (f"CUDA graph capture of the decode step (batch size {G}) failed: {describe_failure(error)}. An op "
                  f"on the decode path synchronises with the host (e.g. a pure-torch reference without a capturable "
                  f"kernel)")
        if self.strict:
            raise RuntimeError(f"qwen35_native.LLM: {reason}; pass cuda_graphs=None or False") from error
        self.enabled, self.disabled_reason = False, reason
        logger.warning("qwen35_native: %s; decode steps run eagerly", reason)

    def _fill(self, plan, G: int, host_rows: torch.Tensor, pad_slots: list[int]) -> None:
        """Copies the plan's rows into the static buffers, padding rows b..G-1 (GDN slots ``pad_slots``)."""
        r, b, bs = self.runner, len(plan.query_lens), self.runner.block_size
        offsets = plan.position_offsets or [0] * b
        ctx = plan.context_lens
        pad = G - b
        meta = [plan.token_ids + [0] * pad,
                [c + d for c, d in zip(ctx, offsets)] + [0] * pad,
                [t[c // bs] * bs + c % bs for t, c in zip(plan.block_tables, ctx)] + [r.pad_block * bs] * pad,
                [c + 1 for c in ctx] + [1] * pad,
                plan.slots + pad_slots]
        host_meta = self.host_meta[:_META_ROWS * G]
        host_meta.view(_META_ROWS, G).copy_(torch.tensor(meta, dtype=torch.long))
        dev_meta = self.dev_meta[:_META_ROWS * G]
        dev_meta.copy_(host_meta, non_blocking=True)
        dev_meta = dev_meta.view(_META_ROWS, G)
        self.ids[:G].copy_(dev_meta[0])
        self.positions(G).copy_(dev_meta[1].expand(3, G))
        self.slot_mapping[:G].copy_(dev_meta[2])
        self.seq_lens[:G].copy_(dev_meta[3])
        self.slots[:G].copy_(dev_meta[4])
        # Only the columns in use are copied; the kernels read a row's first ceil(seq_len / block_size) entries.
        table = r.tables.table(plan.slots, plan.block_tables, plan.table_keys)     # [b, w], padding-block filled
        w = table.shape[1]
        host_table = self.host_table[:G * w]
        host_table.view(G, w)[:b].copy_(table)
        host_table.view(G, w)[b:].fill_(r.pad_block)
        dev_table = self.dev_table[:G * w]
        dev_table.copy_(host_table, non_blocking=True)
        self.block_tables[:G, :w].copy_(dev_table.view(G, w))
        host_rows_buf = self.host_rows[:G * NUM_COLUMNS].view(G, NUM_COLUMNS)
        host_rows_buf[:b].copy_(host_rows)
        host_rows_buf[b:].copy_(pad_rows(pad, r.vocab_size))
        self.sampler_rows[:G].copy_(self.host_rows[:G * NUM_COLUMNS].view(G, NUM_COLUMNS), non_blocking=True)


def warm_up_and_capture(body, pool):
    """Runs ``body`` eagerly on a side stream (this step's result, and the warm-up that initialises cuBLAS
    workspaces and the like), then captures it into a CUDA graph (capture executes nothing, so no state changes).
    Returns ``(eager result, graph, graph's static result)``, or ``(eager result, None, the exception)`` when the
    capture failed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = body()
    current = torch.cuda.current_stream()
    current.wait_stream(stream)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            static_out = body()
    except Exception as e:
        torch.cuda.set_stream(current)  # torch.cuda.graph leaves its capture stream current when capture fails
        torch.cuda.synchronize()
        return out, None, e
    return out, graph, static_out


def describe_failure(error: BaseException, depth: int = 3) -> str:
    """``Type: message (raised at ...)`` of ``error`` and of up to ``depth - 1`` exceptions it was raised from or
    while handling: a library that fails while reporting a failure (e.g. formatting a tensor of a capturing stream)
    would otherwise hide the first one."""
    parts, seen = [], set()
    e: BaseException | None = error
    while e is not None and len(parts) < depth and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e} ({raised_where(e)})")
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return "; raised while handling: ".join(parts)


def raised_where(error: BaseException) -> str:
    """Where ``error`` was raised, for messages: its innermost frame, and the innermost frame of this package when
    that is another one (our line that called into torch). Frames show as ``folder/file.py:line in function``."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "raised at an unknown place"

    def show(frame: traceback.FrameSummary) -> str:
        parts = frame.filename.replace("\\", "/").split("/")
        return f"{'/'.join(parts[-2:])}:{frame.lineno} in {frame.name}"

    ours = [f for f in frames if "qwen35_native" in f.filename.replace("\\", "/")]
    where = f"raised at {show(frames[-1])}"
    if ours and ours[-1] is not frames[-1]:
        where += f", called from {show(ours[-1])}"
    return where


def _staging(numel: int, dtype: torch.dtype, pin: bool) -> torch.Tensor:
    t = torch.empty(numel, dtype=dtype)
    return t.pin_memory() if pin else t
