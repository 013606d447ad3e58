"""The layer-level GDN entry points on the kernels (gdn_prefill: conv + chunked scan with gating, L2 norm and gated
RMSNorm fused; gdn_decode: conv update + recurrent step with the same fusions) against the pure-torch layer
references on the same bf16 inputs (which tests/model/test_ops_gdn_layer.py checks against HF), with the caches
updated in place by slot; and the chunked prefill against the decode step fed the same sequence token by token.
Kernels: csrc/kernels/gdn/. Glue: csrc/torch/gdn_layer_ops.cpp."""

import pytest
import torch
from gdn_helpers import DEVICES, OUT_TOL, STATE_TOL, Guarded, cu_of, layer_inputs, rel, skip_without_cuda

from qwen35_native import emulator, ops
from utils import assert_bit_identical

LENS = [1, 64, 130, 7]


def _prefill_raw(qkv, z, a, b, w, st, cu, slots, init, segment_len=0):
    out = Guarded((qkv.shape[0], z.shape[1]), qkv.dtype, qkv.device)
    torch.ops.qwen35_native.gdn_prefill(qkv, z, a, b, *w.values(), st["conv_state"], st["ssm_state"], cu, slots,
                                        init, 1e-6, segment_len, ops.gdn.SHORTCUT_LOG_DECAY, out.t)
    out.check("gdn_prefill out")
    return out.t


def _decode_raw(qkv, z, a, b, w, st, slots, out_slots=None):
    out = Guarded((qkv.shape[0], z.shape[1]), qkv.dtype, qkv.device)
    torch.ops.qwen35_native.gdn_decode(qkv, z, a, b, *w.values(), st["conv_state"], st["ssm_state"], slots, 1e-6,
                                       out.t, out_slots)
    out.check("gdn_decode out")
    return out.t


def _cpu_copy(st):
    return {key: t.cpu().clone() for key, t in st.items()}


def _cpu(*ts):
    return [t.cpu() for t in ts]


@pytest.mark.parametrize("prepass", ["0", "1"], ids=["fused", "prepass"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("heads, dtype", [((1, 2), torch.bfloat16), ((2, 8), torch.bfloat16), ((1, 2), torch.float16)],
                         ids=["1x2-bf16", "2x8-bf16", "1x2-fp16-fp32-params"])
def test_prefill_matches_reference(heads, dtype, device, prepass, monkeypatch):
    """prepass: QWEN35_GDN_PREPASS (1, the default: the sm_90a scan after its chunk-local pre-pass wherever the
    sm_90a scan runs, the emulator at sm_90 or an H100/H200; 0: the fused sm_90a scan; elsewhere the same kernels
    either way)."""
    skip_without_cuda(device)
    monkeypatch.setenv("QWEN35_GDN_PREPASS", prepass)
    T = sum(LENS)
    qkv, z, a, b, w, st = layer_inputs(T, *heads, slots=6, seed=heads[1], device=device, dtype=dtype)
    if dtype == torch.float16:  # parameters stored in float32 (checkpoints may)
        w["dt_bias"], w["norm_weight"] = w["dt_bias"].float(), w["norm_weight"].float()
    cu = cu_of(LENS, device)
    slots = torch.tensor([4, 0, 5, 2], dtype=torch.int32, device=device)
    init = torch.tensor([True, False, True, False], device=device)
    st["ssm_state"][[0, 2]] = float("nan")  # fresh sequences: overwritten, never read
    st["conv_state"][[0, 2]] = float("nan")
    ref_st = _cpu_copy(st)
    untouched = _cpu_copy({"conv": st["conv_state"][[1, 3]], "ssm": st["ssm_state"][[1, 3]]})
    out = _prefill_raw(qkv, z, a, b, w, st, cu, slots, init)
    ref = ops.gdn_prefill_reference(*_cpu(qkv, z, a, b), *_cpu(*w.values()), ref_st["conv_state"],
                                    ref_st["ssm_state"], cu.cpu(), slots.cpu(), init.cpu())
    assert rel(out, ref) <= OUT_TOL, rel(out, ref)
    used = slots.long().cpu()
    assert torch.equal(st["conv_state"].cpu()[used], ref_st["conv_state"][used])
    assert rel(st["ssm_state"].cpu()[used], ref_st["ssm_state"][used]) <= STATE_TOL
    assert torch.equal(st["conv_state"][[1, 3]].cpu(), untouched["conv"])
    assert torch.equal(st["ssm_state"][[1, 3]].cpu(), untouched["ssm"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 17])  # split value columns with the last-CTA norm / one CTA per head
def test_decode_matches_reference(batch, device):
    skip_without_cuda(device)
    qkv, z, a, b, w, st = layer_inputs(batch, 2, 8, slots=batch + 3, seed=batch, device=device)
    slots = torch.randperm(batch + 3, generator=torch.Generator().manual_seed(batch))[:batch].to(device)
    ref_st = _cpu_copy(st)
    out = _decode_raw(qkv, z, a, b, w, st, slots)
    ref = ops.gdn_decode_reference(*_cpu(qkv, z, a, b), *_cpu(*w.values()), ref_st["conv_state"],
                                   ref_st["ssm_state"], slots.cpu())
    assert rel(out, ref) <= 1e-2, rel(out, ref)
    assert torch.equal(st["conv_state"].cpu(), ref_st["conv_state"])
    assert rel(st["ssm_state"].cpu(), ref_st["ssm_state"]) <= 1e-5


def _decode_case(batch, hk, seed, device="cpu"):
    """A gdn_decode step of `batch` sequences (8 value heads): run() -> ((out, ssm_state, conv_state) on copies of
    the caches, the emulator's block count on the CPU), and the reference's output and caches."""
    qkv, z, a, b, w, st = layer_inputs(batch, hk, 8, slots=batch + 2, seed=seed, device=device)
    slots = torch.randperm(batch + 2, generator=torch.Generator().manual_seed(batch))[:batch].to(device)

    def run():
        s = {key: t.clone() for key, t in st.items()}
        if device == "cpu":
            emulator.reset_stats()
        out = _decode_raw(qkv, z, a, b, w, s, slots)
        return (out, s["ssm_state"], s["conv_state"]), emulator.stats()["blocks"] if device == "cpu" else 0
    ref_st = _cpu_copy(st)
    ref = ops.gdn_decode_reference(*_cpu(qkv, z, a, b), *_cpu(*w.values()), ref_st["conv_state"],
                                   ref_st["ssm_state"], slots.cpu())
    return run, ref, ref_st


def _check_against_reference(out, ref, ref_st, what):
    assert rel(out[0].cpu(), ref) <= 1e-2 and rel(out[1].cpu(), ref_st["ssm_state"]) <= 1e-5, what
    assert torch.equal(out[2].cpu(), ref_st["conv_state"]), what


def _gpu_decode_both_ways(monkeypatch, env, batch, hk, seed):
    """gdn_decode on an sm_90 GPU with `env` set to 1, then 0, each checked against the reference: {setting: out}."""
    if not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    run, ref, ref_st = _decode_case(batch, hk, seed, "cuda")
    outs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(env, setting)
        outs[setting] = run()[0]
        _check_against_reference(outs[setting], ref, ref_st, f"{env}={setting}")
    return outs


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_gpu_decode_norm_in_cluster_and_by_last_cta_agree(batch, monkeypatch):
    """The CPU test below on an H100/H200: the cluster (distributed shared memory) and the row's last CTA give the
    same bits where the split is the same (the conv kernel first: not fused)."""
    monkeypatch.setenv("QWEN35_GDN_DECODE_FUSED", "0")
    outs = _gpu_decode_both_ways(monkeypatch, "QWEN35_GDN_DECODE_CLUSTER", batch, 2, 30 + batch)
    if batch > 1:
        assert_bit_identical(outs["0"], outs["1"], "the row's last CTA vs the cluster")


@pytest.mark.gpu
@pytest.mark.parametrize("batch,hk", [(1, 2), (9, 2), (5, 4)])
def test_gpu_decode_conv_inside_the_recurrent_kernel(batch, hk, monkeypatch):
    """The CPU test below on an H100/H200: the conv inside the recurrent kernel gives the conv kernel's conv states,
    and its outputs and ssm states bit for bit where the split is the same (9 x 2 k heads, 5 x 4)."""
    outs = _gpu_decode_both_ways(monkeypatch, "QWEN35_GDN_DECODE_FUSED", batch, hk, 40 + batch)
    if batch > 1:
        assert_bit_identical(outs["1"], outs["0"], "conv inside the recurrent kernel vs the conv kernel first")


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_decode_norm_in_cluster_and_by_last_cta_agree(batch, monkeypatch, two_orders):
    """The gated norm of a head whose value columns are split over CTAs: on sm_90 the head's CTAs form a thread
    block cluster and add each other's sums of squares through distributed shared memory (QWEN35_GDN_DECODE_CLUSTER,
    default on; at most 8 CTAs a head); otherwise the row's last CTA, found by an atomic counter, rereads and
    normalises the row (up to 16). With the same split both add the same slice sums in the same order, so the bits
    are the same: at batch 3 (8 CTAs a head either way) and 17 (one CTA per head, its own norm), at sm_80 too, under
    two thread orders. At batch 1 the split differs (8 against 16 CTAs a head, seen in the emulator's block count),
    and with it the order of the state's sums over rows: both within the reference's tolerance. Any other setting is
    an error. (The conv kernel runs first here: QWEN35_GDN_DECODE_FUSED=0; the next test fuses it.)"""
    env = "QWEN35_GDN_DECODE_CLUSTER"
    monkeypatch.setenv("QWEN35_GDN_DECODE_FUSED", "0")
    run, ref, ref_st = _decode_case(batch, 2, 30 + batch)
    monkeypatch.setenv(env, "1")
    want, cluster_blocks = two_orders(lambda: run()[0]), run()[1]
    monkeypatch.setenv(env, "0")
    got, last_cta_blocks = two_orders(lambda: run()[0]), run()[1]
    with emulator.arch("sm_80"):
        monkeypatch.delenv(env)
        got80 = run()[0]
    for out, what in ((want, "cluster"), (got, "last CTA"), (got80, "sm_80")):
        _check_against_reference(out, ref, ref_st, what)
    if batch == 1:
        assert last_cta_blocks - cluster_blocks == 8 * (16 - 8)
    else:
        assert_bit_identical(got, want, "the row's last CTA vs the cluster")
        assert_bit_identical(got80, want, "sm_80 (the row's last CTA) vs sm_90 (the cluster)")
    monkeypatch.setenv(env, "yes")
    with pytest.raises(RuntimeError, match=f"{env} must be 0 .* 1 .* or unset .* got 'yes'"):
        run()


@pytest.mark.parametrize("batch,hk,same_split", [(1, 2, False), (9, 2, True), (5, 4, True), (20, 2, True)],
                         ids=["1x2k", "9x2k", "5x4k", "20x2k-one-cta-a-head"])
def test_decode_conv_inside_the_recurrent_kernel(batch, hk, same_split, monkeypatch, two_orders):
    """QWEN35_GDN_DECODE_FUSED (default on; sm_90): gdn_decode convolves the token inside the recurrent kernel, one
    thread block cluster per (sequence, k head) -- each CTA its v columns, the q | k channels shared out and read
    through distributed shared memory -- instead of a conv kernel first. The conv states are the conv kernel's bit
    for bit; the outputs and ssm states too where both split a head over the same number of CTAs (at most 8 per k
    head fused: 2 per head at 4 value heads per k head), within the reference's tolerance where not. With one CTA
    per head (batch 20) both run the two kernels. The emulator's block count shows the conv kernel gone; two thread
    orders; sm_80 and QWEN35_GDN_DECODE_FUSED=0 run the two kernels."""
    env, hv = "QWEN35_GDN_DECODE_FUSED", 8
    run, ref, ref_st = _decode_case(batch, hk, 40 + batch)
    monkeypatch.setenv(env, "1")
    fused, fused_blocks = two_orders(lambda: run()[0]), run()[1]
    monkeypatch.setenv(env, "0")
    two, two_blocks = run()
    with emulator.arch("sm_80"):
        monkeypatch.delenv(env)
        two80 = run()[0]
    for out, what in ((fused, "fused"), (two, "conv kernel first"), (two80, "sm_80")):
        _check_against_reference(out, ref, ref_st, what)
    conv_blocks = batch * (2 * hk + hv) * 128 // (8 * 256) or 1   # the conv kernel's CTAs: 256 threads of 8 channels
    if batch == 20:
        assert fused_blocks == two_blocks, "one CTA a head: the two kernels either way"
    else:
        assert two_blocks - fused_blocks >= conv_blocks, (two_blocks, fused_blocks)
    if same_split:
        assert_bit_identical(fused, two, "conv inside the recurrent kernel vs the conv kernel first")
        assert_bit_identical(two80, two, "sm_80 vs sm_90 with the conv kernel first")
    monkeypatch.setenv(env, "on")
    with pytest.raises(RuntimeError, match=f"{env} must be 0 .* 1 .* or unset .* got 'on'"):
        run()


@pytest.mark.parametrize("device", DEVICES)
def test_decode_to_other_slots(device, two_orders):
    """out_slots (speculative verification): the new states land there, the slots read stay as they were, a
    sequence whose out slot is its own slot updates in place, and the other slots are not touched; the same
    states and outputs as the in-place step."""
    skip_without_cuda(device)
    qkv, z, a, b, w, st = layer_inputs(5, 2, 8, slots=12, seed=9, device=device)
    slots = torch.tensor([3, 0, 7, 9, 1], dtype=torch.int64, device=device)
    out_slots = torch.tensor([4, 0, 11, 2, 6], dtype=torch.int64, device=device)   # sequence 1 in place
    before = _cpu_copy(st)
    in_place = _cpu_copy(st)
    want = ops.gdn_decode_reference(*_cpu(qkv, z, a, b), *_cpu(*w.values()), in_place["conv_state"],
                                    in_place["ssm_state"], slots.cpu())

    def run():
        s = {key: t.clone() for key, t in st.items()}
        return _decode_raw(qkv, z, a, b, w, s, slots, out_slots), s["conv_state"], s["ssm_state"]
    got, conv, ssm = two_orders(run) if device == "cpu" else run()
    assert rel(got, want) <= 1e-2, rel(got, want)
    moved, kept = [0, 2, 3, 4], [5, 8, 10]   # sequences whose state moved; slots nobody touches
    src, dst = slots.cpu()[moved], out_slots.cpu()[moved]
    assert torch.equal(conv.cpu()[dst], in_place["conv_state"][src])
    assert rel(ssm.cpu()[dst], in_place["ssm_state"][src]) <= 1e-5
    assert torch.equal(conv.cpu()[0], in_place["conv_state"][0])                   # the in-place sequence
    for t, key in ((conv, "conv_state"), (ssm, "ssm_state")):
        assert torch.equal(t.cpu()[src], before[key][src])                         # what was read is left as it was
        assert torch.equal(t.cpu()[kept], before[key][kept])
    ref_st = _cpu_copy(st)  # the reference with out_slots agrees with all of the above
    ops.gdn_decode_reference(*_cpu(qkv, z, a, b), *_cpu(*w.values()), ref_st["conv_state"], ref_st["ssm_state"],
                             slots.cpu(), out_slots=out_slots.cpu())
    assert torch.equal(conv.cpu(), ref_st["conv_state"]) and rel(ssm.cpu(), ref_st["ssm_state"]) <= 1e-5


def test_decode_out_slots_errors():
    qkv, z, a, b, w, st = layer_inputs(2, 1, 2, slots=4, seed=1)

    def call(out_slots):
        ops.gdn_decode(qkv, z, a, b, *w.values(), st["conv_state"], st["ssm_state"], torch.tensor([0, 1]),
                       out_slots=out_slots, backend="kernel")

    with pytest.raises(ValueError, match="out_slots must equal slots or name slots no sequence reads"):
        call(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="out_slots must have the dtype of slots"):
        call(torch.tensor([2, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="out_slots must not repeat a slot"):
        call(torch.tensor([2, 2]))
    with pytest.raises(ValueError, match=r"out_slots values must be in \[0, num_slots=4\)"):
        call(torch.tensor([2, 4]))


def test_layer_two_orders(two_orders):
    qkv, z, a, b, w, st = layer_inputs(80, 1, 2, slots=3, seed=3)

    def prefill_then_decode():
        s = {key: t.clone() for key, t in st.items()}
        cu, slots = cu_of([70, 8]), torch.tensor([2, 0], dtype=torch.int32)
        out = _prefill_raw(qkv[:78], z[:78], a[:78], b[:78], w, s, cu, slots, torch.tensor([True, False]))
        dec = _decode_raw(qkv[78:], z[78:], a[78:], b[78:], w, s, slots)
        return out, dec, s["conv_state"], s["ssm_state"]
    two_orders(prefill_then_decode)


@pytest.mark.parametrize("device", DEVICES)
def test_decode_steps_agree_with_chunked_prefill(device):
    """One sequence of 100 tokens: the chunked prefill over all of it vs a 1-token prefill and 99 decode steps."""
    skip_without_cuda(device)
    T = 100
    qkv, z, a, b, w, st = layer_inputs(T, 1, 2, slots=2, seed=4, device=device)
    whole = {key: t.clone() for key, t in st.items()}
    one = torch.tensor([1], dtype=torch.int32, device=device)
    out_chunk = _prefill_raw(qkv, z, a, b, w, whole, cu_of([T], device), one, torch.tensor([True], device=device))
    steps = [_prefill_raw(qkv[:1], z[:1], a[:1], b[:1], w, st, cu_of([1], device), one,
                          torch.tensor([True], device=device))]
    for t in range(1, T):
        steps.append(_decode_raw(qkv[t:t + 1], z[t:t + 1], a[t:t + 1], b[t:t + 1], w, st, one))
    assert rel(torch.cat(steps), out_chunk) <= OUT_TOL
    assert torch.equal(st["conv_state"], whole["conv_state"])
    assert rel(st["ssm_state"][1], whole["ssm_state"][1]) <= STATE_TOL


def test_layer_wrappers_pick_kernel_and_reference():
    qkv, z, a, b, w, st = layer_inputs(9, 1, 2, slots=2, seed=5)
    args = dict(cu_seqlens=cu_of([9]), slots=torch.tensor([1]), has_initial_state=torch.tensor([True]))
    s1, s2 = _cpu_copy(st), _cpu_copy(st)
    k_out = ops.gdn_prefill(qkv, z, a, b, **w, **s1, **args, backend="kernel")
    r_out = ops.gdn_prefill(qkv, z, a, b, **w, **s2, **args, backend="reference")
    assert rel(k_out, r_out) <= OUT_TOL and not torch.equal(k_out, r_out)
    qkv32, z32, a32, b32 = (t.float() for t in (qkv, z, a, b))
    w32 = {key: t.float() for key, t in w.items()}
    s32 = {key: t.float() for key, t in st.items()}
    with pytest.raises(ValueError, match="gdn_prefill: backend='kernel' does not support this input: mixed_qkv has "
                                         "dtype float32"):
        ops.gdn_prefill(qkv32, z32, a32, b32, **w32, **s32, **args, backend="kernel")
    dec = ops.gdn_decode(qkv32[:1], z32[:1], a32[:1], b32[:1], **w32, **s32, slots=torch.tensor([0]),
                         backend="kernel")  # the decode kernel takes float32
    assert dec.shape == (1, 256) and not dec.isnan().any()
