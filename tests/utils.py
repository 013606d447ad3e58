"""Helpers for kernel tests (import as ``import utils`` or ``from utils import ...``; tests/conftest.py puts
this
directory on sys.path).

Running kernels under the emulator:
    run_under_schedules(fn, *args, schedules=("forward", "reverse"), **kwargs) -> output of the first
    schedule;
        asserts every schedule gives bit-identical outputs (tensors, or tuples/lists/dicts of them).
    on_cuda(*tensors) -> the tensors copied to the current CUDA device (for @pytest.mark.gpu twins).
Checking outputs:
    assert_bit_identical(actual, expected, what="output")
    assert_close_report(actual, expected, rtol, atol, what="output"): allclose with the worst element's
    index, its
        two values and the max abs difference in the message (STYLE habit 17).
    bits(t) -> t reinterpreted as integers of the same width (NaN-safe bitwise comparison).
Catching out-of-bounds writes and unwritten outputs:
    poison_(t) -> t filled with NaN (floating) or all-ones bits (integers), in place.
    poisoned_empty(shape, dtype, device="cpu")
    GuardedTensor(shape, dtype, device="cpu", guard=64): .tensor is a poisoned view inside a larger buffer
    whose
        `guard` elements before and after hold a sentinel; .check() raises if the kernel wrote outside the
        view.
Inputs:
    randn(shape, dtype, seed, device="cpu", scale=1.0); randint_small(shape, dtype, seed, low=-4, high=4) for
        exactly representable small-integer data (GEMMs compare exactly then).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """``t`` viewed as signed integers of its element width (bool as uint8)."""
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    return t.contiguous().view(_INT_OF_WIDTH[t.element_size()])


def _flatten(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if out is None:
        return []
    raise TypeError(f"expected tensors (or tuples/lists/dicts of them), got {type(out).__name__}")


def assert_bit_identical(actual, expected, what: str = "output") -> None:
    a_list, e_list = _flatten(actual), _flatten(expected)
    assert len(a_list) == len(e_list), f"{what}: {len(a_list)} tensors vs {len(e_list)}"
    for i, (a, e) in enumerate(zip(a_list, e_list)):
        assert a.shape == e.shape and a.dtype == e.dtype, (
            f"{what}[{i}]: {a.shape}/{a.dtype} vs {e.shape}/{e.dtype}"
        )
        ab, eb = bits(a.cpu()), bits(e.cpu())
        if not torch.equal(ab, eb):
            diff = (ab != eb).nonzero()
            idx = tuple(diff[0].tolist())
            raise AssertionError(
                f"{what}[{i}]: {diff.shape[0]} of {a.numel()} elements differ bitwise; first at "
                f"{idx}: {a.cpu()[idx].item()!r} vs {e.cpu()[idx].item()!r}"
            )


def run_under_schedules(fn: Callable, *args, schedules: Sequence[str] = ("forward", "reverse"), **kwargs):
    """Runs ``fn(*args, **kwargs)`` once per emulator thread order; all outputs must be bit-identical."""
    from qwen35_native import emulator

    outputs = []
    for order in schedules:
        with emulator.schedule(order):
            outputs.append(fn(*args, **kwargs))
    for order, out in zip(schedules[1:], outputs[1:]):
        assert_bit_identical(out, outputs[0], what=f"output under schedule {order!r} vs {schedules[0]!r}")
    return outputs[0]


def on_cuda(*tensors: torch.Tensor):
    moved = tuple(t.cuda() for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def assert_close_report(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float, what: str = "output"
) -> None:
    a, e = actual.detach().cpu().double(), expected.detach().cpu().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} vs expected {tuple(e.shape)}"
    bad = ~torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=False)
    if bad.any():
        err = (a - e).abs().nan_to_num(float("inf")) - rtol * e.abs()
        idx = tuple(torch.nonzero(err == err.max())[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {a.numel()} elements outside rtol={rtol}, atol={atol}; "
            f"worst at {idx}: got {a[idx].item()!r}, expected {e[idx].item()!r}; max abs diff "
            f"{(a - e).abs().nan_to_num(float('inf')).max().item():.3e}"
        )


def poison_(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    if t.is_contiguous():
        t.view(torch.uint8).fill_(0xFF)
    else:
        t.copy_(poisoned_empty(t.shape, t.dtype, t.device))
    return t


def poisoned_empty(shape, dtype: torch.dtype, device="cpu") -> torch.Tensor:
    return poison_(torch.empty(shape, dtype=dtype, device=device))


class GuardedTensor:
    """A poisoned tensor inside a buffer with sentinel guards around it, to catch out-of-bounds writes."""

    SENTINEL = 0x5A  # byte pattern of the guards

    def __init__(self, shape, dtype: torch.dtype, device="cpu", guard: int = 64):
        numel = 1
        for s in shape:
            numel *= int(s)
        self._buffer = torch.empty(numel + 2 * guard, dtype=dtype, device=device)
        self._buffer.view(torch.uint8).fill_(self.SENTINEL)
        self._guard = guard
        self.tensor = self._buffer[guard : guard + numel].view(shape)
        poison_(self.tensor)

    def check(self, what: str = "kernel") -> None:
        raw = self._buffer.view(torch.uint8)
        width = self._buffer.element_size()
        before = raw[: self._guard * width]
        after = raw[raw.numel() - self._guard * width :]
        for name, region in (("before", before), ("after", after)):
            bad = (region != self.SENTINEL).nonzero()
            if bad.numel():
                raise AssertionError(
                    f"{what} wrote {bad.shape[0]} byte(s) in the guard region {name} the output "
                    f"(first at byte {int(bad[0])} of the {self._guard}-element guard)"
                )


def randn(shape, dtype: torch.dtype, seed: int, device="cpu", scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype=dtype, device=device)


def randint_small(
    shape, dtype: torch.dtype, seed: int, low: int = -4, high: int = 4, device="cpu"
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, shape, generator=g).to(dtype=dtype, device=device)


# Measured figures (parity errors and the like) of the running test, as (section, key, value). conftest moves them
# into the test's report, which pytest-xdist sends to the main process; its terminal summary prints the largest
# value of each key per section.
MEASURED: list[tuple[str, str, float]] = []


def set_sm90a(monkeypatch, setting: str | None) -> None:
    """QWEN35_SM90A for the automatic path choice (csrc/torch/sm90a_policy.h): "0", "1" or None (unset)."""
    if setting is None:
        monkeypatch.delenv("QWEN35_SM90A", raising=False)
    else:
        monkeypatch.setenv("QWEN35_SM90A", setting)


def record_measure(section: str, key: str, value: float) -> float:
    """Notes a measured figure for the end-of-run summary; returns it (for use inside an assert)."""
    MEASURED.append((section, key, float(value)))
    return value


@contextlib.contextmanager
def one_intra_op_thread():
    """Tiny models are made of many small ops: one intra-op thread avoids OpenMP spin-waiting, which costs 5-10x on a
    shared 2-core machine. Restores the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
