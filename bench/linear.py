"""The projections of a decode step (up to 64 rows): our skinny kernels (ops.linear / ops.swiglu_linear) against
cuBLAS (F.linear; for the shared expert's gate/up, F.linear + silu + mul as the model ran them before) on the same
inputs. Memory-bound: GB/s of the weight (and x, y) bytes, % of the HBM peak.

Two kinds of rows:
- one projection of the model (its real shape from the layer modules), L2 flushed before each repetition;
- "decode projections": every projection of one decode step (all layers, a distinct weight per layer, the shared
  expert's SwiGLU fused or not) replayed in a CUDA graph, ours vs cuBLAS: what the model's step saves or loses.
  Set QWEN35_SKINNY_LINEAR=0 to make the model itself use cuBLAS (bench/e2e.py).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, bench_graph, count_bytes
from e2e import config_json
from qwen35_native.model.config import Qwen35Config
from qwen35_native.model.layers import DecoderLayer
from qwen35_native.model.loading import resolve_backends
from qwen35_native.ops import linear, swiglu_linear


def projections(name: str) -> list[tuple[str, int, int, bool, int]]:
    """(what, N, K, swiglu, layers using it) of one decode step of config ``name``, from the layer modules (meta)."""
    text = Qwen35Config.from_dict(config_json(name)).text
    found: dict[tuple[str, int, int, bool], int] = {}
    for kind, tag in (("linear_attention", "gdn"), ("full_attention", "attn")):
        layers = sum(t == kind for t in text.layer_types)
        layer = DecoderLayer(text, kind, torch.bfloat16, "meta", resolve_backends(None))
        named = [(f"{tag} {p}", getattr(layer.mixer, p, None), False)
                 for p in ("in_proj", "out_proj", "qkv_proj", "o_proj")]
        named += [(p, getattr(layer.ffn, p, None), p.endswith("w13"))
                  for p in ("router", "shared_w13", "shared_w2", "w13", "w2")]
        for what, w, swiglu in named:
            if w is None or w.dim() != 2 or not layers:   # the MoE's w13 / w2 are [E, ...]: the expert kernels
                continue
            key = (what, w.shape[0] // 2 if swiglu else w.shape[0], w.shape[1], swiglu)
            found[key] = found.get(key, 0) + layers
    return [(*key, layers) for key, layers in found.items()]


def _cublas(x, w, swiglu):
    if not swiglu:
        return F.linear(x, w)
    gate, up = F.linear(x, w).chunk(2, dim=-1)
    return F.silu(gate) * up


def _ours(x, w, swiglu):
    return (swiglu_linear if swiglu else linear)(x, w, backend="kernel")


def shape_rows(name: str, m: int, device: str, reps: int) -> list[Row]:
    rows = []
    for what, n, k, swiglu, _ in projections(name):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(2 * n if swiglu else n, k, device=device, dtype=torch.bfloat16) * k ** -0.5
        ours = bench(lambda: _ours(x, w, swiglu), device=device, reps=reps)
        peer = bench(lambda: _cublas(x, w, swiglu), device=device, reps=reps)
        nbytes = count_bytes(x, w) + m * n * 2
        rows.append(Row(op="swiglu_linear" if swiglu else "linear", shape=f"{name} {what} M{m} N{n} K{k}",
                        dtype="bf16", impl="q35 skinny", median_us=ours["median_us"], bytes=nbytes,
                        flops=2.0 * m * k * w.shape[0], peer="cuBLAS", peer_us=peer["median_us"]))
    return rows


def step_rows(name: str, m: int, device: str, max_gb: float) -> list[Row]:
    """Every projection of a decode step, each layer its own weights, in one CUDA graph: ours vs cuBLAS."""
    shapes = projections(name)
    total = sum((2 * n if s else n) * k * 2 * layers for _, n, k, s, layers in shapes)
    scale = 1.0
    if total > max_gb * 1e9:      # fewer layers, scaled up (the weights of the step must not fit in L2 anyway)
        scale = total / (max_gb * 1e9)
    work = []
    for _, n, k, swiglu, layers in shapes:
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        for _ in range(max(1, round(layers / scale))):
            work.append((x, torch.randn(2 * n if swiglu else n, k, device=device, dtype=torch.bfloat16) * 0.02,
                         swiglu))
    nbytes = int(sum(count_bytes(w) for _, w, _ in work) * scale)

    def run(fn):
        return lambda: [fn(x, w, s) for x, w, s in work]

    if device == "cuda":
        ours, peer = bench_graph(run(_ours)), bench_graph(run(_cublas))
    else:
        ours, peer = bench(run(_ours), device=device, reps=2), bench(run(_cublas), device=device, reps=2)
    note = f"{len(work)} projections in a CUDA graph" + (f", x{scale:.2f} for the layers left out" if scale > 1
                                                           else "")
    return [Row(op="decode projections", shape=f"{name} M{m}", dtype="bf16", impl="q35 skinny",
                median_us=ours["median_us"] * scale, bytes=nbytes, peer="cuBLAS", peer_us=peer["median_us"] * scale,
                notes=note)]


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    configs = ["tiny-moe"] if args.dry_run else args.configs
    tokens = [1] if args.dry_run else args.tokens
    rows = []
    for name in configs:
        for m in tokens:
            rows += shape_rows(name, m, device, 2 if args.dry_run else args.reps)
        for m in ([1] if args.dry_run else args.step_tokens):
            rows += step_rows(name, m, device, 0.001 if args.dry_run else args.max_gb)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=["35b-a3b", "397b-tp8"])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--step-tokens", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--max-gb", type=float, default=8.0, help="weights of the graphed step at most (GB)")
    parser.add_argument("--reps", type=int, default=30)
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("linear", args)
    emit("linear", run(args), args)


if __name__ == "__main__":
    main()
