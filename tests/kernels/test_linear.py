"""The skinny linear kernels (projections of up to 64 rows; csrc/kernels/linear/skinny_{linear,mma}.cu) under the
emulator (two thread orders, poisoned outputs with guards) and, with -m gpu, on the GPU; the references against
float64."""

import pytest
import torch
import torch.nn.functional as F

from qwen35_native import emulator
from qwen35_native.ops import linear, linear_reference, swiglu_linear, swiglu_linear_reference, swiglu_mlp
from qwen35_native.ops.projection import skinny_unsupported
from utils import GuardedTensor, assert_bit_identical, assert_close_report, randint_small, randn, run_under_schedules

DTYPES = [torch.bfloat16, torch.float16]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# (N, K): the emulator's glue says 2 SMs, so fewer than 16 output groups (2 or 4 outputs each) split K over a
# block's 4 warps; K of at most 64 chunks of 8 takes 8 lanes per group up to 4 rows; 17 and 257 chunks leave partial
# passes of the 8 / 32 / 128-thread teams.
SHAPES = [(6, 64), (24, 136), (100, 136), (10, 1024), (37, 2056)]
ROWS = [1, 2, 3, 5, 8, 9, 17, 64]   # 9-64: the tensor-core kernel (skinny_mma.cu)


def _skip_without_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _run(x, w, swiglu):
    outputs = w.shape[0] // 2 if swiglu else w.shape[0]
    out = GuardedTensor((x.shape[0], outputs), x.dtype, device=x.device)
    torch.ops.qwen35_native.skinny_linear(x, w, swiglu, out.tensor)
    out.check()
    return out.tensor.clone()


def _exact(x, w, swiglu):
    """fp64 sums of small integers are exact, so every summation order rounds to the same T."""
    y = (x.double() @ w.double().t())
    if not swiglu:
        return y.to(x.dtype)
    gate, up = y.to(x.dtype).chunk(2, dim=-1)
    return (F.silu(gate.float()).to(x.dtype).float() * up.float()).to(x.dtype)


def test_references_match_float64():
    x, w = randn((3, 40), torch.float64, seed=1), randn((10, 40), torch.float64, seed=2)
    torch.testing.assert_close(linear_reference(x, w), x @ w.t(), rtol=1e-12, atol=1e-12)
    g, u = x @ w[:5].t(), x @ w[5:].t()
    torch.testing.assert_close(swiglu_linear_reference(x, w), g / (1 + torch.exp(-g)) * u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("swiglu", [False, True], ids=["plain", "swiglu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}xK{s[1]}")
@pytest.mark.parametrize("rows", ROWS, ids=lambda m: f"M{m}")
def test_skinny_linear_exact_on_small_integers(rows, shape, swiglu, device):
    """Every output, row tier and split, bit for bit (sums of small integers are exact), under two orders."""
    _skip_without_cuda(device)
    n, k = shape
    dtype = torch.bfloat16 if (rows + n) % 2 else torch.float16
    x = randint_small((rows, k), dtype, seed=rows, low=-2, high=2, device=device)
    w = randint_small((2 * n if swiglu else n, k), dtype, seed=n + k, low=-2, high=2, device=device)
    out = run_under_schedules(_run, x, w, swiglu) if device == "cpu" else _run(x, w, swiglu)
    if swiglu:   # silu's exp may differ from torch's in the last fp32 bit: at most one rounding step of T
        assert_close_report(out, _exact(x, w, swiglu), rtol=1e-2, atol=1e-2)
    else:
        assert_bit_identical(out, _exact(x, w, swiglu))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("rows", [1, 4, 7, 24])
def test_skinny_linear_random(rows, dtype, device):
    """Random values: one rounding of an fp32 sum (within an ulp of T of the fp64 product), and the SwiGLU chain."""
    _skip_without_cuda(device)
    x = randn((rows, 264), dtype, seed=rows, device=device)
    w = randn((600, 264), dtype, seed=7, device=device, scale=0.1)
    y = linear(x, w, backend="kernel")
    ref = (x.double() @ w.double().t())
    assert_close_report(y.double(), ref, rtol=8e-3, atol=1e-2)
    y2 = swiglu_linear(x, w, backend="kernel")
    assert_close_report(y2.float(), swiglu_linear_reference(x.float(), w.float()), rtol=2e-2, atol=2e-2)
    # The rounding chain of the unfused ops (products, silu and the product each rounded to T): from the fp64
    # sums, all but the rare element whose fp32 sum or exp lies next to a rounding boundary of T match bit for
    # bit (0-0.1 % here); dropping one of the roundings changes ~25 %.
    gate, up = (x.double() @ w.double().t()).to(dtype).chunk(2, dim=-1)
    chain = (F.silu(gate.float()).to(dtype).float() * up.float()).to(dtype)
    assert (y2 != chain).float().mean().item() < 0.01


@pytest.mark.parametrize("rows,groups,k,blocks", [(1, 3, 1024, 3), (1, 50, 1024, 13), (8, 13, 1024, 13),
                                                   (8, 26, 1024, 7), (1, 50, 64, 4), (4, 9, 512, 1),
                                                   (8, 26, 64, 7)])
def test_grid_per_warp_split_k_or_short_k(rows, groups, k, blocks):
    """Fewer than 8 output groups per SM (the emulator's glue says 2 SMs): one block of 4 warps per group, each warp
    a quarter of K; else 4 groups per block; K of at most 64 chunks (up to 4 rows): 8 lanes per group, 16 groups per
    block. All give the exact result."""
    per_group = 2 if rows <= 4 else 4
    x = randint_small((rows, k), torch.bfloat16, seed=3)
    w = randint_small((groups * per_group - 1, k), torch.bfloat16, seed=4)   # the last group one output short
    emulator.reset_stats()
    out = run_under_schedules(_run, x, w, False)
    assert emulator.stats()["blocks"] == 2 * blocks   # two schedules
    assert_bit_identical(out, _exact(x, w, False))


def test_leading_dims_and_strided_rows():
    """``[..., K]`` inputs collapse to rows; a column slice of a wider buffer keeps its row stride."""
    x = randint_small((2, 3, 48), torch.bfloat16, seed=5)
    w = randint_small((12, 48), torch.bfloat16, seed=6)
    assert_bit_identical(linear(x, w, backend="kernel"), _exact(x.reshape(6, 48), w, False).view(2, 3, 12))
    wide = randint_small((4, 72), torch.bfloat16, seed=7)
    xs = wide[:, 8:56]                      # row stride 72 (144 bytes), start 16 bytes in
    assert_bit_identical(linear(xs, w, backend="kernel"), _exact(xs, w, False))


def test_zero_sizes_and_many_rows():
    w = randint_small((12, 48), torch.bfloat16, seed=6)
    assert linear(torch.empty(0, 48, dtype=torch.bfloat16), w, backend="kernel").shape == (0, 12)
    assert linear(torch.ones(2, 48, dtype=torch.bfloat16), w[:0], backend="kernel").shape == (2, 0)
    x65 = randint_small((65, 48), torch.bfloat16, seed=8)   # 65 rows: a GEMM, F.linear even with backend="kernel"
    assert_bit_identical(linear(x65, w, backend="kernel"), F.linear(x65, w))


def test_auto_backend_and_env_switch(monkeypatch):
    """CPU tensors run F.linear unless backend="kernel"; QWEN35_SKINNY_LINEAR=0 keeps cuBLAS on the GPU."""
    x, w = randn((2, 64), torch.bfloat16, seed=1), randn((8, 64), torch.bfloat16, seed=2)
    emulator.reset_stats()
    assert_bit_identical(linear(x, w), F.linear(x, w))
    assert emulator.stats()["launches"] == 0
    if torch.cuda.is_available():
        xc, wc = x.cuda(), w.cuda()
        monkeypatch.setenv("QWEN35_SKINNY_LINEAR", "0")
        assert_bit_identical(linear(xc, wc), F.linear(xc, wc))


def test_swiglu_mlp_kernel_matches_reference():
    x = randn((3, 64), torch.bfloat16, seed=1)
    w13, w2 = randn((96, 64), torch.bfloat16, seed=2, scale=0.2), randn((64, 48), torch.bfloat16, seed=3, scale=0.2)
    emulator.reset_stats()
    got = swiglu_mlp(x, w13, w2, backend="kernel")
    assert emulator.stats()["launches"] == 2
    ref = swiglu_linear_reference(x, w13)
    assert_close_report(got.float(), F.linear(ref, w2).float(), rtol=2e-2, atol=2e-2)
    big = randn((12, 64), torch.bfloat16, seed=4)         # above 8 rows: cuBLAS / F.linear, the reference exactly
    assert_bit_identical(swiglu_mlp(big, w13, w2, backend="kernel"), F.linear(swiglu_linear_reference(big, w13), w2))


def test_unsupported_inputs_say_why():
    x, w = randn((2, 64), torch.bfloat16, seed=1), randn((8, 64), torch.bfloat16, seed=2)
    assert skinny_unsupported(x, w) is None
    assert "float16 / bfloat16" in skinny_unsupported(x.float(), w.float())
    assert "multiple of 8" in skinny_unsupported(x[:, :60], w[:, :60].contiguous())
    assert "16-byte aligned" in skinny_unsupported(x[:, 1:57], w[:, :56].contiguous())
    with pytest.raises(ValueError, match="backend='kernel' does not support this input: x has dtype torch.float32"):
        linear(x.float(), w.float(), backend="kernel")
    assert_bit_identical(linear(x.float(), w.float()), F.linear(x.float(), w.float()))   # auto: the reference
    emulator.reset_stats()   # fallback (the model's layers): F.linear where the kernel cannot take the input
    assert_bit_identical(linear(x.float(), w.float(), backend="kernel", fallback=True), F.linear(x.float(), w.float()))
    assert_bit_identical(linear(x[:, 1:57], w[:, :56].contiguous(), backend="kernel", fallback=True),
                         F.linear(x[:, 1:57], w[:, :56].contiguous()))
    assert emulator.stats()["launches"] == 0
    with pytest.raises(ValueError, match=r"weight must have shape \[out_features, in_features=64\], got \[8, 32\]"):
        linear(x, w[:, :32], backend="kernel")
    with pytest.raises(TypeError, match="weight must have dtype bfloat16, got float16"):
        linear(x, w.half())
    with pytest.raises(ValueError, match=r"w13 must have shape \[2\*I, K\]"):
        swiglu_linear(x, w[:7])
    with pytest.raises(ValueError, match="backend must be"):
        linear(x, w, backend="fast")


def test_raw_op_checks():
    """The torch op checks its arguments itself (users may call torch.ops.qwen35_native.* directly)."""
    op = torch.ops.qwen35_native.skinny_linear
    x, w = randn((2, 64), torch.bfloat16, seed=1), randn((8, 64), torch.bfloat16, seed=2)
    out = torch.empty(2, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="x must have at most 64 rows"):
        op(randn((65, 64), torch.bfloat16, seed=1), w, False, torch.empty(65, 8, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="in_features must be a multiple of 8"):
        op(x[:, :60].contiguous(), w[:, :60].contiguous(), False, out)
    with pytest.raises(RuntimeError, match="x must have dtype Half or BFloat16, got Float"):
        op(x.float(), w.float(), False, out.float())
    with pytest.raises(RuntimeError, match="weight must be contiguous and 16-byte aligned"):
        op(x, randn((64, 8), torch.bfloat16, seed=3).t(), False, out)
    with pytest.raises(RuntimeError, match="x must start at a 16-byte aligned address"):
        op(randn((2, 72), torch.bfloat16, seed=4)[:, 1:65], w, False, out)
    with pytest.raises(RuntimeError, match=r"out must have shape \[rows, weight rows / 2\]=\[2, 4\], got \[2, 8\]"):
        op(x, w, True, out)
    with pytest.raises(RuntimeError, match="with swiglu the weight must be"):
        op(x, w[:7], True, torch.empty(2, 3, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="out must be contiguous"):
        op(x, w, False, torch.empty(8, 2, dtype=torch.bfloat16).t())


@pytest.mark.parametrize("device", DEVICES)
def test_skinny_linear_opcheck(device):
    _skip_without_cuda(device)
    x, w = randn((3, 64), torch.bfloat16, seed=1, device=device), randn((16, 64), torch.bfloat16, seed=2,
                                                                       device=device)
    out = torch.empty(3, 8, dtype=torch.bfloat16, device=device)
    torch.library.opcheck(torch.ops.qwen35_native.skinny_linear.default, (x, w, True, out))


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 2, 4, 8, 16, 64])
def test_gpu_model_shapes_match_cublas(rows):
    """The 35b-a3b decode projections (GDN in_proj / out_proj, attention qkv, shared expert, router) against
    cuBLAS: the same fp32 sums in another order, so within an ulp or two of bf16."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for n, k, swiglu in [(12352, 2048, False), (2048, 4096, False), (9216, 2048, False), (512, 2048, True),
                         (2048, 512, False), (256, 2048, False)]:
        x = randn((rows, k), torch.bfloat16, seed=n, device="cuda")
        w = randn((2 * n if swiglu else n, k), torch.bfloat16, seed=k, device="cuda", scale=k ** -0.5)
        got = (swiglu_linear if swiglu else linear)(x, w, backend="kernel")
        ref = (swiglu_linear_reference if swiglu else linear_reference)(x, w)
        assert_close_report(got.float(), ref.float(), rtol=2e-2, atol=2e-2, what=f"N{n} K{k} swiglu={swiglu}")
