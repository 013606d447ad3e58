"""The hottest source lines of each kernel in an Nsight Compute report (bench/gpu_suite.sh profile): for every
profiled kernel, `ncu -i REPORT --page source --csv --print-source cuda,sass` (the cuda view alone carries no
metrics) and the lines with the most warp-stall samples, with the share of the kernel's samples and the stall columns
that dominate them; then the lines with the most excessive global sectors / shared wavefronts.

    python bench/_ncu_hotspots.py REPORT.ncu-rep [--top 15]
    python bench/_ncu_hotspots.py --csv PAGE.csv [--top 15]   # a source page saved on the GPU machine (no ncu here)

Tolerant by design: an ncu without the source page, or a report without source (built without -lineinfo), gives
a one-line explanation instead of a traceback."""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys


def _ncu(*args: str) -> str:
    r = subprocess.run(["ncu", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError((r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout) else "ncu failed")
    return r.stdout


def kernel_names(report: str) -> list[tuple[str, str]]:
    """Distinct kernels in the report, in launch order: (mangled name, name to print). Filters use the mangled
    name: the raw page's demangled names are shortened (the 2026-11-28 H200 report printed
    "void unnamed>::gdn_chunk_kernel<...>" for a kernel in q35::cuda::(anonymous namespace)), and a shortened name
    matches no kernel, which left every kernel without source rows."""
    def names(base: str) -> list[str]:
        rows = csv.DictReader(io.StringIO(_ncu("-i", report, "--page", "raw", "--csv", "--print-kernel-base", base,
                                               "--metrics", "gpu__time_duration.sum")))
        return [row.get("Kernel Name") or row.get("Function Name") or "" for row in rows]

    out: list[tuple[str, str]] = []
    for mangled, shown in zip(names("mangled"), names("demangled")):
        if mangled and mangled not in (m for m, _ in out):
            out.append((mangled, shown))
    return out


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def source_rows(text: str) -> list[dict[str, str]]:
    """The CUDA source lines of `ncu --page source --csv --print-source cuda,sass`, with their metrics. The page comes
    in one block per source file (the kernel's .cu and every header it includes): a `"File Path","<path>"` line
    (older ncu: "File Name"), a "Function Name" line, a header, then each source line followed by its SASS
    instructions (rows with an empty "Line No", left out here). Each row gets its file as "File"; the header's
    second "Source" column (the SASS text) is named "SASS"."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    path = "?"
    for fields in csv.reader(ln for ln in text.splitlines() if ln.startswith('"')):
        if fields and fields[0] in ("File Name", "File Path"):
            path, header = (fields[1] if len(fields) > 1 else "?"), None
        elif fields and fields[0] in ("Function Name", "Kernel Name"):
            continue
        elif header is None:
            header = [name if name not in fields[:i] else "SASS" for i, name in enumerate(fields)]
        elif len(fields) == len(header):
            row = dict(zip(header, fields))
            if row.get("Line No", "x") != "":
                rows.append({**row, "File": path})
    return rows


def hotspots(report: str, mangled: str, top: int) -> list[str]:
    text = _ncu("-i", report, "--page", "source", "--csv", "--print-source", "cuda,sass", "--kernel-name-base",
                "mangled", "--kernel-name", mangled, "--launch-count", "1")
    return format_hotspots(source_rows(text), top)


def format_hotspots(rows: list[dict[str, str]], top: int) -> list[str]:
    if not rows:
        return ["  (no source rows: was the kernel built with -lineinfo?)"]
    cols = [c for c in rows[0] if c != "File"]
    total_col = next((c for c in cols if "Warp Stall Sampling (All" in c), None)
    if total_col is None:
        return [f"  (no warp-stall sampling column; columns: {', '.join(cols[:12])})"]
    stall_cols = [c for c in cols if (c.startswith("stall_") or "Stall" in c) and c != total_col]
    total = sum(_number(r[total_col]) for r in rows) or 1.0
    out = []
    for r in sorted(rows, key=lambda r: -_number(r[total_col]))[:top]:
        share = _number(r[total_col]) / total
        tops = sorted(((c, _number(r[c])) for c in stall_cols), key=lambda cv: -cv[1])[:2]
        why = ", ".join(f"{c} {v:.0f}" for c, v in tops if v > 0)
        where = _where(r)
        src = (r.get("Source") or "").strip()[:90]
        out.append(f"  {100 * share:5.1f}%  {where:>28}  {src}" + (f"   [{why}]" if why else ""))
    return out + _excessive(rows, cols, top)


def _where(r: dict[str, str]) -> str:
    line = r.get("Line No") or r.get("Location") or r.get("Line") or r.get("#") or "?"
    return f"{r['File'].rsplit('/', 1)[-1]}:{line}"


def _excessive(rows: list[dict[str, str]], cols: list[str], top: int) -> list[str]:
    """The lines with the most excessive sectors / wavefronts (uncoalesced global or conflicting shared accesses):
    ncu's Source Counters name the share, these columns name the lines."""
    out = []
    for col in (c for c in cols if "Excessive" in c):
        hot = sorted((r for r in rows if _number(r[col]) > 0), key=lambda r: -_number(r[col]))[:top]
        total = sum(_number(r[col]) for r in rows) or 1.0
        if hot:
            out.append(f"  -- {col}")
            out += [f"  {100 * _number(r[col]) / total:5.1f}%  {_where(r):>28}  {(r.get('Source') or '').strip()[:90]}"
                    for r in hot]
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", nargs="?")
    parser.add_argument("--csv", help="a saved `--page source --csv --print-source cuda,sass` of one kernel")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if args.csv:
        with open(args.csv) as f:
            print("\n".join(format_hotspots(source_rows(f.read()), args.top)))
        return 0
    if not args.report:
        parser.error("give a report or --csv")
    try:
        names = kernel_names(args.report)
    except (RuntimeError, FileNotFoundError) as e:
        print(f"!! cannot read {args.report}: {e}")
        return 1
    for mangled, shown in names:
        print(f"== {shown}")
        try:
            print("\n".join(hotspots(args.report, mangled, args.top)))
        except RuntimeError as e:
            print(f"  (ncu source page unavailable: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
