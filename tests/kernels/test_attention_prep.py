"""attention_prep (q/gate split, zero-centred q/k RMSNorm, interleaved M-RoPE, paged KV write): the kernel (emulator on
CPU, CUDA with -m gpu) against the pure-torch reference and an independent float64 formula. Kernel:
csrc/kernels/attention/attention_prep.cu."""

import math

import pytest
import torch

from qwen35_native.ops import attention_prep, attention_prep_reference
from qwen35_native.ops.attention_prep import rope_inv_freq
from utils import GuardedTensor, poisoned_empty

# (T, Hq, Hkv, D, rotary_dim, mrope_section): the model's head (tp8 and a tp1-like group) and a small odd one
SHAPES = [(7, 4, 1, 256, 64, [11, 11, 10]), (3, 16, 2, 256, 64, [11, 11, 10]), (5, 3, 1, 32, 8, [2, 1, 1])]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
THETA = 1e7


def _ids(shape):
    T, Hq, Hkv, D, R, _ = shape
    return f"T{T}-{Hq}q{Hkv}kv-D{D}-R{R}"


def make_inputs(shape, dtype, device, seed, weight_fp32=False, strided=False, num_blocks=4, block_size=16):
    T, Hq, Hkv, D, R, _ = shape
    g = torch.Generator().manual_seed(seed)
    width = (2 * Hq + 2 * Hkv) * D
    pad = 3 if strided else 0  # strided: rows of a wider buffer that start off the 16-byte grid (scalar path)
    qkv = torch.randn(T, width + pad, generator=g).to(device=device, dtype=dtype)[:, pad:]
    wdt = torch.float32 if weight_fp32 else dtype
    qw = (torch.randn(D, generator=g) * 0.3).to(device=device, dtype=wdt)
    kw = (torch.randn(D, generator=g) * 0.3).to(device=device, dtype=wdt)
    base = torch.randint(0, 250_000, (1,), generator=g).item()  # large positions: fp32 angles of ~1e5 rad
    t = torch.arange(T)
    positions = torch.stack([base + t, base + t % 4, base + t // 2 + 7]).to(device)  # T, H, W streams differ
    slots = torch.randperm(num_blocks * block_size, generator=g)[:T]
    slots[T // 2] = -1  # one token not written
    k_cache = poisoned_empty((num_blocks, block_size, Hkv, D), dtype, device)
    v_cache = poisoned_empty((num_blocks, block_size, Hkv, D), dtype, device)
    return qkv, qw, kw, positions, k_cache, v_cache, slots.to(device)


def float64_expected(qkv, qw, kw, positions, R, section, Hq, Hkv, D):
    """Independent formula: RMSNorm and rotation in float64; the angles are HF's fp32 products position * inv_freq
    (MODEL_SPEC §5.2: at positions ~1e5 one ulp of inv_freq or of the product moves an angle by ~1e-2 rad, so the
    fp32 angles are part of the model; inv_freq itself is checked in test_rope_inv_freq_is_hf_formula)."""
    x = qkv.double()
    T = x.shape[0]
    inv = rope_inv_freq(R, THETA, "cpu")
    stream = [1 if (i % 3 == 1 and i < 3 * section[1]) else 2 if (i % 3 == 2 and i < 3 * section[2]) else 0
              for i in range(R // 2)]
    ang = torch.stack([(positions[s].float() * inv[i]).double() for i, s in enumerate(stream)], dim=-1)  # [T, R/2]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1)[:, None], torch.cat([ang.sin(), ang.sin()], -1)[:, None]

    def norm_rope(h, w):
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + w.double())
        rot = torch.cat([-h[..., R // 2:R], h[..., :R // 2]], -1)
        return torch.cat([h[..., :R] * cos + rot * sin, h[..., R:]], -1)

    qg = x[:, :2 * Hq * D].reshape(T, Hq, 2 * D)
    k = x[:, 2 * Hq * D:(2 * Hq + Hkv) * D].reshape(T, Hkv, D)
    return norm_rope(qg[..., :D], qw), qg[..., D:].reshape(T, Hq * D), norm_rope(k, kw)


def _skip_without_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strided", [False, True], ids=["contig", "strided"])
@pytest.mark.parametrize("weight_fp32", [False, True], ids=["w-x", "w-fp32"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_attention_prep(shape, dtype, weight_fp32, strided, device):
    _skip_without_cuda(device)
    T, Hq, Hkv, D, R, section = shape
    inputs = make_inputs(shape, dtype, device, seed=SHAPES.index(shape) * 7 + DTYPES.index(dtype),
                         weight_fp32=weight_fp32, strided=strided)
    qkv, qw, kw, positions, k_cache, v_cache, slots = inputs
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    q, gate = attention_prep(qkv, qw, kw, positions, k_cache, v_cache, slots, R, section, THETA, backend="kernel")
    q_ref, gate_ref = attention_prep_reference(qkv, qw, kw, positions, k_ref, v_ref, slots, R, section, THETA)
    assert q.shape == (T, Hq, D) and q.dtype == dtype and gate.shape == (T, Hq * D)
    assert torch.equal(gate, gate_ref) and torch.equal(v_cache.isnan(), v_ref.isnan())
    assert torch.equal(v_cache.nan_to_num(7.0), v_ref.nan_to_num(7.0))  # raw copies, untouched slots stay poisoned
    assert torch.equal(k_cache.isnan(), k_ref.isnan())
    # same math as the reference: equal up to the order of the sum of squares (one ulp of the output dtype)
    ulp = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(q, q_ref, rtol=ulp, atol=ulp)
    torch.testing.assert_close(k_cache.nan_to_num(0), k_ref.nan_to_num(0), rtol=ulp, atol=ulp)
    # and within MODEL_SPEC §5 of float64 math on the same (rounded) inputs
    q64, gate64, k64 = float64_expected(qkv.cpu(), qw.cpu(), kw.cpu(), positions.cpu(), R, section, Hq, Hkv, D)
    written = slots.cpu() >= 0
    k_got = k_cache.cpu().view(-1, Hkv, D)[slots.cpu()[written]]
    bound = 1e-5 if dtype == torch.float32 else 1e-2
    for got, exp, what in ((q.cpu(), q64, "q"), (k_got, k64[written], "k")):
        rel = ((got.double() - exp).norm() / exp.norm()).item()
        assert rel <= bound, f"{what}: relative error {rel:.2e} vs float64 > {bound}"


@pytest.mark.parametrize("device", DEVICES)
def test_attention_prep_two_orders_guards(device, two_orders):
    """Raw op with guarded outputs: no write outside q_out/gate_out, every element written, bit-identical under two
    emulator thread orders (on CUDA: two runs)."""
    _skip_without_cuda(device)
    shape = SHAPES[1]
    T, Hq, Hkv, D, R, section = shape
    qkv, qw, kw, positions, k_cache, v_cache, slots = make_inputs(shape, torch.bfloat16, device, seed=11)

    def run():
        q_out = GuardedTensor((T, Hq, D), torch.bfloat16, device)
        gate_out = GuardedTensor((T, Hq * D), torch.bfloat16, device)
        kc, vc = k_cache.clone(), v_cache.clone()
        torch.ops.qwen35_native.attention_prep(qkv, qw, kw, positions, kc, vc, slots, rope_inv_freq(R, THETA, device),
                                               section, 1e-6, q_out.tensor, gate_out.tensor)
        q_out.check("attention_prep q_out")
        gate_out.check("attention_prep gate_out")
        assert not q_out.tensor.isnan().any() and not gate_out.tensor.isnan().any()
        return q_out.tensor.clone(), gate_out.tensor.clone(), kc, vc

    if device == "cpu":
        two_orders(run)
    else:
        from utils import assert_bit_identical
        assert_bit_identical(run(), run())


@pytest.mark.parametrize("device", DEVICES)
def test_attention_prep_edge(device):
    _skip_without_cuda(device)
    shape = (0, 4, 1, 256, 64, [11, 11, 10])
    qkv, qw, kw, positions, k_cache, v_cache, slots = make_inputs((1, 4, 1, 256, 64, [11, 11, 10]), torch.bfloat16,
                                                                  device, seed=3)
    q, gate = attention_prep(qkv[:0], qw, kw, positions[:, :0], k_cache, v_cache, slots[:0], 64, shape[5], THETA,
                             backend="kernel")
    assert q.shape == (0, 4, 256) and gate.shape == (0, 1024)
    # all positions 0 on the three streams: cos = 1, sin = 0, the rotary is the identity
    q1, _ = attention_prep(qkv, qw, kw, torch.zeros_like(positions), k_cache, v_cache, slots, 64, [11, 11, 10],
                           THETA, backend="kernel")
    x = qkv[:, :256].float()
    normed = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + qw.float())).to(torch.bfloat16)
    torch.testing.assert_close(q1[:, 0], normed, rtol=8e-3, atol=8e-3)
    # int32 metadata is accepted (the wrapper widens it)
    q2, _ = attention_prep(qkv, qw, kw, positions.int(), k_cache, v_cache, slots.int(), 64, [11, 11, 10], THETA,
                           backend="kernel")
    q3, _ = attention_prep(qkv, qw, kw, positions, k_cache, v_cache, slots, 64, [11, 11, 10], THETA, backend="kernel")
    assert torch.equal(q2, q3)


def test_attention_prep_raw_op_checks():
    shape = SHAPES[0]
    T, Hq, Hkv, D, R, section = shape
    qkv, qw, kw, positions, k_cache, v_cache, slots = make_inputs(shape, torch.bfloat16, "cpu", seed=5)
    inv = rope_inv_freq(R, THETA, "cpu")
    q_out, gate_out = torch.empty(T, Hq, D, dtype=torch.bfloat16), torch.empty(T, Hq * D, dtype=torch.bfloat16)
    op = torch.ops.qwen35_native.attention_prep
    with pytest.raises(RuntimeError, match=r"qwen35_native.attention_prep: positions must have dtype Long"):
        op(qkv, qw, kw, positions.int(), k_cache, v_cache, slots, inv, section, 1e-6, q_out, gate_out)
    with pytest.raises(RuntimeError, match=r"mrope_section must be 3 ints summing to rotary_dim/2=32"):
        op(qkv, qw, kw, positions, k_cache, v_cache, slots, inv, [11, 11, 11], 1e-6, q_out, gate_out)
    with pytest.raises(RuntimeError, match=r"q_out must have shape \[T, Hq, D\]"):
        op(qkv, qw, kw, positions, k_cache, v_cache, slots, inv, section, 1e-6, q_out[:, :2], gate_out)
    with pytest.raises(RuntimeError, match=r"slot_mapping values must be negative \(skip\) or in \[0, "):
        op(qkv, qw, kw, positions, k_cache, v_cache, slots + 1000, inv, section, 1e-6, q_out, gate_out)
    with pytest.raises(RuntimeError, match=r"qkv width .* must be \(2\*Hq \+ 2\*Hkv\)\*D"):
        op(qkv[:, :-D], qw, kw, positions, k_cache, v_cache, slots, inv, section, 1e-6, q_out, gate_out)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        attention_prep(qkv, qw, kw, positions, k_cache, v_cache, slots, R, section, THETA, eps=-1.0, backend="kernel")


@pytest.mark.parametrize("device", DEVICES)
def test_attention_prep_opcheck(device):
    _skip_without_cuda(device)
    shape = SHAPES[2]
    T, Hq, Hkv, D, R, section = shape
    qkv, qw, kw, positions, k_cache, v_cache, slots = make_inputs(shape, torch.float32, device, seed=6)
    q_out, gate_out = torch.empty(T, Hq, D, device=device), torch.empty(T, Hq * D, device=device)
    v_cache.zero_()  # opcheck compares outputs of repeated runs: no NaN
    k_cache.zero_()
    torch.library.opcheck(torch.ops.qwen35_native.attention_prep.default,
                          (qkv.contiguous(), qw, kw, positions, k_cache, v_cache, slots,
                           rope_inv_freq(R, THETA, device), section, 1e-6, q_out, gate_out))


def test_rope_inv_freq_is_hf_formula():
    got = rope_inv_freq(64, THETA, "cpu")
    exp = torch.tensor([1.0 / THETA ** (2 * i / 64) for i in range(32)], dtype=torch.float64)
    assert got.dtype == torch.float32 and (got.double() - exp).abs().max() <= 1e-7 * exp.max()
    assert math.isclose(float(got[0]), 1.0)
