"""wgmma.mma_async m64nNk16 on the emulator (and, with -m gpu, element by element against an H100): the
per-thread accumulator layout and the RS A layout of PTX_FACTS.md §6 with probe inputs, the placement of every
element of the shared-memory operands read through descriptors in each swizzle mode (no swizzle, 32B, 64B,
128B, every k16 step of a tile), and the numerics against torch.matmul. B also MN-major (imm-trans-b = 1: the
tile [k][n] as TMA lays down V [key][d]; PTX's canonical MN-major layouts, LOW confidence until the -m gpu twins
below pass on hardware)."""

from __future__ import annotations

import pytest
import torch
from wgmma_layouts import SWIZZLES, acc_coords, pack_a_frags, pack_acc, unpack_acc

from utils import assert_close_report, randint_small, randn, run_under_schedules

DTYPES = [torch.bfloat16, torch.float16]
DT_IDS = ["bf16", "f16"]
SW_IDS = [f"sw{s}" for s in SWIZZLES]
OK = 0


def wgmma(emu_ops, a, bt, c=None, *, a_regs=False, swizzle=128, variant=OK, device="cpu", b_mn_major=False):
    """D [64, n] = A [64, k] @ Bt [n, k]^T (+ C) through the probe kernel (k / 16 chained wgmmas); b_mn_major: B
    stored as a [k][n] tile and read with imm-trans-b."""
    n, k = bt.shape
    scale_d = c is not None
    c = torch.zeros(64, n) if c is None else c
    args = (
        a.contiguous().view(torch.int16),
        pack_a_frags(a) if a_regs else torch.zeros(k // 16, 128, 4, dtype=torch.int32),
        bt.contiguous().view(torch.int16),
        pack_acc(c),
    )
    args = tuple(t.to(device) for t in args)
    d = emu_ops.wgmma_probe(*args, n, k, a.dtype == torch.float16, a_regs, scale_d, swizzle, variant, b_mn_major)
    return d.cpu()


def probe_operands(n: int, dtype):
    """A and B with D[r][c] = r + 64 c (exact): A[r][0] = r, A[r][1] = 1; B[0][c] = 1, B[1][c] = 64 c."""
    a = torch.zeros(64, 16)
    a[:, 0] = torch.arange(64)
    a[:, 1] = 1
    bt = torch.zeros(n, 16)
    bt[:, 0] = 1
    bt[:, 1] = 64 * torch.arange(n)
    return a.to(dtype), bt.to(dtype)


def test_layout_formula_is_an_mma_c_fragment_per_warp():
    # PTX_FACTS §6: d[4j..4j+3] of warp w = the m16n8 C fragment of columns 8j..8j+7, rows offset by 16 w.
    from ptx_layouts import mma_c_coords

    for thread in (0, 1, 5, 31, 32, 77, 127):
        w, lane = divmod(thread, 32)
        coords = acc_coords(thread, 256)
        for j in range(32):
            frag = [(r + 16 * w, c + 8 * j) for r, c in mma_c_coords(lane)]
            assert coords[4 * j : 4 * j + 4] == frag, (thread, j)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("n", [8, 64, 256])
def test_accumulator_layout_per_thread(emu_ops, n, dtype):
    a, bt = probe_operands(n, dtype)
    d = wgmma(emu_ops, a, bt)
    for thread in range(128):
        want = torch.tensor([float(r + 64 * c) for r, c in acc_coords(thread, n)])
        assert torch.equal(d[thread], want), f"thread {thread}"


@pytest.mark.parametrize("n", [16, 128])
def test_accumulate_onto_c_per_thread(emu_ops, n):
    a, bt = probe_operands(n, torch.bfloat16)
    c = randint_small((64, n), torch.float32, seed=n, low=-100, high=100)
    d = wgmma(emu_ops, a, bt, c)
    probe = torch.tensor([[r + 64.0 * col for col in range(n)] for r in range(64)])
    assert torch.equal(unpack_acc(d), probe + c)
    assert torch.equal(d, pack_acc(probe + c))  # thread by thread


def test_rs_a_fragment_layout(emu_ops):
    # A [64, 16] of distinct f16 integers read out through B = I (N = 16): D = A exactly, element by element.
    a = torch.arange(64 * 16, dtype=torch.float32).view(64, 16).half()
    bt = torch.eye(16).half()
    assert torch.equal(unpack_acc(wgmma(emu_ops, a, bt, a_regs=True)), a.float())


def slice_selector(n: int, s: int, dtype):
    """Bt [n, 64] with Bt[j][16 s + j] = 1 for j < 16: D[:, j] = A[:, 16 s + j]."""
    bt = torch.zeros(n, 64)
    for j in range(min(n, 16)):
        bt[j, 16 * s + j] = 1
    return bt.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_descriptor_reads_a_where_the_layout_puts_it(emu_ops, swizzle, dtype):
    # The kernel stores A [64, 64] at KMajorTile::offset; each k16 step must read exactly its 16 columns.
    a = randn((64, 64), dtype, seed=swizzle)
    for s in range(4):
        d = unpack_acc(wgmma(emu_ops, a, slice_selector(16, s, dtype), swizzle=swizzle))
        assert torch.equal(d, a[:, 16 * s : 16 * s + 16].float()), f"k step {s}"


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_descriptor_reads_b_where_the_layout_puts_it(emu_ops, swizzle):
    # A[m][16 s + m] = 1 (m < 16) reads rows of Bt [64, 64] out: D[m][j] = Bt[j][16 s + m].
    bt = randn((64, 64), torch.bfloat16, seed=10 + swizzle)
    for s in range(4):
        a = slice_selector(64, s, torch.bfloat16)[:64]
        d = unpack_acc(wgmma(emu_ops, a, bt, swizzle=swizzle))
        assert torch.equal(d[:16], bt[:, 16 * s : 16 * s + 16].t().float()), f"k step {s}"
        assert torch.equal(d[16:], torch.zeros(48, 64))


@pytest.mark.parametrize("a_regs", [False, True], ids=["ss", "rs"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(("n", "swizzle"), [(8, 0), (64, 32), (128, 64), (256, 128)])
def test_wgmma_matches_matmul(emu_ops, n, swizzle, dtype, a_regs):
    a, bt = randint_small((64, 64), dtype, seed=n), randint_small((n, 64), dtype, seed=n + 1)
    c = randint_small((64, n), torch.float32, seed=n + 2, low=-64, high=64)
    d = wgmma(emu_ops, a, bt, c, a_regs=a_regs, swizzle=swizzle)
    assert torch.equal(unpack_acc(d), a.float() @ bt.float().t() + c)  # small integers: exact
    a, bt = randn((64, 64), dtype, seed=n + 3), randn((n, 64), dtype, seed=n + 4)
    d = wgmma(emu_ops, a, bt, a_regs=a_regs, swizzle=swizzle)
    assert_close_report(unpack_acc(d), a.double() @ bt.double().t(), rtol=1e-5, atol=1e-5, what="wgmma")


MN_CASES = [(8, 0), (16, 0), (64, 32), (128, 64), (64, 128), (256, 128)]  # (n, swizzle)
MN_IDS = [f"n{n}-sw{sw}" for n, sw in MN_CASES]


@pytest.mark.parametrize("a_regs", [False, True], ids=["ss", "rs"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(("n", "swizzle"), MN_CASES, ids=MN_IDS)
def test_mn_major_b_matches_matmul_and_k_major(emu_ops, n, swizzle, dtype, a_regs):
    """B [k][n] stored n-contiguous (MN-major, the k-steps 16 rows apart, column blocks of the swizzle width)
    through desc_mn_major and imm-trans-b: exactly A @ B on small integers, and the same bits as the K-major B."""
    a, bt = randint_small((64, 64), dtype, seed=n), randint_small((n, 64), dtype, seed=n + 1)
    c = randint_small((64, n), torch.float32, seed=n + 2, low=-64, high=64)
    kw = {"a_regs": a_regs, "swizzle": swizzle}
    d = wgmma(emu_ops, a, bt, c, b_mn_major=True, **kw)
    assert torch.equal(unpack_acc(d), a.float() @ bt.float().t() + c)
    a, bt = randn((64, 64), dtype, seed=n + 3), randn((n, 64), dtype, seed=n + 4)
    assert torch.equal(wgmma(emu_ops, a, bt, b_mn_major=True, **kw), wgmma(emu_ops, a, bt, **kw))


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_mn_major_b_reads_each_element_where_the_layout_puts_it(emu_ops, swizzle):
    """A selects one k row per output row (A[m][16 s + m] = 1): D[m][j] = B[16 s + m][j] for every element of a
    [64][64] MN-major B, every k16 step -- a misplaced element shows as a wrong value, not a wrong sum."""
    bt = randn((64, 64), torch.bfloat16, seed=40 + swizzle)
    for s in range(4):
        a = slice_selector(64, s, torch.bfloat16)[:64]
        d = unpack_acc(wgmma(emu_ops, a, bt, swizzle=swizzle, b_mn_major=True))
        assert torch.equal(d[:16], bt[:, 16 * s : 16 * s + 16].t().float()), f"k step {s}"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_wgmma_groups_in_flight_chain_onto_each_other(emu_ops, device):
    """One commit group per k16 step, each issued onto the accumulators of a group still in flight
    (wait_group<1>, the pipelined GEMM pattern): the same result as one group."""
    pipelined = 7
    a, bt = randn((64, 64), torch.bfloat16, seed=5), randn((128, 64), torch.bfloat16, seed=6)
    c = randn((64, 128), torch.float32, seed=7)
    d = wgmma(emu_ops, a, bt, c, variant=pipelined, device=device)
    assert not torch.isnan(d).any(), "a group in flight lost the accumulators it chains onto"
    assert torch.equal(d, wgmma(emu_ops, a, bt, c, device=device))


def test_wgmma_bit_identical_across_thread_orders(emu_ops):
    a, bt = randn((64, 64), torch.bfloat16, seed=7), randn((128, 64), torch.bfloat16, seed=8)
    c = randn((64, 128), torch.float32, seed=9)
    run_under_schedules(wgmma, emu_ops, a, bt, c, schedules=("forward", "reverse", "random:3"))


# ---- GPU twins: every mode above, element by element against the hardware ----


@pytest.mark.gpu
@pytest.mark.parametrize("n", [8, 64, 256])
def test_gpu_accumulator_layout(emu_ops, n):
    for dtype in DTYPES:
        a, bt = probe_operands(n, dtype)
        assert torch.equal(wgmma(emu_ops, a, bt, device="cuda"), wgmma(emu_ops, a, bt))


@pytest.mark.gpu
def test_gpu_rs_a_fragment_layout(emu_ops):
    a = torch.arange(64 * 16, dtype=torch.float32).view(64, 16).half()
    bt = torch.eye(16).half()
    gpu = wgmma(emu_ops, a, bt, a_regs=True, device="cuda")
    assert torch.equal(gpu, wgmma(emu_ops, a, bt, a_regs=True))


@pytest.mark.gpu
@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_gpu_descriptor_placement(emu_ops, swizzle):
    a = randn((64, 64), torch.bfloat16, seed=20 + swizzle)
    bt = randn((64, 64), torch.bfloat16, seed=30 + swizzle)
    for s in range(4):
        sel = slice_selector(64, s, torch.bfloat16)
        for args in ((a, sel[:16]), (sel, bt)):
            gpu = wgmma(emu_ops, *args, swizzle=swizzle, device="cuda")
            assert torch.equal(gpu, wgmma(emu_ops, *args, swizzle=swizzle)), f"k step {s}"


@pytest.mark.gpu
@pytest.mark.parametrize("a_regs", [False, True], ids=["ss", "rs"])
@pytest.mark.parametrize(("n", "swizzle"), [(8, 0), (64, 32), (128, 64), (256, 128)])
def test_gpu_wgmma_matches_emulator(emu_ops, n, swizzle, a_regs):
    for dtype in DTYPES:
        a, bt = randint_small((64, 64), dtype, seed=n), randint_small((n, 64), dtype, seed=n + 1)
        c = randint_small((64, n), torch.float32, seed=n + 2, low=-64, high=64)
        kw = {"a_regs": a_regs, "swizzle": swizzle}
        assert torch.equal(wgmma(emu_ops, a, bt, c, device="cuda", **kw), wgmma(emu_ops, a, bt, c, **kw))
        a, bt = randn((64, 64), dtype, seed=n + 3), randn((n, 64), dtype, seed=n + 4)
        assert_close_report(
            wgmma(emu_ops, a, bt, device="cuda", **kw),
            wgmma(emu_ops, a, bt, **kw),
            rtol=1e-5,
            atol=1e-5,
            what="gpu vs emulator",
        )


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "swizzle"), MN_CASES, ids=MN_IDS)
def test_gpu_mn_major_b_matches_emulator(emu_ops, n, swizzle):
    """The MN-major layouts (imm-trans-b) element by element against the hardware: placement (selector A) and
    products, SS and RS, bf16 and f16."""
    bt = randn((n, 64), torch.bfloat16, seed=50 + n + swizzle)
    for s in range(4):
        a = slice_selector(64, s, torch.bfloat16)[:64]
        kw = {"swizzle": swizzle, "b_mn_major": True}
        assert torch.equal(wgmma(emu_ops, a, bt, device="cuda", **kw), wgmma(emu_ops, a, bt, **kw)), f"k step {s}"
    for dtype in DTYPES:
        for a_regs in (False, True):
            a, bt = randint_small((64, 64), dtype, seed=n), randint_small((n, 64), dtype, seed=n + 1)
            c = randint_small((64, n), torch.float32, seed=n + 2, low=-64, high=64)
            kw = {"a_regs": a_regs, "swizzle": swizzle, "b_mn_major": True}
            assert torch.equal(wgmma(emu_ops, a, bt, c, device="cuda", **kw), wgmma(emu_ops, a, bt, c, **kw))
