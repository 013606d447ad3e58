"""rms_norm / fused residual add: kernel (emulator on CPU, CUDA with -m gpu) vs the pure-torch reference, and the
reference vs an independent float64 formula. Kernel: csrc/kernels/norm/rms_norm.cu."""

import pytest
import torch

import qwen35_native as q35
from qwen35_native.ops import rms_norm, rms_norm_reference

SHAPES = [(1, 8), (7, 96), (3, 5, 64), (2, 1000), (4, 4096), (129, 24)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2), torch.bfloat16: (2e-2, 2e-2)}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def make_inputs(shape, dtype, device, seed, weight_fp32=False, strided=False):
    gen = torch.Generator().manual_seed(seed)
    hidden = shape[-1]
    if strided:  # a column slice of a wider buffer: rows have a stride > hidden
        wide = torch.randn(*shape[:-1], hidden + 8, generator=gen)
        x = wide.to(device=device, dtype=dtype)[..., 3 : 3 + hidden]
    else:
        x = torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
    w = (torch.randn(hidden, generator=gen) * 0.2).to(device=device, dtype=torch.float32 if weight_fp32 else dtype)
    r = torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
    return x, w, r


def _skip_without_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _ids(shape):
    return "x".join(map(str, shape))


def test_reference_matches_float64_formula():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 300, generator=gen, dtype=torch.float64)
    w = torch.randn(300, generator=gen, dtype=torch.float64) * 0.3
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * (1 + w)
    got = rms_norm_reference(x.float(), w.float(), 1e-6)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strided", [False, True], ids=["contig", "strided"])
@pytest.mark.parametrize("weight_fp32", [False, True], ids=["w-x", "w-fp32"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_rms_norm(shape, dtype, weight_fp32, strided, device):
    _skip_without_cuda(device)
    seed = SHAPES.index(shape) * 10 + DTYPES.index(dtype)
    x, w, r = make_inputs(shape, dtype, device, seed=seed, weight_fp32=weight_fp32, strided=strided)
    y = rms_norm(x, w, 1e-6, backend="kernel")
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    ref = rms_norm_reference(x, w, 1e-6)
    torch.testing.assert_close(y, ref, rtol=TOL[dtype][0], atol=TOL[dtype][1])

    y2, s = rms_norm(x, w, 1e-6, residual=r, backend="kernel")
    ref2, ref_s = rms_norm_reference(x, w, 1e-6, residual=r)
    torch.testing.assert_close(s, ref_s, rtol=0, atol=0)  # one rounding of x + r in both
    torch.testing.assert_close(y2, ref2, rtol=TOL[dtype][0], atol=TOL[dtype][1])


@pytest.mark.parametrize("device", DEVICES)
def test_rms_norm_edge(device):
    _skip_without_cuda(device)
    x = torch.empty(0, 64, device=device, dtype=torch.bfloat16)
    w = torch.zeros(64, device=device, dtype=torch.bfloat16)
    assert rms_norm(x, w, backend="kernel").shape == (0, 64)
    one = torch.full((1, 1), 3.0, device=device)  # hidden size 1: y = sign(x) * (1 + w) up to eps
    torch.testing.assert_close(rms_norm(one, torch.zeros(1, device=device), 0.0, backend="kernel"),
                               torch.ones(1, 1, device=device))
    big = torch.randn(2, 16384, device=device, dtype=torch.bfloat16)
    wb = torch.randn(16384, device=device, dtype=torch.bfloat16) * 0.1
    torch.testing.assert_close(rms_norm(big, wb, backend="kernel"), rms_norm_reference(big, wb), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", ["kernel", "reference", None])
def test_rms_norm_bad_inputs(backend):
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    w = torch.zeros(64, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"qwen35_native.rms_norm: x must have dtype float32 or float16 or bfloat16, "
                                        r"got int32"):
        rms_norm(x.to(torch.int32), w, backend=backend)
    with pytest.raises(ValueError, match=r"weight must have shape \[hidden_size\]=\[64\], got \[63\]"):
        rms_norm(x, w[:63], backend=backend)
    with pytest.raises(TypeError, match="weight must have dtype bfloat16 or float32, got float16"):
        rms_norm(x, w.half(), backend=backend)
    with pytest.raises(ValueError, match="x must be contiguous in its last dimension"):
        rms_norm(torch.randn(64, 4, dtype=torch.bfloat16).t(), w, backend=backend)
    with pytest.raises(ValueError, match=r"residual must have shape x.shape=\[4, 64\], got \[4, 32\]"):
        rms_norm(x, w, residual=x[:, :32], backend=backend)
    with pytest.raises(TypeError, match="residual must have dtype bfloat16, got float32"):
        rms_norm(x, w, residual=x.float(), backend=backend)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        rms_norm(x, w, eps=-1.0, backend=backend)
    with pytest.raises(ValueError, match="backend must be"):
        rms_norm(x, w, backend="fast")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="weight must be on the device of x"):
            rms_norm(x, w.cuda(), backend=backend)


def test_rms_norm_raw_op_checks():
    """The torch op checks its arguments itself (users may call torch.ops.qwen35_native.* directly)."""
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"qwen35_native.rms_norm: weight must have shape \[hidden_size\]=\[64\]"):
        torch.ops.qwen35_native.rms_norm(x, torch.zeros(65, dtype=torch.bfloat16), 1e-6)
    with pytest.raises(RuntimeError, match="qwen35_native.fused_add_rms_norm: residual must have the dtype of x"):
        torch.ops.qwen35_native.fused_add_rms_norm(x, x.float(), torch.zeros(64), 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_rms_norm_opcheck(device):
    _skip_without_cuda(device)
    x, w, r = make_inputs((3, 64), torch.bfloat16, device, seed=1)
    torch.library.opcheck(torch.ops.qwen35_native.rms_norm.default, (x, w, 1e-6))
    torch.library.opcheck(torch.ops.qwen35_native.fused_add_rms_norm.default, (x, r, w, 1e-6))


def test_build_info():
    info = q35.build_info()
    assert info["version"] == q35.__version__
    assert isinstance(info["with_cuda_kernels"], bool)
