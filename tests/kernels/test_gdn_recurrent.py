"""fused_recurrent_gated_delta_rule on its kernel (decode steps, T = 1 per sequence, batch 1..40 so that both the
split-value-column and the one-CTA-per-head launches run; multi-token verification with every intermediate state)
against the float64 token-by-token reference; outputs poisoned and guarded, two thread orders bit-identical.
Kernel: csrc/kernels/gdn/gdn_recurrent.cu."""

import pytest
import torch
from gdn_helpers import DEVICES, HEADS, D, Guarded, cu_of, f64, make_scan_inputs, rel, skip_without_cuda

from qwen35_native import ops

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}  # output: one rounding; states fp32


def _batch(B, T, hk, hv, dtype, seed, device, with_state=True):
    q, k, v, g, beta, state = make_scan_inputs([T] * B, hk, hv, with_state, seed, dtype, decay=(0.0, 1.0),
                                               device=device)
    split = lambda t: t.reshape(B, T, *t.shape[2:])  # noqa: E731
    return split(q), split(k), split(v), split(g), split(beta), state


def _recurrent_raw(q, k, v, g, beta, state, cu, num_seqs, want_final=True, want_states=True):
    """The raw op on packed inputs with poisoned, guarded outputs; returns (o, final, states)."""
    T, hv = q.shape[0], v.shape[1]
    n = cu.numel() - 1 if cu is not None else num_seqs
    o = Guarded((T, hv, D), q.dtype, q.device)
    final = Guarded((n, hv, D, D), torch.float32, q.device) if want_final else None
    states = Guarded((T, hv, D, D), torch.float32, q.device) if want_states else None
    torch.ops.qwen35_native.fused_recurrent_gated_delta_rule(q, k, v, g, beta, D ** -0.5, state, cu, num_seqs, True,
                                                             o.t, final and final.t, states and states.t)
    for name, out in (("o", o), ("final_state", final), ("intermediate_states", states)):
        if out is not None:
            out.check(f"fused_recurrent_gated_delta_rule {name}")
    return o.t, final and final.t, states and states.t


def _reference(q, k, v, g, beta, state, cu=None):
    return ops.fused_recurrent_gated_delta_rule_reference(f64(q), f64(k), f64(v), f64(g), f64(beta), None, f64(state),
                                                          True, cu, True, True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B", [1, 5, 40])
@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"{h[0]}x{h[1]}")
def test_decode_step_matches_float64(heads, B, device):
    skip_without_cuda(device)
    q, k, v, g, beta, state = _batch(B, 1, *heads, torch.bfloat16, seed=B + heads[1], device=device)
    o, final = ops.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=True,
                                                    use_qk_l2norm_in_kernel=True, backend="kernel")
    o_ref, final_ref, _ = _reference(q, k, v, g, beta, state)
    assert rel(o, o_ref) <= TOL[torch.bfloat16] and rel(final, final_ref) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_multi_token_keeps_every_state(dtype, device):
    """T = 4 draft tokens per sequence: outputs and the state after every token; nothing written back."""
    skip_without_cuda(device)
    q, k, v, g, beta, state = _batch(3, 4, 2, 6, dtype, seed=7, device=device)
    before = state.clone()
    packed = [t.reshape(12, *t.shape[2:]) for t in (q, k, v, g, beta)]
    o, final, states = _recurrent_raw(*packed, state, None, 3, want_final=False)
    o_ref, _, states_ref = _reference(q, k, v, g, beta, state)
    assert final is None and torch.equal(state, before)
    assert rel(o, o_ref.reshape(o.shape)) <= TOL[dtype]
    assert rel(states, states_ref.reshape(states.shape)) <= 1e-5
    o2, none, states2 = ops.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state,
                                                             use_qk_l2norm_in_kernel=True,
                                                             output_intermediate_states=True, backend="kernel")
    assert none is None and torch.equal(o2.reshape(o.shape), o) and torch.equal(states2.reshape(states.shape), states)


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_without_initial_state(device):
    skip_without_cuda(device)
    lens = [3, 0, 6]
    q, k, v, g, beta, _ = make_scan_inputs(lens, 1, 2, False, seed=8, device=device)
    cu = cu_of(lens, device, torch.int64)
    o, final, states = _recurrent_raw(q[0], k[0], v[0], g[0], beta[0], None, cu, 0)
    o_ref, final_ref, states_ref = _reference(q, k, v, g, beta, None, cu.cpu())
    assert rel(o, o_ref[0]) <= TOL[torch.bfloat16] and rel(final, final_ref) <= 1e-5
    assert rel(states, states_ref[0]) <= 1e-5
    assert not final[1].any()  # the empty sequence keeps its zero state


def test_recurrent_two_orders(two_orders):
    q, k, v, g, beta, state = _batch(2, 3, 2, 8, torch.bfloat16, seed=9, device="cpu")
    packed = [t.reshape(6, *t.shape[2:]) for t in (q, k, v, g, beta)]
    two_orders(_recurrent_raw, *packed, state, None, 2)


def test_recurrent_unsupported():
    q = torch.randn(2, 1, 1, 64)
    with pytest.raises(ValueError, match="fused_recurrent_gated_delta_rule: backend='kernel' does not support this "
                                         "input: head dims K=64, V=64"):
        ops.fused_recurrent_gated_delta_rule(q, q, q, -torch.rand(2, 1, 1), torch.rand(2, 1, 1), backend="kernel")
    q = torch.randn(6, 1, 128)
    with pytest.raises(RuntimeError, match="the 6 tokens must split evenly into num_seqs sequences, got num_seqs=4"):
        torch.ops.qwen35_native.fused_recurrent_gated_delta_rule(q, q, q, -torch.rand(6, 1), torch.rand(6, 1), 0.1,
                                                                 None, None, 4, True, torch.empty(6, 1, 128), None,
                                                                 None)


@pytest.mark.gpu
def test_gpu_recurrent_matches_emulator():
    q, k, v, g, beta, state = _batch(5, 3, 2, 8, torch.bfloat16, seed=10, device="cpu")
    packed = [t.reshape(15, *t.shape[2:]) for t in (q, k, v, g, beta)]
    cpu = _recurrent_raw(*packed, state, None, 5)
    gpu = _recurrent_raw(*(t.cuda() for t in packed), state.cuda(), None, 5)
    for a, b in zip(gpu, cpu):
        assert rel(a, b) <= 1e-3
