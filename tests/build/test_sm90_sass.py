"""The sm_90a wrappers (q35/ptx/{wgmma,tma,mbarrier,warpgroup,cluster}.cuh) emit the Hopper instructions, checked
without a GPU in the SASS of the emulator's test kernels (qwen35_native._emu_tests): HGMMA, UTMALDG / UTMASTG, the
mbarrier SYNCS ops and USETMAXREG in the sm_90a code; none of them in the sm_80 code, whose copies only trap.
The same for the sm_90a kernels of the extension (qwen35_native._C, MODEL_KERNELS), each instantiation on its
own, plus: their wgmmas stay asynchronous (no compiler-inserted warpgroup waits beyond the kernel's own)."""

from __future__ import annotations

import re

import pytest
from sass_dump import built_archs, sass_functions

KERNELS = {
    "hopper_gemm_kernel": ("HGMMA.64x128x16.F32", "UTMALDG.2D", "UTMASTG.2D", "SYNCS.PHASECHK", "USETMAXREG"),
    "wgmma_probe_kernel": ("HGMMA.64x8x16.F32", "HGMMA.64x256x16.F32", "WARPGROUP"),
    "tma_probe_kernel": ("UTMALDG.2D", "UTMALDG.3D", "UTMASTG.3D", "SYNCS.ARRIVE"),
    "mbarrier_probe_kernel": ("SYNCS.ARRIVE", "SYNCS.PHASECHK"),
    # clusters (q35/ptx/cluster.cuh): the cluster barrier, remote mbarrier arrivals, TMA multicast
    "cluster_probe_kernel": ("UCGABAR_ARV", "UCGABAR_WAIT", "SYNCS.ARRIVE.TRANS64.RED"),
    "cluster_tma_kernel": ("UTMALDG.2D.MULTICAST", "UCGABAR_ARV", "UCGABAR_WAIT", "SYNCS.PHASECHK"),
}
HOPPER_ONLY = ("HGMMA", "UTMALDG", "UTMASTG", "SYNCS", "USETMAXREG", "UCGABAR")
ATTN_COMMON = ("HGMMA.64x64x16.F32", "HGMMA.64x256x16.F32", "UTMALDG.3D", "LDGSTS.E.BYPASS.128", "FENCE.VIEW.ASYNC.S",
               "SYNCS.PHASECHK", "USETMAXREG")
# sm_90a kernels of _C, by a regular expression over the mangled name (the bf16 and fp16 instantiations):
# (instructions, wgmma.wait_group calls in the source = WARPGROUP.DEPBAR in the SASS)
MODEL_KERNELS = {
    # <T, sorted rows, pair>: gathering hidden rows with cp.async (fenced to the async proxy), or TMA boxes of sorted
    # rows; one CTA per 128-row tile, or 2-CTA clusters multicasting the weight tile (cluster barrier, remote arrivals)
    r"moe_gate_up_sm90a_kernelI\w+Lb0ELb0EE": (("HGMMA.64x256x16.F32", "UTMALDG.3D", "LDGSTS.E.BYPASS.128",
                                                "FENCE.VIEW.ASYNC.S", "SYNCS.PHASECHK", "USETMAXREG"), 2),
    r"moe_gate_up_sm90a_kernelI\w+Lb1ELb0EE": (("HGMMA.64x256x16.F32", "UTMALDG.3D", "UTMALDG.2D", "SYNCS.PHASECHK",
                                                "USETMAXREG"), 2),
    r"moe_gate_up_sm90a_kernelI\w+Lb0ELb1EE": (("HGMMA.64x256x16.F32", "UTMALDG.3D.MULTICAST", "LDGSTS.E.BYPASS.128",
                                                "UCGABAR_ARV", "UCGABAR_WAIT", "SYNCS.ARRIVE.TRANS64.RED"), 2),
    r"moe_gate_up_sm90a_kernelI\w+Lb1ELb1EE": (("HGMMA.64x256x16.F32", "UTMALDG.3D.MULTICAST", "UTMALDG.2D",
                                                "UCGABAR_ARV", "UCGABAR_WAIT", "SYNCS.ARRIVE.TRANS64.RED"), 2),
    r"moe_down_sm90a_kernelI\w+Lb0EE": (("HGMMA.64x256x16.F32", "UTMALDG.3D", "UTMALDG.2D", "SYNCS.PHASECHK",
                                        "USETMAXREG"), 2),
    r"moe_down_sm90a_kernelI\w+Lb1EE": (("HGMMA.64x256x16.F32", "UTMALDG.3D.MULTICAST", "UTMALDG.2D", "UCGABAR_ARV",
                                        "UCGABAR_WAIT", "SYNCS.ARRIVE.TRANS64.RED"), 2),
    # S = Q K^T (SS, m64n64), O += P V (RS, m64n256), TMA of K/V, the V transpose (LDSM.T + STSM), Q by cp.async;
    # <T, ping-pong, V MN-major>: ping-pong adds the named barriers between the issues (BAR.ARV), V MN-major drops
    # the transpose (no STSM; P V with imm-trans-b)
    r"prefill_attention_sm90a_kernelI\w+Lb0ELb0EE": (ATTN_COMMON + ("LDSM.16.MT88.4", "STSM.16.M88.4"), 4),
    r"prefill_attention_sm90a_kernelI\w+Lb1ELb0EE": (ATTN_COMMON + ("LDSM.16.MT88.4", "STSM.16.M88.4", "BAR.ARV"), 4),
    r"prefill_attention_sm90a_kernelI\w+Lb0ELb1EE": (ATTN_COMMON, 4),
    r"prefill_attention_sm90a_kernelI\w+Lb1ELb1EE": (ATTN_COMMON + ("BAR.ARV",), 4),
    # GDN chunk scan: m64n64 (K K^T, Q K^T, w, v_new, o) and m64n128 (state update) wgmmas, q/k/v by TMA (3D)
    # on mbarriers, generic writes fenced to the async proxy; 4 waits (kkt, w, value, state stages)
    r"gdn_chunk_sm90a_kernelI\w+Lb0E": (("HGMMA.64x64x16.F32", "HGMMA.64x128x16.F32", "UTMALDG.3D", "SYNCS.PHASECHK",
                                        "FENCE.VIEW.ASYNC.S", "LDSM.16.MT88.4"), 4),
    # ... after the chunk-local pre-pass: Tu, P, -w by TMA (2D) too; 2 waits (value, state stages)
    r"gdn_chunk_sm90a_kernelI\w+Lb1E": (("HGMMA.64x64x16.F32", "HGMMA.64x128x16.F32", "UTMALDG.3D", "UTMALDG.2D",
                                        "SYNCS.PHASECHK", "FENCE.VIEW.ASYNC.S", "LDSM.16.MT88.4"), 2),
}


@pytest.fixture(scope="module")
def sass() -> dict[tuple[str, str], str]:
    return sass_functions("_emu_tests*.so")


@pytest.fixture(scope="module")
def model_sass() -> dict[tuple[str, str], str]:
    return sass_functions("_C*.so")


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_sm90a_code_has_the_hopper_instructions(sass, kernel):
    if "sm_90a" not in built_archs():
        pytest.skip("built without sm_90a")
    bodies = [s for (arch, name), s in sass.items() if arch == "sm_90a" and kernel in name]
    assert bodies, f"no sm_90a SASS for {kernel}"
    code = "".join(bodies)
    for instruction in KERNELS[kernel]:
        assert instruction in code, f"{kernel}: no {instruction} in its sm_90a SASS"


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_sm80_code_only_traps(sass, kernel):
    if "sm_80" not in built_archs():
        pytest.skip("built without sm_80")
    bodies = [s for (arch, name), s in sass.items() if arch == "sm_80" and kernel in name]
    assert bodies, f"no sm_80 SASS for {kernel}"
    code = "".join(bodies)
    assert not any(op in code for op in HOPPER_ONLY), f"{kernel}: Hopper instructions in sm_80 code"
    assert "BPT.TRAP" in code, f"{kernel}: the sm_80 copy should trap"


@pytest.mark.parametrize("kernel", sorted(MODEL_KERNELS))
def test_sm90a_model_kernels_have_the_hopper_instructions(model_sass, kernel):
    if "sm_90a" not in built_archs():
        pytest.skip("built without sm_90a")
    bodies = {name: s for (arch, name), s in model_sass.items() if arch == "sm_90a" and re.search(kernel, name)}
    assert len(bodies) == 2, f"expected the bf16 and fp16 sm_90a instantiations of {kernel}, got {sorted(bodies)}"
    instructions, waits = MODEL_KERNELS[kernel]
    for name, code in bodies.items():
        for instruction in instructions:
            assert instruction in code, f"{name}: no {instruction} in its sm_90a SASS"
        if kernel.endswith("Lb1EE") and kernel.startswith("prefill_attention"):  # V MN-major: no transpose
            assert "STSM" not in code, f"{name}: V read MN-major should not transpose it"
        if kernel.endswith("Lb1ELb0EE") and kernel.startswith("moe_gate_up"):  # sorted rows: TMA only, no gather
            assert "LDGSTS" not in code, f"{name}: the sorted-rows gate_up should not gather with cp.async"
        depbars = code.count("WARPGROUP.DEPBAR")
        assert depbars == waits, (f"{name}: {depbars} WARPGROUP.DEPBAR for {waits} wgmma.wait_group in the source: "
                                  "ptxas serialised the wgmmas (see its C75xx notes with QWEN35_PTXAS_VERBOSE=1)")


@pytest.mark.parametrize("kernel", sorted(MODEL_KERNELS))
def test_sm80_copies_of_the_model_kernels_only_trap(model_sass, kernel):
    if "sm_80" not in built_archs():
        pytest.skip("built without sm_80")
    bodies = [s for (arch, name), s in model_sass.items() if arch == "sm_80" and re.search(kernel, name)]
    assert len(bodies) == 2, f"no sm_80 SASS for the two instantiations of {kernel}"
    for code in bodies:
        assert not any(op in code for op in HOPPER_ONLY), f"{kernel}: Hopper instructions in sm_80 code"
        assert "BPT.TRAP" in code, f"{kernel}: the sm_80 copy should trap"


def test_the_gdn_prepass_writes_16_bytes_per_store(model_sass):
    """gdn_chunk_prep_kernel writes its tiles 16 bytes per thread: one STG.E.128 each, where a plain uint4 assignment
    had compiled to four 4-byte STG.E (ncu on an H200: 72 % of its global sectors were the excess of those)."""
    if "sm_90a" not in built_archs():
        pytest.skip("built without sm_90a")
    bodies = {name: s for (arch, name), s in model_sass.items() if arch == "sm_90a" and "gdn_chunk_prep_kernel" in name}
    assert len(bodies) == 2, f"expected the bf16 and fp16 pre-pass kernels, got {sorted(bodies)}"
    for name, code in bodies.items():
        stores = re.findall(r"\bSTG\.E[\w.]*", code)
        assert stores and all(".128" in s for s in stores), f"{name}: narrower global stores {sorted(set(stores))}"


@pytest.mark.parametrize("fused", [False, True], ids=["cluster-norm", "fused-conv"])
def test_the_gdn_decode_cluster_kernels_use_the_cluster_barrier_not_atomics(model_sass, fused):
    """gdn_recurrent_kernel<T, kVs, kCluster = true, kFused> (the gated norm of a head split over a cluster; kFused:
    the conv too, q | k handed over in the cluster): the cluster barrier's arrive and wait, distributed shared memory
    instead of the row counters' atomics, for every type and slice width; the sm_80 copies trap (the launchers take
    them only on sm_90)."""
    kernels = {(arch, name): s for (arch, name), s in model_sass.items()
               if re.search(r"gdn_recurrent_kernelI\w+Lb1ELb" + ("1E" if fused else "0E"), name)}
    count = 6 if fused else 9  # fused: bf16 / fp16 x 16, 32, 64 columns; else fp32 too
    for arch, want_traps in (("sm_90a", False), ("sm_80", True)):
        if arch not in built_archs():
            continue
        bodies = {name: s for (a, name), s in kernels.items() if a == arch}
        assert len(bodies) == count, f"expected {count} cluster kernels ({arch}), got {len(bodies)}"
        for name, code in bodies.items():
            if want_traps:
                assert "BPT.TRAP" in code and "UCGABAR" not in code, name
                continue
            for instruction in ("UCGABAR_ARV", "UCGABAR_WAIT"):
                assert instruction in code, f"{name}: no {instruction} in its sm_90a SASS"
            assert not re.search(r"\b(ATOMG|RED)\.", code), f"{name}: global atomics in the cluster kernel"
