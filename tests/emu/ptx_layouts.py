"""Register layouts of mma.sync and ldmatrix written from ../shared/PTX_FACTS.md, independently of the C++
(so a
layout error shows as a mismatch, not as two errors cancelling). Lane l: g = l >> 2, t = l & 3."""

from __future__ import annotations

import torch


def gt(lane: int) -> tuple[int, int]:
    return lane >> 2, lane & 3


def mma_a_coords(k: int, lane: int) -> list[tuple[int, int]]:
    """(row, col) of A elements a0.. of a lane (m16n8k16: 8 elements, m16n8k8: 4)."""
    g, t = gt(lane)
    if k == 16:
        return [(g + 8 * ((i >> 1) & 1), 2 * t + (i & 1) + 8 * (i >> 2)) for i in range(8)]
    return [(g + 8 * (i >> 1), 2 * t + (i & 1)) for i in range(4)]


def mma_b_coords(k: int, lane: int) -> list[tuple[int, int]]:
    """(k, n) of B elements b0.. of a lane (m16n8k16: 4 elements, m16n8k8: 2)."""
    g, t = gt(lane)
    return [(2 * t + (i & 1) + 8 * (i >> 1), g) for i in range(k // 4)]


def mma_c_coords(lane: int) -> list[tuple[int, int]]:
    """(row, col) of C/D elements c0..c3 of a lane."""
    g, t = gt(lane)
    return [(g + 8 * (i >> 1), 2 * t + (i & 1)) for i in range(4)]


def half_bits(x: torch.Tensor) -> torch.Tensor:
    """16-bit patterns of a bf16/f16 tensor as int64 in [0, 65536)."""
    return x.contiguous().view(torch.int16).to(torch.int64) & 0xFFFF


def to_int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 patterns held in int64 -> int32 tensor with the same bits."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def to_uint(words: torch.Tensor) -> torch.Tensor:
    return words.to(torch.int64) & 0xFFFFFFFF


def pack_pairs(elements: torch.Tensor) -> torch.Tensor:
    """[32, 2r] 16-bit patterns -> [32, r] registers, element 2i in the low half (PTX_FACTS.md §0)."""
    return elements[:, 0::2] | (elements[:, 1::2] << 16)


def gather(matrix_bits: torch.Tensor, coords) -> torch.Tensor:
    """[32, n] patterns of matrix elements at each lane's coords."""
    return torch.tensor([[int(matrix_bits[r, c]) for (r, c) in lane_coords] for lane_coords in coords])


def pack_a(a: torch.Tensor, k: int) -> torch.Tensor:
    """A [16, k] bf16/f16 -> [32, 4] int32 registers (unused registers zero)."""
    regs = pack_pairs(gather(half_bits(a), [mma_a_coords(k, lane) for lane in range(32)]))
    return to_int32(torch.nn.functional.pad(regs, (0, 4 - regs.shape[1])))


def pack_b(b: torch.Tensor, k: int) -> torch.Tensor:
    """B [k, 8] -> [32, 2] int32 registers."""
    regs = pack_pairs(gather(half_bits(b), [mma_b_coords(k, lane) for lane in range(32)]))
    return to_int32(torch.nn.functional.pad(regs, (0, 2 - regs.shape[1])))


def pack_c_f32(c: torch.Tensor) -> torch.Tensor:
    """C [16, 8] float32 -> [32, 4] int32 registers (raw f32 bits)."""
    bits = c.contiguous().view(torch.int32)
    return torch.tensor(
        [[int(bits[r, col]) for (r, col) in mma_c_coords(lane)] for lane in range(32)], dtype=torch.int32
    )


def unpack_d_f32(d: torch.Tensor) -> torch.Tensor:
    """[32, 4] int32 registers -> D [16, 8] float32."""
    out = torch.empty(16, 8, dtype=torch.float32)
    vals = d.contiguous().view(torch.float32)
    for lane in range(32):
        for i, (r, col) in enumerate(mma_c_coords(lane)):
            out[r, col] = vals[lane, i]
    return out


def pack_c_f16(c: torch.Tensor) -> torch.Tensor:
    """C [16, 8] float16 -> [32, 4] int32 (2 f16x2 registers, then zeros)."""
    regs = pack_pairs(gather(half_bits(c), [mma_c_coords(lane) for lane in range(32)]))
    return to_int32(torch.nn.functional.pad(regs, (0, 2)))


def unpack_d_f16(d: torch.Tensor) -> torch.Tensor:
    out = torch.empty(16, 8, dtype=torch.int64)
    words = to_uint(d)
    for lane in range(32):
        for i, (r, col) in enumerate(mma_c_coords(lane)):
            out[r, col] = (words[lane, i >> 1] >> (16 * (i & 1))) & 0xFFFF
    return torch.where(out >= 2**15, out - 2**16, out).to(torch.int16).view(torch.float16)


def ldmatrix_expected(rows: torch.Tensor, slot: list[int], num: int, trans: bool) -> torch.Tensor:
    """Registers [32, 4] (as uint patterns in int64) that ldmatrix.x{num} delivers (PTX_FACTS.md §3).

    rows: [slots, 8] 16-bit patterns; slot[l]: the row lane l addresses. M_j[r][c] = rows[slot[8j + r], c].
    """

    def m(j, r, c):
        return int(rows[slot[8 * j + r], c])

    out = torch.zeros(32, 4, dtype=torch.int64)
    for lane in range(32):
        g, t = gt(lane)
        for j in range(num):
            lo, hi = (m(j, 2 * t, g), m(j, 2 * t + 1, g)) if trans else (m(j, g, 2 * t), m(j, g, 2 * t + 1))
            out[lane, j] = lo | (hi << 16)
    return out
