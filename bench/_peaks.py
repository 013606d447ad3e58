"""Ceilings of the GPUs we report against (PERF_TARGETS.md): device-to-device copy bandwidth counting bytes read
plus written, and dense bf16 GEMM rate on random data. `bench/ceilings.py` re-measures them on the card at hand."""

from __future__ import annotations

PEAKS = {
    # name substring: (HBM TB/s measured as copy read+write, bf16 dense TFLOP/s measured)
    "H200": (4.3, 790.0),
    "H100": (3.0, 800.0),
}


def device_peaks(device_name: str) -> tuple[float, float] | None:
    for key, peaks in PEAKS.items():
        if key in device_name:
            return peaks
    return None
