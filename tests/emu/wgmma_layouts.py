"""sm_90a layouts written from ../shared/PTX_FACTS.md §6, independently of the C++ (q35/ptx/wgmma_layout.h and
the emulator), so that a layout error shows as a mismatch: wgmma accumulator and RS A fragments of warpgroup
thread T (w = T // 32, l = T % 32, g = l // 4, t = l % 4), and the byte placement of K-major tiles and TMA
boxes in each swizzle mode."""

from __future__ import annotations

import functools

import torch
from ptx_layouts import half_bits, to_int32

SWIZZLES = (0, 32, 64, 128)  # bytes of a swizzle row; 0 = none


def acc_coords(thread: int, n: int) -> list[tuple[int, int]]:
    """(row, col) of accumulators d[0 .. n/2) of a thread (HIGH)."""
    w, lane = divmod(thread, 32)
    g, t = divmod(lane, 4)
    return [(16 * w + g + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * t + (i & 1)) for i in range(n // 2)]


def a_frag_coords(thread: int) -> list[tuple[int, int]]:
    """(row, col) of RS A elements e = 0..7 (register e // 2, half e % 2): mma.m16n8k16 A, rows + 16 w (MED)."""
    w, lane = divmod(thread, 32)
    g, t = divmod(lane, 4)
    return [(16 * w + g + 8 * ((e >> 1) & 1), 2 * t + (e & 1) + 8 * (e >> 2)) for e in range(8)]


@functools.cache
def _acc_index(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.tensor([acc_coords(t, n) for t in range(128)])  # [128, n/2, 2]
    return coords[..., 0], coords[..., 1]


def pack_acc(c: torch.Tensor) -> torch.Tensor:
    """C [64, n] float32 -> raw per-thread accumulators [128, n/2]."""
    rows, cols = _acc_index(c.shape[1])
    return c[rows, cols].contiguous()


def unpack_acc(d: torch.Tensor) -> torch.Tensor:
    """Raw per-thread accumulators [128, n/2] -> D [64, n]."""
    n = 2 * d.shape[1]
    rows, cols = _acc_index(n)
    out = torch.full((64, n), float("nan"))
    out[rows, cols] = d
    return out


@functools.cache
def _a_frag_index() -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.tensor([a_frag_coords(t) for t in range(128)])  # [128, 8, 2]
    return coords[..., 0], coords[..., 1]


def pack_a_frags(a: torch.Tensor) -> torch.Tensor:
    """A [64, k] bf16/f16 -> RS registers [k/16, 128, 4] int32 (one k16 slice per wgmma)."""
    bits = half_bits(a)
    rows, cols = _a_frag_index()
    slices = [bits[rows, cols + 16 * s] for s in range(a.shape[1] // 16)]  # each [128, 8]
    elems = torch.stack(slices)
    return to_int32(elems[..., 0::2] | (elems[..., 1::2] << 16))


def swizzle(addr: int, mode: int) -> int:
    """Byte address after the swizzle: 16-byte chunk bits [4, 4+B) XOR row bits [7, 7+B), B = log2(mode / 16)."""
    if mode == 0:
        return addr
    mask = mode // 16 - 1
    return addr ^ (((addr >> 7) & mask) << 4)


def kmajor_offset(r: int, k: int, rows: int, mode: int) -> int:
    """Byte offset of 16-bit element (r, k) of a K-major tile [rows][cols] stored as TMA boxes of the mode's
    width (none: 8 columns of core matrices, LBO = rows * 16, SBO = 128; swizzled S: S / 2 columns, rows of S
    bytes, SBO = 8 S)."""
    row_bytes = 16 if mode == 0 else mode
    cols = row_bytes // 2
    return (k // cols) * rows * row_bytes + swizzle(r * row_bytes + (k % cols) * 2, mode)


def box_offset(index: tuple[int, ...], box: tuple[int, ...], elem: int, mode: int) -> int:
    """Byte offset in shared memory of element `index` (innermost first) of a TMA box (innermost first)."""
    linear = 0
    for i, b in zip(reversed(index), reversed(box)):
        linear = linear * b + i
    return swizzle(linear * elem, mode)
