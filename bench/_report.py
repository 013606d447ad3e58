"""Benchmark rows, the printed table (STYLE habit 20) and the JSON lines gathered by bench/gpu_suite.sh."""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
from dataclasses import asdict, dataclass, field

import torch

from _peaks import device_peaks

# Every Row this process made, in order: what emit_rows_made_on_term writes when a time limit stops the script
# before its own emit (gpu_suite.sh runs each benchmark under `timeout`, which sends SIGTERM).
MADE: list[Row] = []

COLUMNS = ["op", "shape", "dtype", "impl", "us(med)", "GB/s", "%peak BW", "TFLOP/s", "%peak FLOP", "vs peer"]


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    impl: str
    median_us: float
    bytes: int = 0
    flops: float = 0.0
    peer: str = ""  # name of the implementation compared against
    peer_us: float | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        MADE.append(self)

    def cells(self, peaks: tuple[float, float] | None) -> list[str]:
        sec = self.median_us * 1e-6
        gbps = self.bytes / sec / 1e9 if self.bytes and sec > 0 else None
        tflops = self.flops / sec / 1e12 if self.flops and sec > 0 else None
        pct_bw = 100 * gbps / (peaks[0] * 1e3) if gbps is not None and peaks else None
        pct_fl = 100 * tflops / peaks[1] if tflops is not None and peaks else None
        vs = f"{self.peer_us / self.median_us:.2f}x {self.peer}" if self.peer_us else ""
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        return [self.op, self.shape, self.dtype, self.impl, f"{self.median_us:.1f}", fmt(gbps, ".0f"),
                fmt(pct_bw, ".0f"), fmt(tflops, ".1f"), fmt(pct_fl, ".0f"), vs]


def environment() -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["sms"] = torch.cuda.get_device_properties(0).multi_processor_count
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True).stdout.strip()
        except OSError:
            env["driver"] = "?"
    else:
        env["gpu"] = "none (CPU dry run)"
    return env


def print_table(title: str, rows: list[Row]) -> None:
    env = environment()
    peaks = device_peaks(env.get("gpu", ""))
    print(f"## {title} | GPU {env['gpu']} | torch {env['torch']} | CUDA {env['cuda']} | "
          f"driver {env.get('driver', '-')}")
    table = [COLUMNS] + [r.cells(peaks) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for i, line in enumerate(table):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny shapes on the CPU (emulator); checks the code path")
    parser.add_argument("--json", default=None, help="append one JSON line per row to this file")
    parser.add_argument("--csv", default=None, help="write the rows as CSV to this file")


def emit_rows_made_on_term(title: str, args: argparse.Namespace) -> None:
    """On SIGTERM (a time limit), prints and writes the rows measured so far, then exits with status 124 (as
    `timeout` does): a benchmark cut short keeps its finished rows instead of losing all of them."""
    def on_term(signum, frame):
        print(f"!! {title}: stopped by a time limit after {len(MADE)} rows; these are the rows measured so far",
              flush=True)
        emit(title, list(MADE), args)
        sys.stdout.flush()
        raise SystemExit(124)

    signal.signal(signal.SIGTERM, on_term)


def emit(title: str, rows: list[Row], args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # written once: a late time limit must not write them again
    print_table(title, rows)
    if args.json:
        env = environment()
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({"bench": title, **asdict(r), "env": env}) + "\n")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(asdict(rows[0]).keys()) if rows else [])
            for r in rows:
                w.writerow(list(asdict(r).values()))
