"""The sm_90a chunk kernel (csrc/kernels/gdn/gdn_chunk_sm90a.cu: wgmma, the state in two warpgroups' accumulators)
against the mma.sync kernel (gdn_chunk.cu) and the float64 reference. Both kernels round the same operands at the
same points, and the emulator computes a wgmma m64nNk16 exactly as the mma.sync m16n8k16 tiles it is made of
(exact products added in k order, one fp32 rounding per k16 step; the causal blocks the mma.sync kernel skips add
exact zeros), so the two paths must agree bit for bit on the CPU: checked for ragged lengths, K = V = 128, fp16,
without the L2 norm, both segment-split schemes (exact chain and decay shortcut), and the layer op with the gated
RMSNorm fused; rows a TMA box reads past a sequence end do not leak; every output poisoned and guarded
(chunk_raw), two thread orders. The same for arch 91, the sm_90a kernel after the chunk-local pre-pass
(gdn_chunk_prep.cu: Tu, P, -w of every chunk computed by the mma.sync stage code and read back by TMA): the same
operands rounded at the same points, so again the same bits, also over many short sequences (the pre-pass maps
its chunk slots back to sequences by a binary search). `-m gpu`: the kernels on an
H100 at the benchmark shapes against each other and the reference (bounded tolerances: the hardware sums the
products of an MMA in its own order)."""

import pytest
import torch
from gdn_helpers import (
    OUT_TOL,
    STATE_TOL,
    Guarded,
    chunk_raw,
    chunk_reference64,
    cu_of,
    layer_inputs,
    make_scan_inputs,
    rel,
)

from qwen35_native import emulator, ops
from utils import assert_bit_identical, set_sm90a

SM80, SM90A, PREPASS = 80, 90, 91
WEAK = (0.0, 0.01)   # no decay shortcut possible: the exact segment chain
STRONG = (1.0, 3.0)  # the shortcut (warm-up chunks from zero)


def _both_paths(lens, hk, hv, with_state=True, seed=0, dtype=torch.bfloat16, l2norm=True, decay=(0.0, 0.5),
                segment_len=0, shortcut=ops.gdn.SHORTCUT_LOG_DECAY):
    q, k, v, g, beta, state = make_scan_inputs(lens, hk, hv, with_state, seed, dtype, decay=decay, l2norm=l2norm)
    cu = cu_of(lens)
    kw = dict(segment_len=segment_len, shortcut=shortcut)
    o90, s90 = chunk_raw(q, k, v, g, beta, state, cu, l2norm, arch=SM90A, **kw)
    o80, s80 = chunk_raw(q, k, v, g, beta, state, cu, l2norm, arch=SM80, **kw)
    assert_bit_identical((o90, s90), (o80, s80), "sm_90a kernel vs sm_80 kernel")
    o91, s91 = chunk_raw(q, k, v, g, beta, state, cu, l2norm, arch=PREPASS, **kw)
    assert_bit_identical((o91, s91), (o90, s90), "sm_90a kernel after the pre-pass vs fused")
    o_ref, s_ref = chunk_reference64(q, k, v, g, beta, state, cu, l2norm)
    assert rel(o90, o_ref) <= OUT_TOL, f"output error {rel(o90, o_ref):.2e}"
    assert rel(s90, s_ref) <= STATE_TOL, f"state error {rel(s90, s_ref):.2e}"
    return o90, s90


@pytest.mark.parametrize("lens,hk,hv,with_state", [
    ([1], 1, 1, False),             # one token: a chunk of 63 padding rows
    ([63, 64, 65], 1, 2, True),     # ragged around one chunk, initial states
    ([200], 2, 4, True),            # several chunks, grouped heads (Hv = 2 Hk)
    ([130, 0, 7], 1, 3, False),     # an empty sequence (its final state is still written)
], ids=["1", "63-64-65", "200", "130-0-7"])
def test_sm90a_equals_sm80(lens, hk, hv, with_state):
    _both_paths(lens, hk, hv, with_state, seed=len(lens) + hv)


def test_prepass_many_short_sequences():
    """Chunk slots n + floor(start / 64) + i over 23 sequences of 0..130 tokens (starts off the 64-token grid,
    empty ones): every slot maps back to its own chunk, none is shared or missed."""
    lens = [5, 0, 64, 1, 63, 130, 0, 0, 17, 65, 2, 128, 3, 40, 0, 9, 70, 1, 1, 64, 33, 100, 6]
    _both_paths(lens, 1, 2, True, seed=11)


def test_sm90a_fp16_and_without_l2norm():
    _both_paths([65], 2, 6, True, seed=3, dtype=torch.float16)
    _both_paths([130], 1, 2, False, seed=4, l2norm=False)


@pytest.mark.parametrize("decay", [WEAK, STRONG], ids=["exact-chain", "shortcut"])
def test_sm90a_split_segments(decay):
    """Both passes of the split scheme run the sm_90a kernel (pre-pass: segment states from zero and transition
    maps without values; output pass from the chained / warm-up entry states)."""
    _both_paths([330, 70], 1, 1, True, seed=5, decay=decay, segment_len=128)


def test_bad_sm90a_setting_is_a_clear_error(monkeypatch):
    """QWEN35_SM90A is read by every automatic path choice (csrc/torch/sm90a_policy.h): a value other than 0 / 1
    is an error naming the accepted ones, not silently the default."""
    q, k, v, g, beta, state = make_scan_inputs([5], 1, 1, False, seed=1)
    cu = cu_of([5], "cpu")
    monkeypatch.setenv("QWEN35_SM90A", "yes")
    with pytest.raises(RuntimeError, match=r"QWEN35_SM90A must be 0 .* 1 .* or unset .* got 'yes'"):
        chunk_raw(q, k, v, g, beta, state, cu)
    set_sm90a(monkeypatch, "0")   # the emulator runs the sm_90a kernel whatever the setting
    assert_bit_identical(chunk_raw(q, k, v, g, beta, state, cu), chunk_raw(q, k, v, g, beta, state, cu, arch=SM90A),
                         "auto under the emulator vs arch 90")


def test_prepass_setting(monkeypatch):
    """QWEN35_GDN_PREPASS (csrc/torch/sm90a_policy.h): "1" / unset makes the automatic choice run the sm_90a scan
    after the pre-pass (arch 91), "0" the fused one (arch 90); where the sm_90a kernel does not run it changes
    nothing (the mma.sync kernel); any other value is an error naming the accepted ones."""
    q, k, v, g, beta, state = make_scan_inputs([70], 1, 2, True, seed=12)
    cu = cu_of([70])
    want = {arch: chunk_raw(q, k, v, g, beta, state, cu, arch=arch) for arch in (SM90A, PREPASS)}
    for setting, arch in (("1", PREPASS), ("0", SM90A), (None, PREPASS)):
        if setting is None:
            monkeypatch.delenv("QWEN35_GDN_PREPASS", raising=False)
        else:
            monkeypatch.setenv("QWEN35_GDN_PREPASS", setting)
        assert_bit_identical(chunk_raw(q, k, v, g, beta, state, cu), want[arch], f"QWEN35_GDN_PREPASS={setting}")
    monkeypatch.setenv("QWEN35_GDN_PREPASS", "1")
    with emulator.arch("sm_80"):
        assert_bit_identical(chunk_raw(q, k, v, g, beta, state, cu), chunk_raw(q, k, v, g, beta, state, cu, arch=SM80),
                             "QWEN35_GDN_PREPASS=1 at sm_80")
    monkeypatch.setenv("QWEN35_GDN_PREPASS", "on")
    with pytest.raises(RuntimeError, match=r"QWEN35_GDN_PREPASS must be 0 .* 1 .* or unset .* got 'on'"):
        chunk_raw(q, k, v, g, beta, state, cu)


def test_prepass_heads_per_cta(monkeypatch):
    """QWEN35_GDN_PREP_HEADS (csrc/torch/sm90a_policy.h): a pre-pass CTA takes the largest divisor of Hv / Hk up to
    the setting's value heads, loading q and k once for them; each head's stages are the one-head CTA's, so the
    bits are the same. Seen through the emulator's block count: the pre-pass launches slots x Hv / heads CTAs.
    The raw gates of the layer op are read per head too (a, b, A_log, dt_bias of the right head)."""
    env = "QWEN35_GDN_PREP_HEADS"
    lens, hk, hv = [130, 7, 64], 2, 8
    q, k, v, g, beta, state = make_scan_inputs(lens, hk, hv, True, seed=21)
    cu = cu_of(lens)
    slots = len(lens) + sum(lens) // 64

    def run(setting):
        if setting is None:
            monkeypatch.delenv(env, raising=False)
        else:
            monkeypatch.setenv(env, setting)
        emulator.reset_stats()
        out = chunk_raw(q, k, v, g, beta, state, cu, arch=PREPASS)
        return out, emulator.stats()["blocks"]
    want, blocks = run(None)
    for setting, heads in (("1", 1), ("2", 2), ("3", 2), ("4", 4), ("64", 4)):
        got, got_blocks = run(setting)
        assert_bit_identical(got, want, f"{env}={setting}")
        assert blocks - got_blocks == slots * (hv - hv // heads), f"{env}={setting}: {heads} heads per CTA"
    qkv, z, a, b, w, st = layer_inputs(150, hk=2, hv=4, slots=2, seed=22, decay_scale=5e-3)
    layer_cu = cu_of([100, 50])
    slot_ids, init = torch.tensor([1, 0], dtype=torch.int32), torch.tensor([True, False])
    outs = []
    for setting in ("1", "2"):
        monkeypatch.setenv(env, setting)
        st_run = {key: t.clone() for key, t in st.items()}
        outs.append((_prefill(qkv, z, a, b, w, st_run, layer_cu, slot_ids, init, 0), st_run["ssm_state"]))
    assert_bit_identical(outs[1], outs[0], f"gdn_prefill, {env}=2 vs 1")
    for bad in ("0", "-2", "two", "2x"):
        monkeypatch.setenv(env, bad)
        with pytest.raises(RuntimeError, match=f"{env} must be a positive integer .* got '{bad}'"):
            chunk_raw(q, k, v, g, beta, state, cu, arch=PREPASS)


def test_sm90a_rows_past_a_sequence_do_not_leak():
    """A chunk's TMA box reads past its sequence's end into the next sequence's rows; the kernel zeroes them (as the
    mma.sync kernel's zero-fill). With +inf values and keys in the second sequence, any leak into the first one
    would be 0 * inf = NaN there."""
    lens = [70, 10]
    q, k, v, g, beta, state = make_scan_inputs(lens, 1, 2, True, seed=10)
    k[:, 70:], v[:, 70:] = float("inf"), float("inf")

    def run(arch):  # not chunk_raw: the second sequence's outputs are NaN by design
        o, final = torch.zeros(80, 2, 128, dtype=q.dtype), torch.zeros(2, 2, 128, 128)
        torch.ops.qwen35_native.chunk_gated_delta_rule(q[0], k[0], v[0], g[0], beta[0], 128 ** -0.5, state,
                                                       cu_of(lens), True, 0, -12.0, o, final, arch)
        return o[None], final
    o90, s90 = run(SM90A)
    o80, s80 = run(SM80)
    o91, s91 = run(PREPASS)
    assert torch.isfinite(o90[:, :70]).all() and torch.isfinite(s90[0]).all()
    assert_bit_identical((o90[:, :70], s90[0]), (o80[:, :70], s80[0]), "first sequence, sm_90a vs sm_80")
    assert_bit_identical((o91[:, :70], s91[0]), (o80[:, :70], s80[0]), "first sequence, pre-pass vs sm_80")
    o_ref, s_ref = chunk_reference64(q[:, :70], k[:, :70], v[:, :70], g[:, :70], beta[:, :70], state[:1],
                                     cu_of([70]))
    assert rel(o90[:, :70], o_ref) <= OUT_TOL and rel(s90[:1], s_ref) <= STATE_TOL


@pytest.mark.parametrize("arch,heads", [(SM90A, "1"), (PREPASS, "1"), (PREPASS, "2")],
                         ids=["sm90a", "prepass", "prepass-2-heads-per-cta"])
def test_sm90a_two_orders_bit_identical(two_orders, arch, heads, monkeypatch):
    monkeypatch.setenv("QWEN35_GDN_PREP_HEADS", heads)
    q, k, v, g, beta, state = make_scan_inputs([70, 5], 1, 2, True, seed=6)
    two_orders(chunk_raw, q, k, v, g, beta, state, cu_of([70, 5]), arch=arch)


def _prefill(qkv, z, a, b, w, st, cu, slots, init, segment_len):
    out = Guarded((qkv.shape[0], z.shape[1]), qkv.dtype, qkv.device)
    torch.ops.qwen35_native.gdn_prefill(qkv, z, a, b, *w.values(), st["conv_state"], st["ssm_state"], cu, slots,
                                        init, 1e-6, segment_len, ops.gdn.SHORTCUT_LOG_DECAY, out.t)
    out.check("gdn_prefill out")
    return out.t


@pytest.mark.parametrize("prepass", ["0", "1"], ids=["fused", "prepass"])
@pytest.mark.parametrize("segment_len", [0, 128], ids=["whole", "split"])
def test_sm90a_layer_prefill_equals_sm80(segment_len, prepass, monkeypatch):
    """gdn_prefill (raw gates, L2 norm, gated RMSNorm fused, states by slot in place) picks the kernel from the
    arch: the emulator's default sm_90 runs the sm_90a kernel (after the chunk-local pre-pass unless
    QWEN35_GDN_PREPASS=0), sm_80 the mma.sync one; same bits, and the reference agrees."""
    monkeypatch.setenv("QWEN35_GDN_PREPASS", prepass)
    qkv, z, a, b, w, st = layer_inputs(200, hk=1, hv=2, slots=3, seed=7, decay_scale=5e-3)
    cu = cu_of([130, 70])
    slots = torch.tensor([2, 0], dtype=torch.int32)
    init = torch.tensor([True, False])
    ref_conv, ref_ssm = (st[key].clone() for key in ("conv_state", "ssm_state"))
    st80 = {key: t.clone() for key, t in st.items()}
    out90 = _prefill(qkv, z, a, b, w, st, cu, slots, init, segment_len)
    with emulator.arch("sm_80"):
        out80 = _prefill(qkv, z, a, b, w, st80, cu, slots, init, segment_len)
    assert_bit_identical((out90, st["ssm_state"], st["conv_state"]),
                         (out80, st80["ssm_state"], st80["conv_state"]), "gdn_prefill sm_90a vs sm_80")
    ref = ops.gdn_prefill_reference(qkv, z, a, b, *w.values(), ref_conv, ref_ssm, cu, slots, init)
    assert rel(out90, ref) <= OUT_TOL
    assert rel(st["ssm_state"][[2, 0]], ref_ssm[[2, 0]]) <= STATE_TOL


def test_sm90a_arch_checks():
    q, k, v, g, beta, state = make_scan_inputs([10], 1, 1, True, seed=8)
    cu = cu_of([10])
    with pytest.raises(RuntimeError, match="arch must be 0 \\(automatic\\), 80 .*, 90 .* or 91 .*got 7"):
        chunk_raw(q, k, v, g, beta, state, cu, arch=7)
    with emulator.arch("sm_80"):
        for arch in (SM90A, PREPASS):
            with pytest.raises(RuntimeError,
                               match=f"arch {arch} \\(the sm_90a kernel\\) needs the emulator at arch sm_90"):
                chunk_raw(q, k, v, g, beta, state, cu, arch=arch)
        o_auto, s_auto = chunk_raw(q, k, v, g, beta, state, cu)  # auto on sm_80: the mma.sync kernel
    o80, s80 = chunk_raw(q, k, v, g, beta, state, cu, arch=SM80)
    assert_bit_identical((o_auto, s_auto), (o80, s80), "auto at sm_80 vs arch 80")


# ---- GPU: the benchmark shapes (bench/gdn.py), both kernels on the device ----
GPU_CASES = [((2, 8), [32768]), ((16, 64), [8192]), ((16, 32), [4096] * 8)]  # 397b-tp8, 397b-tp1, 35b-a3b


@pytest.mark.gpu
@pytest.mark.parametrize("heads,lens", GPU_CASES, ids=["397b-tp8-1x32768", "397b-tp1-1x8192", "35b-a3b-8x4096"])
def test_gpu_sm90a_vs_sm80_vs_reference(heads, lens, monkeypatch):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    q, k, v, g, beta, state = make_scan_inputs(lens, *heads, True, seed=9, device="cuda")
    cu = cu_of(lens, "cuda")
    o90, s90 = chunk_raw(q, k, v, g, beta, state, cu, arch=SM90A)
    o80, s80 = chunk_raw(q, k, v, g, beta, state, cu, arch=SM80)
    assert rel(o90, o80) <= 1e-2 and rel(s90, s80) <= 5e-3, (rel(o90, o80), rel(s90, s80))
    o91, s91 = chunk_raw(q, k, v, g, beta, state, cu, arch=PREPASS)  # its K K^T, Q K^T, w by mma.sync
    assert rel(o91, o90) <= 1e-2 and rel(s91, s90) <= 5e-3, (rel(o91, o90), rel(s91, s90))
    monkeypatch.setenv("QWEN35_GDN_PREP_HEADS", "4")  # every head's stages as in the one-head CTA: the same bits
    assert_bit_identical(chunk_raw(q, k, v, g, beta, state, cu, arch=PREPASS), (o91, s91), "4 heads per CTA")
    monkeypatch.delenv("QWEN35_GDN_PREP_HEADS")
    o_ref, s_ref = chunk_reference64(q, k, v, g, beta, state, cu)
    for o, s in ((o90, s90), (o91, s91)):
        assert rel(o, o_ref) <= OUT_TOL and rel(s, s_ref) <= STATE_TOL, (rel(o, o_ref), rel(s, s_ref))
    # automatic choice on a GPU (csrc/torch/sm90a_policy.h): the sm_90a kernel unless QWEN35_SM90A=0
    for setting, want, arch in ((None, (o90, s90), 90), ("1", (o90, s90), 90), ("0", (o80, s80), 80)):
        set_sm90a(monkeypatch, setting)
        assert_bit_identical(chunk_raw(q, k, v, g, beta, state, cu), want, f"auto, QWEN35_SM90A={setting}, arch {arch}")
