"""``qwen35 self-check``: every kernel family on every backend this machine has, against its pure-torch reference,
on small random inputs (a few seconds on the CPU, where the kernels run under the SIMT emulator).

On an sm_90 GPU each case that has a Hopper (sm_90a) kernel runs three times: with the default path choice, with
``QWEN35_SM90A=1`` (the sm_90a kernel) and with ``QWEN35_SM90A=0`` (its ``mma.sync`` twin), so one command tells
whether both kernels agree with the references on this GPU; the GDN chunk scan a fourth time as the fused scan
without its chunk-local pre-pass (``QWEN35_GDN_PREPASS=0``), the MoE experts a fourth time with gate_up on rows
copied into tile order (``QWEN35_MOE_SORTED_ROWS=1``) and a fifth in 2-CTA clusters (``QWEN35_MOE_CLUSTER=1``).
Prints one line per case; exit status 1 when any case is off by more than its bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager

import torch

from . import ops

# name: (builder(device, gen) -> (kernel output, reference output), bound on the relative error, has an sm_90a path)
Case = tuple[Callable[[str, torch.Generator], tuple[torch.Tensor, torch.Tensor]], float, bool]


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def _rms_norm(device, gen):
    x = _randn(gen, 7, 1000).to(device, torch.bfloat16)
    w = _randn(gen, 1000, scale=0.1).to(device)
    return ops.rms_norm(x, w, backend="kernel"), ops.rms_norm_reference(x.float(), w)


def _gated_rms_norm(device, gen):
    x, z = (_randn(gen, 9, 2, 128).to(device, torch.bfloat16) for _ in range(2))
    w = _randn(gen, 128, scale=0.1).add(1).to(device, torch.bfloat16)
    return (ops.gated_rms_norm(x, z, w, backend="kernel"),
            ops.gated_rms_norm(x.float(), z.float(), w.float(), backend="reference"))


def _gdn_inputs(device, gen, T, heads=2):
    q, k, v = (_randn(gen, 1, T, heads, 128).to(device, torch.bfloat16) for _ in range(3))
    g = -torch.rand(1, T, heads, generator=gen).mul(0.5).to(device)
    beta = torch.rand(1, T, heads, generator=gen).to(device, torch.bfloat16)
    state = _randn(gen, 1, heads, 128, 128, scale=0.1).to(device)
    return q, k, v, g, beta, state


def _gdn_scan(device, gen, T, scan):
    """(output, final state) of a GDN scan op (FLA conventions) by the kernel and by the reference, flattened."""
    q, k, v, g, beta, state = _gdn_inputs(device, gen, T=T)
    run = lambda backend: scan(  # noqa: E731
        q, k, v, g, beta, initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True, backend=backend)
    (o, s), (o_ref, s_ref) = run("kernel"), run("reference")
    return torch.cat([o.float().flatten(), s.flatten()]), torch.cat([o_ref.float().flatten(), s_ref.flatten()])


def _gdn_chunk(device, gen):
    return _gdn_scan(device, gen, 100, ops.chunk_gated_delta_rule)


def _gdn_decode(device, gen):
    return _gdn_scan(device, gen, 3, ops.fused_recurrent_gated_delta_rule)


def _moe(device, gen):
    N, E, k, H, inter = 100, 4, 2, 128, 64   # 50 rows per expert: the prefill (and sm_90a) kernels
    x = _randn(gen, N, H).to(device, torch.bfloat16)
    w13 = _randn(gen, E, 2 * inter, H, scale=H ** -0.5).to(device, torch.bfloat16)
    w2 = _randn(gen, E, H, inter, scale=inter ** -0.5).to(device, torch.bfloat16)
    weights, ids = ops.moe_route(_randn(gen, N, E).to(device), k, backend="reference")
    return (ops.fused_moe(x, w13, w2, weights, ids, backend="kernel"),
            ops.fused_moe(x, w13, w2, weights, ids, backend="reference"))


def _skinny_linear(device, gen):
    M, N, K = 3, 200, 512   # a decode step's few rows; the SwiGLU epilogue of the shared expert
    x = _randn(gen, M, K).to(device, torch.bfloat16)
    w13 = _randn(gen, 2 * N, K, scale=K ** -0.5).to(device, torch.bfloat16)
    return (ops.swiglu_linear(x, w13, backend="kernel"),
            ops.swiglu_linear_reference(x.float(), w13.float()))


def _attention_prefill(device, gen):
    Hq, Hkv, D, block, context, new = 4, 1, 256, 64, 40, 90
    total = context + new
    blocks = -(-total // block)
    table = torch.randperm(blocks + 1, generator=gen)[:blocks].to(torch.int32)[None]
    k_cache, v_cache = (_randn(gen, blocks + 1, block, Hkv, D).to(device, torch.bfloat16) for _ in range(2))
    q = _randn(gen, new, Hq, D).to(device, torch.bfloat16)
    gate = _randn(gen, new, Hq * D).to(device, torch.bfloat16)
    cu = torch.tensor([0, new], dtype=torch.int32, device=device)
    lens = torch.tensor([total], dtype=torch.int32, device=device)
    run = lambda backend: ops.paged_prefill_attention(  # noqa: E731
        q, k_cache, v_cache, cu, lens, table.to(device), gate=gate, backend=backend)
    return run("kernel"), run("reference")


CASES: dict[str, Case] = {
    "rms_norm": (_rms_norm, 1e-2, False),
    "gated_rms_norm": (_gated_rms_norm, 1e-2, False),
    "chunk_gated_delta_rule": (_gdn_chunk, 2e-2, True),
    "fused_recurrent_gated_delta_rule": (_gdn_decode, 2e-2, False),
    "fused_moe": (_moe, 2e-2, True),
    "swiglu_linear": (_skinny_linear, 1e-2, False),
    "paged_prefill_attention": (_attention_prefill, 2e-2, True),
}


# More path settings to check on an sm_90 GPU for some cases: (environment, what it selects).
HOPPER_SETTINGS = [({"QWEN35_SM90A": "1"}, "the sm_90a kernel"), ({"QWEN35_SM90A": "0"}, "the sm_80 kernel")]
EXTRA_HOPPER_SETTINGS = {
    "chunk_gated_delta_rule": [({"QWEN35_SM90A": "1", "QWEN35_GDN_PREPASS": "0"},
                                "the fused sm_90a kernel (no pre-pass)")],
    "fused_moe": [({"QWEN35_SM90A": "1", "QWEN35_MOE_SORTED_ROWS": "1"}, "the sm_90a kernels on sorted rows"),
                  ({"QWEN35_SM90A": "1", "QWEN35_MOE_CLUSTER": "1"}, "the sm_90a kernels in 2-CTA clusters")],
}


@contextmanager
def _env(settings: dict[str, str]):
    old = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _run_case(name: str, device: str, label: str, print_fn) -> bool:
    build, bound, _ = CASES[name]
    try:
        out, ref = build(device, torch.Generator().manual_seed(0))
        err = ((out.float().cpu() - ref.float().cpu()).norm() / ref.float().cpu().norm()).item()
    except Exception as exc:  # a failing kernel is a result to report, not a crash of the check
        print_fn(f"{name} on {label}: FAILED ({type(exc).__name__}: {exc})")
        return False
    passed = err <= bound   # NaN fails
    print_fn(f"{name} on {label}: relative error {err:.2e} vs fp32 reference (bound {bound:g}) -> "
             f"{'ok' if passed else 'FAILED'}")
    return passed


def run_self_check(devices: list[str], print_fn=print) -> bool:
    """Runs every case on each device (and, on an sm_90 GPU, again with each path forced); True when all pass."""
    ok = True
    for device in devices:
        hopper = device == "cuda" and torch.cuda.get_device_capability() == (9, 0)
        for name, (_, _, has_sm90a) in CASES.items():
            ok &= _run_case(name, device, device, print_fn)
            if hopper and has_sm90a:
                for settings, kernel in HOPPER_SETTINGS + EXTRA_HOPPER_SETTINGS.get(name, []):
                    label = " ".join(f"{key}={value}" for key, value in settings.items())
                    with _env(settings):
                        ok &= _run_case(name, device, f"{device} ({label}: {kernel})", print_fn)
    return ok
