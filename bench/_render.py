"""Renders the JSON lines written by the benchmarks (bench/*.py --json) into the markdown results table that
bench/gpu_suite.sh commits under bench/results/. Usage: python _render.py results.jsonl > out.md"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict

from _peaks import device_peaks
from _report import COLUMNS, Row


def render(lines: list[dict]) -> str:
    if not lines:
        return "no benchmark rows\n"
    env = lines[0]["env"]
    peaks = device_peaks(env.get("gpu", ""))
    out = [f"# Benchmarks on {env.get('gpu')}", "",
           f"torch {env.get('torch')}, CUDA {env.get('cuda')}, driver {env.get('driver', '-')}, "
           f"{env.get('sms', '?')} SMs. Peaks used for %: {peaks} (HBM TB/s, bf16 TFLOP/s) from bench/_peaks.py.", ""]
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for line in lines:
        groups.setdefault(line["bench"], []).append(line)
    for bench, rows in groups.items():
        out += [f"## {bench}", "", "| " + " | ".join(COLUMNS + ["notes"]) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
        for d in rows:
            fields = {k: d[k] for k in Row.__dataclass_fields__ if k in d}
            out.append("| " + " | ".join(Row(**fields).cells(peaks) + [d.get("notes", "")]) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(render([json.loads(line) for line in f if line.strip()]))
