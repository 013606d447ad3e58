"""The chunk kernel with long sequences split into segments on different CTAs (PERF_TARGETS.md, "Splitting one long
GDN sequence across SMs"): the decay shortcut (warm-up chunks from zero) where the gates decay strongly, the exact
affine chain (segment states from zero + transition maps, composed in order) where they do not, both against the
float64 reference; the plan picks the path from the actual gates (checked bit for bit against the forced paths),
and forcing the shortcut on a weak-decay input is visibly wrong (so the weak-decay tests do exercise the chain).
Kernels: csrc/kernels/gdn/gdn_chunk.cu, gdn_chunk_split.cu."""

import pytest
import torch
from gdn_helpers import (
    DEVICES,
    OUT_TOL,
    STATE_TOL,
    chunk_raw,
    chunk_reference64,
    cu_of,
    layer_inputs,
    make_scan_inputs,
    rel,
    skip_without_cuda,
)

from qwen35_native import ops
from utils import assert_bit_identical

STRONG = (1.0, 3.0)     # -g per token: a 64-token chunk decays by e^-128 (exactly 0 in fp32)
MODERATE = (0.15, 0.35)  # a chunk decays by about e^-16: the shortcut holds, to fp32 rounding
WEAK = (0.0, 0.01)      # four chunks decay by about e^-1.3: no shortcut
FORCE_SHORTCUT = 1e30   # shortcut_log_decay that every warm-up chunk meets
FORCE_CHAIN = -1e30     # ... that none meets


def _split(lens, decay, seg, shortcut, device="cpu", with_state=True, l2norm=True, seed=0, heads=(1, 1)):
    q, k, v, g, beta, state = make_scan_inputs(lens, *heads, with_state, seed, decay=decay, l2norm=l2norm,
                                               device=device)
    cu = cu_of(lens, device)
    o, final = chunk_raw(q, k, v, g, beta, state, cu, l2norm, segment_len=seg, shortcut=shortcut)
    o_ref, final_ref = chunk_reference64(q, k, v, g, beta, state, cu, l2norm)
    return o, final, rel(o, o_ref), rel(final, final_ref)


@pytest.mark.parametrize("device", DEVICES)
def test_split_strong_decay_takes_the_shortcut(device):
    skip_without_cuda(device)
    o, final, err_o, err_s = _split([600], STRONG, 128, ops.gdn.SHORTCUT_LOG_DECAY, device)
    assert err_o <= OUT_TOL and err_s <= STATE_TOL, (err_o, err_s)
    o_short, final_short, _, _ = _split([600], STRONG, 128, FORCE_SHORTCUT, device)
    assert_bit_identical((o, final), (o_short, final_short), "plan on strong decay vs forced shortcut")
    _, _, err_o, err_s = _split([600], STRONG, 128, FORCE_CHAIN, device)  # the exact chain is right too
    assert err_o <= OUT_TOL and err_s <= STATE_TOL, (err_o, err_s)


@pytest.mark.parametrize("device", DEVICES)
def test_split_weak_decay_takes_the_exact_chain(device):
    skip_without_cuda(device)
    o, final, err_o, err_s = _split([600], WEAK, 128, ops.gdn.SHORTCUT_LOG_DECAY, device)
    assert err_o <= OUT_TOL and err_s <= STATE_TOL, (err_o, err_s)
    o_chain, final_chain, _, _ = _split([600], WEAK, 128, FORCE_CHAIN, device)
    assert_bit_identical((o, final), (o_chain, final_chain), "plan on weak decay vs forced chain")
    _, _, err_o, err_s = _split([600], WEAK, 128, FORCE_SHORTCUT, device)
    assert err_o > 5 * OUT_TOL and err_s > 5 * STATE_TOL, ("the shortcut must be wrong here", err_o, err_s)


@pytest.mark.parametrize("device", DEVICES)
def test_split_varlen_mixed(device):
    """Several sequences (one empty, some shorter than a segment, initial states), weak and strong decay, and the
    chain without the in-kernel L2 norm (the shortcut needs it)."""
    skip_without_cuda(device)
    for decay in (WEAK, STRONG):
        _, _, err_o, err_s = _split([330, 0, 70, 260], decay, 128, ops.gdn.SHORTCUT_LOG_DECAY, device, seed=1)
        assert err_o <= OUT_TOL and err_s <= STATE_TOL, (decay, err_o, err_s)
    _, _, err_o, err_s = _split([400], STRONG, 64, ops.gdn.SHORTCUT_LOG_DECAY, device, l2norm=False, seed=2)
    assert err_o <= OUT_TOL and err_s <= STATE_TOL, (err_o, err_s)


def test_split_auto_segments():
    """No segment length given: one sequence and one head on a 132-SM plan split into 512-token segments."""
    lens = [1100]
    q, k, v, g, beta, state = make_scan_inputs(lens, 1, 1, True, seed=3, decay=MODERATE)
    cu = cu_of(lens)
    o, final = chunk_raw(q, k, v, g, beta, state, cu, segment_len=0)
    o_one, final_one = chunk_raw(q, k, v, g, beta, state, cu, segment_len=2048)  # one segment
    o_ref, final_ref = chunk_reference64(q, k, v, g, beta, state, cu)
    assert rel(o, o_ref) <= OUT_TOL and rel(final, final_ref) <= STATE_TOL
    assert not torch.equal(o, o_one)  # the segments did start from their own (warm-up) states
    assert rel(o, o_one) <= OUT_TOL


def test_split_two_orders_bit_identical(two_orders):
    q, k, v, g, beta, state = make_scan_inputs([450], 1, 1, True, seed=4, decay=WEAK)
    two_orders(chunk_raw, q, k, v, g, beta, state, cu_of([450]), segment_len=64)


@pytest.mark.parametrize("device", DEVICES)
def test_prefill_split_in_place(device):
    """gdn_prefill with segments: states by slot, read and written in place (the plan kernel snapshots the initial
    states before any segment overwrites its slot), unused slots untouched."""
    skip_without_cuda(device)
    qkv, z, a, b, w, st = layer_inputs(600, hk=1, hv=2, slots=4, seed=5, device=device, decay_scale=5e-4)
    cu = cu_of([450, 150], device)
    slots = torch.tensor([3, 0], dtype=torch.int32, device=device)
    init = torch.tensor([True, False], device=device)
    st["ssm_state"][0] = float("nan")  # no initial state: must be overwritten without being read
    ref_conv, ref_ssm = (st[key].cpu().clone() for key in ("conv_state", "ssm_state"))
    untouched = st["ssm_state"][1:3].clone()
    out = torch.empty(600, 256, dtype=qkv.dtype, device=device)
    torch.ops.qwen35_native.gdn_prefill(qkv, z, a, b, *w.values(), st["conv_state"], st["ssm_state"], cu, slots,
                                        init, 1e-6, 128, ops.gdn.SHORTCUT_LOG_DECAY, out)
    ref = ops.gdn_prefill_reference(qkv.cpu(), z.cpu(), a.cpu(), b.cpu(), *(t.cpu() for t in w.values()), ref_conv,
                                    ref_ssm, cu.cpu(), slots.cpu(), init.cpu())
    assert rel(out, ref) <= OUT_TOL
    assert rel(st["ssm_state"][[3, 0]], ref_ssm[[3, 0]]) <= STATE_TOL
    assert torch.equal(st["conv_state"].cpu(), ref_conv)
    assert torch.equal(st["ssm_state"][1:3], untouched)
