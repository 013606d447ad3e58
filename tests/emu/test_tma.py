"""TMA (cp.async.bulk.tensor) tile copies on the emulator and, with -m gpu, against an H100 byte by byte: where
every element of a 2D/3D box lands in shared memory in each swizzle mode, zero fill of the parts of a box
outside the tensor, strided (sliced) tensors, stores that write only the in-bounds part, and the misuse that
must be caught (reading the box before its mbarrier completes, a store without fence.proxy.async, an
unfenced mbarrier.init, tensor maps the driver would reject)."""

from __future__ import annotations

import itertools

import pytest
import torch
from wgmma_layouts import SWIZZLES, box_offset, kmajor_offset

from utils import on_cuda, run_under_schedules

SW_IDS = [f"sw{s}" for s in SWIZZLES]
OK, EARLY_READ, NO_STORE_FENCE, NO_INIT_FENCE = 0, 1, 2, 3


def random_tensor(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(-(2**31), 2**31, shape, generator=g, dtype=torch.int64)
    return bits.to(torch.int32).view(torch.int32).to(dtype) if dtype != torch.int32 else bits.to(torch.int32)


def expected_load(x: torch.Tensor, box, coords, swizzle) -> torch.Tensor:
    """Shared bytes of the box (innermost first) at coords: element i at box_offset(i), zeros outside x."""
    elem = x.element_size()
    out = torch.zeros(elem * int(torch.tensor(box).prod()), dtype=torch.uint8)
    rank = x.dim()
    for index in itertools.product(*(range(b) for b in box)):
        g = [c + i for c, i in zip(coords, index)]
        inside = all(0 <= g[d] < x.shape[rank - 1 - d] for d in range(rank))
        value = x[tuple(reversed(g))].reshape(1).view(torch.uint8) if inside else torch.zeros(elem, dtype=torch.uint8)
        off = box_offset(index, tuple(box), elem, swizzle)
        out[off : off + elem] = value
    return out


# (shape, dtype, box innermost first, coords innermost first)
# Box starts in a row are 16-byte multiples: the GPU faults on others (test_unaligned_box_start_is_caught).
def load_cases(swizzle):
    span = 16 if swizzle == 0 else swizzle
    shift = max(span // 4, 8)  # elements: half the box width, or one 16-byte chunk
    return [
        ((24, 80), torch.int16, (span // 2, 16), (8, 4)),  # inside
        ((20, 72), torch.int16, (span // 2, 16), (72 - shift, 12)),  # past the last rows (and columns: wide boxes)
        ((20, 72), torch.int16, (span // 2, 8), (-shift, -3)),  # before the first column and row
        ((20, 72), torch.int16, (span // 2, 8), (64, 0)),  # columns [:68] of rows 72 apart: the box
        # starts 16-byte aligned and runs past the last column (x is sliced by case_tensor)
        ((3, 10, 40), torch.float32, (span // 4, 8, 2), (4, 5, 2)),  # 3D, 4-byte elements, past rows / planes
    ]


def case_tensor(i, shape, dtype, seed, device="cpu"):
    """Load case i's tensor: case 3 keeps columns [:68] of rows 72 elements apart (a strided view, on `device`)."""
    x = random_tensor(shape, dtype, seed).to(device)
    return x[:, :68] if i == 3 else x


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_load_places_every_element(emu_ops, swizzle):
    for i, (shape, dtype, box, coords) in enumerate(load_cases(swizzle)):
        x = case_tensor(i, shape, dtype, seed=swizzle + i)
        got = emu_ops.tma_load_probe(x, list(box), list(coords), swizzle, OK)
        assert torch.equal(got, expected_load(x, box, coords, swizzle)), f"case {i}: {shape} {box} {coords}"


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_tma_writes_tiles_where_the_layout_helper_reads_them(emu_ops, swizzle):
    # A K-major tile [64][128] TMA-loaded box by box, read back through KMajorTile::offset (the C++ helper that
    # wgmma descriptors are built from), and the Python copy of that layout against the box placement.
    x = random_tensor((64, 128), torch.int16, seed=50 + swizzle)
    assert torch.equal(emu_ops.tma_tile_probe(x, swizzle), x)
    span = 16 if swizzle == 0 else swizzle
    for r, k in [(0, 0), (5, 3), (17, span // 2 - 1), (63, 127), (40, span // 2 + 1)]:
        box, col = divmod(k, span // 2)
        assert kmajor_offset(r, k, 64, swizzle) == 64 * span * box + box_offset((col, r), (span // 2, 64), 2, swizzle)


def test_load_of_a_strided_slice(emu_ops):
    wide = random_tensor((16, 128), torch.int16, seed=3)
    x = wide[:, 8:72]  # rows 256 bytes apart, 64 columns
    got = emu_ops.tma_load_probe(x, [64, 16], [0, 0], 128, OK)
    assert torch.equal(got, expected_load(x.contiguous(), (64, 16), (0, 0), 128))


def store_cases(swizzle):
    """(box, coords) of the store cases into a [20, 72] int16 tensor: inside, and past the last rows."""
    span = 16 if swizzle == 0 else swizzle
    return [([span // 2, 16], [8, 4]), ([span // 2, 16], [72 - max(span // 4, 8), 12])]


def store_bytes(box, seed):
    return torch.randint(0, 256, (2 * box[0] * box[1],), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def expected_store(out, smem, box, coords, swizzle):
    exp = out.clone()
    elem = out.element_size()
    rank = out.dim()
    for index in itertools.product(*(range(b) for b in box)):
        g = [c + i for c, i in zip(coords, index)]
        if all(0 <= g[d] < out.shape[rank - 1 - d] for d in range(rank)):
            off = box_offset(index, tuple(box), elem, swizzle)
            exp[tuple(reversed(g))] = smem[off : off + elem].view(out.dtype)[0]
    return exp


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_store_writes_only_the_inside(emu_ops, swizzle):
    for i, (box, coords) in enumerate(store_cases(swizzle)):
        out = torch.full((20, 72), -7, dtype=torch.int16)
        smem = store_bytes(box, i)
        expect = expected_store(out, smem, box, coords, swizzle)
        emu_ops.tma_store_probe(out, smem, list(box), list(coords), swizzle, OK)
        assert torch.equal(out, expect), f"case {i}"


def test_load_bit_identical_across_thread_orders(emu_ops):
    x = random_tensor((40, 64), torch.int16, seed=9)
    run_under_schedules(emu_ops.tma_load_probe, x, [64, 32], [0, 20], 128, OK)


def test_reading_the_box_before_its_barrier_is_caught(emu_ops):
    x = random_tensor((16, 64), torch.int16, seed=4)
    got = emu_ops.tma_load_probe(x, [64, 16], [0, 0], 128, EARLY_READ)
    assert not torch.equal(got, expected_load(x, (64, 16), (0, 0), 128))
    assert torch.all(got == 0xFF)  # the box holds poison until the copy lands at the wait


def test_store_without_proxy_fence_is_caught(emu_ops):
    out = torch.zeros(16, 64, dtype=torch.int16)
    smem = torch.arange(2 * 64 * 16, dtype=torch.int64).to(torch.uint8)
    with pytest.raises(RuntimeError, match="not made visible to the async proxy"):
        emu_ops.tma_store_probe(out, smem, [64, 16], [0, 0], 128, NO_STORE_FENCE)


def test_unfenced_mbarrier_init_is_caught(emu_ops):
    x = random_tensor((16, 64), torch.int16, seed=5)
    with pytest.raises(RuntimeError, match="did not fence"):
        emu_ops.tma_load_probe(x, [64, 16], [0, 0], 128, NO_INIT_FENCE)


@pytest.mark.parametrize("start", [68, -4, 1], ids=["past-the-end", "before-the-start", "inside"])
def test_unaligned_box_start_is_caught(emu_ops, start):
    # An H200 faulted ("illegal instruction") on loads and stores of boxes starting 136 and -8 bytes into a row
    # (tma_gpu_cases.py); the emulator must reject them rather than copy as if they were fine.
    x = random_tensor((20, 72), torch.int16, seed=6)
    with pytest.raises(RuntimeError, match="16-byte multiple"):
        emu_ops.tma_load_probe(x, [8, 16], [start, 12], 0, OK)
    with pytest.raises(RuntimeError, match="16-byte multiple"):
        emu_ops.tma_store_probe(x, torch.zeros(256, dtype=torch.uint8), [8, 16], [start, 12], 0, OK)


@pytest.mark.parametrize(
    ("shape", "box", "swizzle", "pattern"),
    [
        ((16, 64), [32, 16], 128, "exactly the swizzle span"),  # 64-byte rows in a 128-byte swizzle
        ((16, 60), [64, 16], 0, "multiple of 16"),  # 120-byte rows: stride not a multiple of 16
        ((16, 64), [64, 300], 0, r"box must be in \[1, 256\]"),
        ((16, 64), [4, 16], 0, "multiple of 16 bytes"),
    ],
)
def test_invalid_tensor_maps_are_rejected(emu_ops, shape, box, swizzle, pattern):
    x = torch.zeros(shape, dtype=torch.int16)
    with pytest.raises(RuntimeError, match=pattern):
        emu_ops.tma_load_probe(x, box, [0, 0], swizzle, OK)


# ---- GPU twins ----

def twin(emu_ops, kind: str, swizzle: int, i: int):
    """(GPU result, emulator result, what) of TMA case i of `kind` ("load": load_cases; "store": store_cases;
    "tile": a K-major tile TMA-loaded box by box). Used by the GPU tests
    below and by tma_gpu_cases.py, which runs each case in its own process."""
    if kind == "load":
        shape, dtype, box, coords = load_cases(swizzle)[i]
        seed = 40 + swizzle + i
        gpu = emu_ops.tma_load_probe(case_tensor(i, shape, dtype, seed, "cuda"), list(box), list(coords), swizzle, OK)
        emu = emu_ops.tma_load_probe(case_tensor(i, shape, dtype, seed), list(box), list(coords), swizzle, OK)
        return gpu.cpu(), emu, f"{tuple(shape)} {dtype} box {box} at {coords}"
    if kind == "store":
        box, coords = store_cases(swizzle)[i]
        smem = store_bytes(box, i)
        emu, gpu = torch.full((20, 72), -7, dtype=torch.int16), torch.full((20, 72), -7, dtype=torch.int16).cuda()
        emu_ops.tma_store_probe(emu, smem, box, coords, swizzle, OK)
        emu_ops.tma_store_probe(gpu, on_cuda(smem), box, coords, swizzle, OK)
        return gpu.cpu(), emu, f"(20, 72) int16 box {box} at {coords}"
    x = random_tensor((64, 128), torch.int16, seed=60 + swizzle)
    return emu_ops.tma_tile_probe(on_cuda(x), swizzle).cpu(), x, "(64, 128) K-major tile, column boxes"


@pytest.mark.gpu
@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
@pytest.mark.parametrize("kind", ["load", "store", "tile"])
def test_gpu_matches_emulator(emu_ops, kind, swizzle):
    cases = {"load": len(load_cases(swizzle)), "store": len(store_cases(swizzle)), "tile": 1}[kind]
    for i in range(cases):
        gpu, emu, what = twin(emu_ops, kind, swizzle, i)
        assert torch.equal(gpu, emu), f"{kind} case {i}: {what}"
