"""Control of the SIMT emulator that runs the CUDA kernel sources on the CPU (csrc/emu/README.md).

Every op called on CPU tensors with ``backend="kernel"`` runs its CUDA source here. The settings are
process-wide; the environment variables give their initial values:

- thread order (``QWEN35_EMU_SCHEDULE``): ``"forward"`` (default), ``"reverse"`` or ``"random:<seed>"``;
  the order in which runnable CUDA threads (and blocks) are resumed. A kernel with a missing barrier gives
  different results under two orders; kernel tests run two and require bit-identical outputs.
- emulated architecture (``QWEN35_EMU_ARCH``): ``"sm_90"`` (default, 227 KiB dynamic shared memory per block)
  or ``"sm_80"`` (163 KiB).
- OS threads running blocks (``QWEN35_EMU_THREADS``): 1 by default (deterministic, and fastest when pytest
  runs one worker per core); 0 means one per CPU core.
- stack size of each emulated CUDA thread in KiB (``QWEN35_EMU_STACK_KB``): 256 by default.

Faults in emulated kernels (barrier divergence, deadlock, inconsistent warp masks, stack overflow, shared
memory out of bounds, invalid addresses, launches over the architecture's limits) raise ``RuntimeError``
with a
message naming the kernel, the block and the thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import _C

__all__ = [
    "available",
    "schedule",
    "get_schedule",
    "arch",
    "get_arch",
    "threads",
    "get_threads",
    "set_stack_size",
    "get_stack_size",
    "stats",
    "reset_stats",
]


def available() -> bool:
    """True when this build contains the emulator (the CPU implementation of every kernel op)."""
    return bool(_C.WITH_EMULATOR)


def _require() -> None:
    if not available():
        raise RuntimeError("qwen35_native.emulator: this build of qwen35_native has no SIMT emulator")


@contextlib.contextmanager
def _setting(setter, getter, value) -> Iterator[None]:
    _require()
    previous = getter()
    setter(value)
    try:
        yield
    finally:
        setter(previous)


def schedule(order: str):
    """Context manager: resume emulated threads in ``order`` ("forward", "reverse" or "random:<seed>")."""
    if not isinstance(order, str):
        raise TypeError(f"qwen35_native.emulator.schedule: order must be a str, got {type(order).__name__}")
    return _setting(_C._emu_set_schedule, _C._emu_get_schedule, order)


def get_schedule() -> str:
    _require()
    return _C._emu_get_schedule()


def arch(name: str):
    """Context manager: emulate the launch limits of ``name`` ("sm_80" or "sm_90")."""
    if not isinstance(name, str):
        raise TypeError(f"qwen35_native.emulator.arch: name must be a str, got {type(name).__name__}")
    return _setting(_C._emu_set_arch, _C._emu_get_arch, name)


def get_arch() -> str:
    _require()
    return _C._emu_get_arch()


def threads(n: int):
    """Context manager: run blocks on ``n`` OS threads (0 = one per CPU core)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"qwen35_native.emulator.threads: n must be an int, got {type(n).__name__}")
    return _setting(_C._emu_set_threads, _C._emu_get_threads, n)


def get_threads() -> int:
    _require()
    return _C._emu_get_threads()


def set_stack_size(kib: int) -> None:
    """Stack of each emulated CUDA thread, in KiB (>= 16). Kernels with big per-thread arrays may need
    more."""
    _require()
    _C._emu_set_stack_kib(int(kib))


def get_stack_size() -> int:
    _require()
    return _C._emu_get_stack_kib()


def stats() -> dict:
    """Counters since the last reset: launches, blocks, threads, context_switches, barriers,
    warp_collectives."""
    _require()
    return _C._emu_stats()


def reset_stats() -> None:
    _require()
    _C._emu_reset_stats()
