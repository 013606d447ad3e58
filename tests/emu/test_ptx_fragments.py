"""Per-lane register contents of ldmatrix / stmatrix / mma.sync on the emulator (and on a GPU, where the same
probe kernels run) against PTX_FACTS.md: the layout formulas, their worked examples (§7), and whole
fragments on
random data. A GEMM that comes out right is not enough: these tests look at single lanes."""

from __future__ import annotations

import pytest
import torch
from ptx_layouts import (
    half_bits,
    ldmatrix_expected,
    mma_a_coords,
    mma_b_coords,
    mma_c_coords,
    pack_a,
    pack_b,
    pack_c_f16,
    pack_c_f32,
    to_int32,
    to_uint,
    unpack_d_f16,
    unpack_d_f32,
)

from utils import on_cuda, randint_small, randn

PROBE_SLOTS = 40  # rows of the probe's smem buffer (kProbeSlots)
DECOY_SLOT = 39
NUMS = (1, 2, 4)

# PTX_FACTS.md §7, mma m16n8k16: lane -> A (a0..a7), B (b0..b3) as (k, n), C (c0..c3).
MMA_TABLE = {
    0: (
        [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)],
        [(0, 0), (1, 0), (8, 0), (9, 0)],
        [(0, 0), (0, 1), (8, 0), (8, 1)],
    ),
    1: (
        [(0, 2), (0, 3), (8, 2), (8, 3), (0, 10), (0, 11), (8, 10), (8, 11)],
        [(2, 0), (3, 0), (10, 0), (11, 0)],
        [(0, 2), (0, 3), (8, 2), (8, 3)],
    ),
    4: (
        [(1, 0), (1, 1), (9, 0), (9, 1), (1, 8), (1, 9), (9, 8), (9, 9)],
        [(0, 1), (1, 1), (8, 1), (9, 1)],
        [(1, 0), (1, 1), (9, 0), (9, 1)],
    ),
    5: (
        [(1, 2), (1, 3), (9, 2), (9, 3), (1, 10), (1, 11), (9, 10), (9, 11)],
        [(2, 1), (3, 1), (10, 1), (11, 1)],
        [(1, 2), (1, 3), (9, 2), (9, 3)],
    ),
    31: (
        [(7, 6), (7, 7), (15, 6), (15, 7), (7, 14), (7, 15), (15, 14), (15, 15)],
        [(6, 7), (7, 7), (14, 7), (15, 7)],
        [(7, 6), (7, 7), (15, 6), (15, 7)],
    ),
}
# §7, ldmatrix.x4: lane -> (low, high) as (row, col) of M_j, without and with .trans.
LDMATRIX_TABLE = {
    0: (((0, 0), (0, 1)), ((0, 0), (1, 0))),
    1: (((0, 2), (0, 3)), ((2, 0), (3, 0))),
    4: (((1, 0), (1, 1)), ((0, 1), (1, 1))),
    5: (((1, 2), (1, 3)), ((2, 1), (3, 1))),
    31: (((7, 6), (7, 7)), ((6, 7), (7, 7))),
}


def test_layout_formulas_match_worked_examples():
    for lane, (a, b, c) in MMA_TABLE.items():
        assert mma_a_coords(16, lane) == a, lane
        assert mma_b_coords(16, lane) == b, lane
        assert mma_c_coords(lane) == c, lane
    assert mma_a_coords(8, 31) == [(7, 6), (7, 7), (15, 6), (15, 7)]
    assert mma_b_coords(8, 31) == [(6, 7), (7, 7)]


def random_rows(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**15), 2**15, (PROBE_SLOTS, 8), generator=g, dtype=torch.int64).to(torch.int16)


def scattered_slots(num: int, seed: int) -> list[int]:
    """Lane l addresses a distinct, shuffled row for l < 8 * num; the other lanes point at a decoy row."""
    g = torch.Generator().manual_seed(seed)
    used = torch.randperm(DECOY_SLOT, generator=g)[: 8 * num].tolist()
    return used + [DECOY_SLOT] * (32 - 8 * num)


def run_ldmatrix(emu_ops, rows, slot, num, trans, device="cpu"):
    rows_t, slot_t = rows.to(device), torch.tensor(slot, dtype=torch.int32, device=device)
    return emu_ops.ldmatrix_probe(rows_t, slot_t, num, trans).cpu()


@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
@pytest.mark.parametrize("num", NUMS, ids=[f"x{n}" for n in NUMS])
def test_ldmatrix_lanes(emu_ops, num, trans):
    rows = random_rows(seed=num * 2 + trans)
    slot = scattered_slots(num, seed=num)
    regs = to_uint(run_ldmatrix(emu_ops, rows, slot, num, trans))
    expected = ldmatrix_expected(half_bits(rows).view(PROBE_SLOTS, 8), slot, num, trans)
    assert torch.equal(regs[:, :num], expected[:, :num])


def test_ldmatrix_worked_table(emu_ops):
    # M_j[r][c] = 64 j + 8 r + c; lane l addresses row l (matrix l // 8, row l % 8)
    values = torch.arange(PROBE_SLOTS * 8, dtype=torch.int16).view(PROBE_SLOTS, 8)
    slot = list(range(32))
    for trans in (False, True):
        regs = to_uint(run_ldmatrix(emu_ops, values, slot, 4, trans))
        for lane, entries in LDMATRIX_TABLE.items():
            (lo_r, lo_c), (hi_r, hi_c) = entries[trans]
            for j in range(4):
                assert int(regs[lane, j]) == (64 * j + 8 * lo_r + lo_c) | (
                    (64 * j + 8 * hi_r + hi_c) << 16
                ), (lane, j, trans)


def test_ldmatrix_x4_gives_mma_a_fragment(emu_ops):
    # PTX_FACTS.md §3: lane address &A[l % 16][8 * (l / 16)] makes R0..R3 the m16n8k16 A fragment.
    a = randn((16, 16), torch.bfloat16, seed=3)
    rows = torch.zeros(PROBE_SLOTS, 8, dtype=torch.int16)
    rows[:32] = a.view(torch.int16).reshape(16, 2, 8).reshape(32, 8)  # slot 2 r + h holds A[r][8h .. 8h+7]
    slot = [2 * (lane % 16) + lane // 16 for lane in range(32)]
    regs = run_ldmatrix(emu_ops, rows, slot, 4, False)
    assert torch.equal(regs, pack_a(a, 16))
    lane5 = to_uint(regs[5])
    bits = half_bits(a)
    for j, (r, c) in enumerate(
        [(1, 2), (9, 2), (1, 10), (9, 10)]
    ):  # §7: lane 5 gets A[1][2..3], A[9][2..3], ...
        assert int(lane5[j]) == int(bits[r, c]) | (int(bits[r, c + 1]) << 16)


def stmatrix_expected(regs: torch.Tensor, slot: list[int], rows_init: torch.Tensor, num: int, trans: bool):
    out = half_bits(rows_init).clone()
    words = to_uint(regs)
    for j in range(num):
        for r in range(8):
            for c in range(8):
                lane, half = (4 * c + r // 2, r % 2) if trans else (4 * r + c // 2, c % 2)
                out[slot[8 * j + r], c] = (int(words[lane, j]) >> (16 * half)) & 0xFFFF
    return out


@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
@pytest.mark.parametrize("num", NUMS, ids=[f"x{n}" for n in NUMS])
def test_stmatrix_lanes(emu_ops, num, trans):
    g = torch.Generator().manual_seed(10 + num)
    regs = to_int32(torch.randint(0, 2**32, (32, 4), generator=g, dtype=torch.int64))
    slot = scattered_slots(num, seed=20 + num)
    rows_init = random_rows(seed=30 + num)
    rows = emu_ops.stmatrix_probe(regs, torch.tensor(slot, dtype=torch.int32), rows_init, num, trans)
    assert torch.equal(half_bits(rows), stmatrix_expected(regs, slot, rows_init, num, trans))


def test_stmatrix_inverts_ldmatrix(emu_ops):
    rows = random_rows(seed=5)
    slot = scattered_slots(4, seed=6)
    for trans in (False, True):
        regs = run_ldmatrix(emu_ops, rows, slot, 4, trans)
        back = emu_ops.stmatrix_probe(
            regs, torch.tensor(slot, dtype=torch.int32), torch.zeros_like(rows), 4, trans
        )
        used = sorted(set(slot[:32]))
        assert torch.equal(back[used], rows[used])


MMA_CASES = [(16, torch.bfloat16), (16, torch.float16), (8, torch.bfloat16), (8, torch.float16)]
MMA_IDS = [f"k{k}-{str(dt)[6:]}" for k, dt in MMA_CASES]


def run_mma(emu_ops, a, b, c, k, device="cpu", f16_acc=False):
    dtype = a.dtype
    regs_a, regs_b = pack_a(a, k), pack_b(b, k)
    regs_c = pack_c_f16(c) if f16_acc else pack_c_f32(c)
    d = emu_ops.mma_probe(
        regs_a.to(device), regs_b.to(device), regs_c.to(device), k, dtype == torch.float16, f16_acc
    ).cpu()
    return unpack_d_f16(d) if f16_acc else unpack_d_f32(d)


@pytest.mark.parametrize(("k", "dtype"), MMA_CASES, ids=MMA_IDS)
def test_mma_fragments_small_integers(emu_ops, k, dtype):
    # Small integers: every product and sum is exact, so any misplaced element changes D.
    a = randint_small((16, k), dtype, seed=k)
    b = randint_small((k, 8), dtype, seed=k + 1)
    c = randint_small((16, 8), torch.float32, seed=k + 2, low=-8, high=8)
    d = run_mma(emu_ops, a, b, c, k)
    assert torch.equal(d, a.float() @ b.float() + c)


@pytest.mark.parametrize(("k", "dtype"), MMA_CASES, ids=MMA_IDS)
def test_mma_random_values_round_once(emu_ops, k, dtype):
    a, b = randn((16, k), dtype, seed=40 + k), randn((k, 8), dtype, seed=41 + k)
    c = randn((16, 8), torch.float32, seed=42)
    d = run_mma(emu_ops, a, b, c, k)
    exact = a.double() @ b.double() + c.double()
    assert torch.equal(d, exact.float())  # exact products summed in double, rounded once


def test_mma_f16_accumulators(emu_ops):
    a, b = randint_small((16, 16), torch.float16, seed=50), randint_small((16, 8), torch.float16, seed=51)
    c = randint_small((16, 8), torch.float16, seed=52, low=-8, high=8)
    d = run_mma(emu_ops, a, b, c, 16, f16_acc=True)
    assert torch.equal(d, (a.float() @ b.float() + c.float()).half())


@pytest.mark.gpu
@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
@pytest.mark.parametrize("num", NUMS, ids=[f"x{n}" for n in NUMS])
def test_gpu_ldmatrix_stmatrix_match_emulator(emu_ops, num, trans):
    rows = random_rows(seed=60 + num)
    slot = scattered_slots(num, seed=61)
    expected = ldmatrix_expected(half_bits(rows), slot, num, trans)
    gpu = to_uint(run_ldmatrix(emu_ops, rows, slot, num, trans, device="cuda"))
    assert torch.equal(gpu[:, :num], expected[:, :num])
    regs = run_ldmatrix(emu_ops, rows, slot, num, trans)
    slot_t, init = torch.tensor(slot, dtype=torch.int32), random_rows(seed=62)
    cpu_rows = emu_ops.stmatrix_probe(regs, slot_t, init, num, trans)
    gpu_rows = emu_ops.stmatrix_probe(*on_cuda(regs, slot_t, init), num, trans).cpu()
    assert torch.equal(gpu_rows, cpu_rows)


@pytest.mark.gpu
@pytest.mark.parametrize(("k", "dtype"), MMA_CASES, ids=MMA_IDS)
def test_gpu_mma_fragments_match_emulator(emu_ops, k, dtype):
    a = randint_small((16, k), dtype, seed=70 + k)
    b = randint_small((k, 8), dtype, seed=71 + k)
    c = randint_small((16, 8), torch.float32, seed=72, low=-8, high=8)
    assert torch.equal(run_mma(emu_ops, a, b, c, k, device="cuda"), run_mma(emu_ops, a, b, c, k))
    if k == 16 and dtype == torch.float16:
        c16 = c.half()
        assert torch.equal(
            run_mma(emu_ops, a, b, c16, k, device="cuda", f16_acc=True),
            run_mma(emu_ops, a, b, c16, k, f16_acc=True),
        )
