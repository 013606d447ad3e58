"""causal_conv1d (prefill over packed sequences, conv states by slot) and causal_conv1d_update (decode, in place) on
their kernels against the pure-torch references (which tests/model/test_ops_gdn_layer.py checks against HF):
widths 2..4, float32/float16/bfloat16, strided input rows, sequences shorter than the window and empty ones,
outputs poisoned and guarded, untouched slots, two thread orders. Kernel: csrc/kernels/gdn/causal_conv1d.cu."""

import pytest
import torch
from gdn_helpers import DEVICES, Guarded, cu_of, skip_without_cuda

from qwen35_native import ops
from utils import assert_bit_identical

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}  # one output rounding step, relative
LENS = [1, 64, 130, 7, 0, 2]


def _inputs(lens, C, W, dtype, device, seed, slots=9):
    gen = torch.Generator().manual_seed(seed)
    T = sum(lens)
    wide = torch.randn(T, C + 24, generator=gen).to(device=device, dtype=dtype)
    x = wide[:, 8:8 + C]  # strided rows, 16-byte aligned starts
    w = (0.5 * torch.randn(C, W, generator=gen)).to(device)
    state = torch.randn(slots, C, W - 1, generator=gen).to(device=device, dtype=dtype)
    return x, w, state


def _close(actual, expected, dtype):
    err = (actual.float() - expected.float()).abs().max().item()
    assert err <= TOL[dtype] * max(1.0, expected.float().abs().max().item()), err


def _conv_raw(x, w, cu, state, slots, init):
    y = Guarded(tuple(x.shape), x.dtype, x.device)
    torch.ops.qwen35_native.causal_conv1d(x, w, cu, state, slots, init, True, y.t)
    y.check("causal_conv1d y")
    return y.t


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("W", [2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_conv_prefill_matches_reference(dtype, W, device):
    skip_without_cuda(device)
    C = 136 if dtype == torch.float32 else 264  # not a multiple of the threads' channel blocks
    x, w, state = _inputs(LENS, C, W, dtype, device, seed=W)
    w = w.to(dtype) if W != 3 else w  # fp32 weights too
    cu = cu_of(LENS, device)
    slots = torch.tensor([5, 0, 3, 8, 1, 2], dtype=torch.int64, device=device)
    init = torch.tensor([True, False, True, True, True, False], device=device)
    ref_state = state.clone()
    y = _conv_raw(x, w, cu, state, slots, init)
    y_ref = ops.causal_conv1d_reference(x, w, cu, ref_state, slots, init)
    _close(y, y_ref, dtype)
    assert torch.equal(state, ref_state)  # final states: the last W-1 inputs, exactly; other slots untouched


@pytest.mark.parametrize("device", DEVICES)
def test_conv_prefill_without_state(device):
    skip_without_cuda(device)
    x, w, _ = _inputs([70], 512, 4, torch.bfloat16, device, seed=1)
    y = ops.causal_conv1d(x, w.bfloat16(), backend="kernel")
    _close(y, ops.causal_conv1d_reference(x, w.bfloat16()), torch.bfloat16)
    y_lin = ops.causal_conv1d(x, w.bfloat16(), activation=None, backend="kernel")
    _close(y_lin, ops.causal_conv1d_reference(x, w.bfloat16(), activation=None), torch.bfloat16)
    odd = torch.randn(70, 520, device=device).bfloat16()[:, 3:515]  # rows not 16-byte aligned: scalar path
    _close(ops.causal_conv1d(odd, w.bfloat16(), backend="kernel"), ops.causal_conv1d_reference(odd, w.bfloat16()),
           torch.bfloat16)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_conv_update_matches_reference(dtype, device):
    skip_without_cuda(device)
    x, w, state = _inputs([5], 264, 4, dtype, device, seed=2)
    slots = torch.tensor([7, 0, 2, 4, 1], dtype=torch.int32, device=device)
    ref_state = state.clone()
    y = Guarded((5, 264), dtype, device)
    torch.ops.qwen35_native.causal_conv1d_update(x, state, w, slots, True, y.t)
    y.check("causal_conv1d_update y")
    _close(y.t, ops.causal_conv1d_update_reference(x, ref_state, w, slots), dtype)
    assert torch.equal(state, ref_state)


def _at_odd_address(t):
    """A contiguous copy of the 16-bit t starting 2 bytes off a 16-byte boundary."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    odd = flat[1:].view(t.shape)
    odd.copy_(t)
    assert odd.data_ptr() % 16 != 0
    return odd


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("W", [2, 3, 4])
def test_conv_update_with_states_at_an_odd_address(W, device):
    """The update reads and writes each thread's state in 16-byte pieces; a state tensor starting 2 bytes off a
    16-byte boundary takes the element-wise path, with the same results."""
    skip_without_cuda(device)
    x, w, aligned = _inputs([3], 264, W, torch.bfloat16, device, seed=W + 10)
    state = _at_odd_address(aligned)
    slots = torch.tensor([4, 0, 8], dtype=torch.int64, device=device)
    for st in (aligned, state):
        y = Guarded((3, 264), x.dtype, device)
        ref_state = st.clone()
        torch.ops.qwen35_native.causal_conv1d_update(x, st, w, slots, True, y.t)
        y.check("causal_conv1d_update y")
        _close(y.t, ops.causal_conv1d_update_reference(x, ref_state, w, slots), x.dtype)
        assert torch.equal(st, ref_state)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("W", [2, 3, 4])
def test_conv_weights_at_an_odd_address(W, device):
    """16-bit conv weights load in 16-byte pieces (a thread's 8 channels x W taps are contiguous); a weight tensor
    2 bytes off a 16-byte boundary takes the element-wise loads: the same bits, prefill and update."""
    skip_without_cuda(device)
    x, w, state = _inputs([3], 264, W, torch.bfloat16, device, seed=W + 20)
    odd = _at_odd_address(w)
    slots = torch.tensor([4, 0, 8], dtype=torch.int64, device=device)
    outs = []
    for weight in (w, odd):
        st = state.clone()
        y = Guarded((3, 264), x.dtype, device)
        torch.ops.qwen35_native.causal_conv1d_update(x, st, weight, slots, True, y.t)
        y.check("causal_conv1d_update y")
        outs.append((y.t, st, ops.causal_conv1d(x, weight, backend="kernel")))
    assert_bit_identical(outs[1], outs[0], "weights at an odd address vs aligned")
    _close(outs[0][0], ops.causal_conv1d_update_reference(x, state.clone(), w, slots), x.dtype)


def test_conv_two_orders(two_orders):
    x, w, state = _inputs(LENS, 264, 4, torch.bfloat16, "cpu", seed=3)
    slots = torch.arange(6)
    init = torch.tensor([True, True, False, True, True, True])

    def run():
        st = state.clone()
        return _conv_raw(x, w, cu_of(LENS), st, slots, init), st
    two_orders(run)


def test_conv_decode_steps_continue_prefill():
    """Prefill of the first tokens, then token-by-token updates, equals one prefill over all tokens."""
    x, w, state = _inputs([40], 264, 4, torch.bfloat16, "cpu", seed=4, slots=2)
    slots = torch.tensor([1])
    full = ops.causal_conv1d(x, w, cu_of([40]), state.clone(), slots, torch.tensor([False]), backend="kernel")
    st = state.clone()
    head = ops.causal_conv1d(x[:30], w, cu_of([30]), st, slots, torch.tensor([False]), backend="kernel")
    steps = [ops.causal_conv1d_update(x[t:t + 1], st, w, slots, backend="kernel") for t in range(30, 40)]
    assert torch.equal(torch.cat([head, *steps]), full)


def test_conv_unsupported_and_bad_inputs():
    x = torch.randn(6, 16).bfloat16()
    with pytest.raises(ValueError, match=r"backend='kernel' does not support this input: kernel width 5"):
        ops.causal_conv1d(x, torch.randn(16, 5), backend="kernel")
    assert ops.causal_conv1d(x, torch.randn(16, 5)).shape == x.shape  # auto on the CPU: the reference
    y = torch.empty(6, 16, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"causal_conv1d: weight must have shape \[C=16, W\] with W in 2..4"):
        torch.ops.qwen35_native.causal_conv1d(x, torch.randn(16, 6), None, None, None, None, True, y)
    with pytest.raises(RuntimeError, match="slots must be given with conv_state"):
        torch.ops.qwen35_native.causal_conv1d(x, torch.randn(16, 4), None, torch.zeros(2, 16, 3).bfloat16(), None,
                                              None, True, y)
    with pytest.raises(RuntimeError, match="causal_conv1d_update: y must have dtype BFloat16"):
        torch.ops.qwen35_native.causal_conv1d_update(x, torch.zeros(8, 16, 3).bfloat16(), torch.randn(16, 4),
                                                     torch.arange(6), True, y.float())


@pytest.mark.gpu
def test_gpu_conv_matches_emulator():
    x, w, state = _inputs(LENS, 1536, 4, torch.bfloat16, "cpu", seed=5)
    slots, init = torch.arange(6), torch.tensor([True, False, True, True, True, True])
    cpu_state, gpu_state = state.clone(), state.cuda()
    y_cpu = _conv_raw(x, w, cu_of(LENS), cpu_state, slots, init)
    y_gpu = _conv_raw(x.cuda(), w.cuda(), cu_of(LENS, "cuda"), gpu_state, slots.cuda(), init.cuda())
    _close(y_gpu.cpu(), y_cpu, torch.bfloat16)
    assert torch.equal(gpu_state.cpu(), cpu_state)
