"""Every TMA GPU-twin case of test_tma.py, each in its own process, on an sm_90 GPU: which box loads / stores the
hardware runs as the emulator does, which it rejects (a fault such as 'illegal instruction' kills the CUDA context,
so one process per case keeps one failure from hiding the rest). A diagnostic for device sessions, not a test:

    python tests/emu/tma_gpu_cases.py            # table of every case
    python tests/emu/tma_gpu_cases.py one load 0 1   # one case (what the table runs)
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]


def run_one(kind: str, swizzle: int, i: int) -> str:
    import torch
    from test_tma import twin

    import qwen35_native._emu_tests  # noqa: F401

    gpu, emu, what = twin(torch.ops.q35_emu_tests, kind, swizzle, i)
    torch.cuda.synchronize()
    if torch.equal(gpu, emu):
        return f"ok        {what}"
    diff = (gpu.view(-1) != emu.view(-1)).nonzero().view(-1)
    return f"MISMATCH  {what}: {diff.numel()} of {emu.numel()} differ, first at {diff[:8].tolist()}"


def main() -> int:
    from test_tma import load_cases, store_cases

    cases = [("load", s, i) for s in (0, 32, 64, 128) for i in range(len(load_cases(s)))]
    cases += [("store", s, i) for s in (0, 32, 64, 128) for i in range(len(store_cases(s)))]
    cases += [("tile", s, 0) for s in (0, 32, 64, 128)]

    def sub(case):
        kind, s, i = case
        r = subprocess.run([sys.executable, __file__, "one", kind, str(s), str(i)], capture_output=True, text=True,
                           timeout=120)
        lines = (r.stdout + r.stderr).strip().splitlines()
        last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        return f"{kind:5s} sw{s:<3d} case {i}: " + (lines[-1] if r.returncode == 0 else f"FAILED    {last[:160]}")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(sub, cases))
    print("\n".join(results))
    return 0 if all(": ok" in r for r in results) else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "one":
        print(run_one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        sys.exit(main())
