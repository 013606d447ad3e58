"""Kernel quality gates that need no GPU: the ptxas spill/local-memory gate of the build, and tensor-core
instructions in the SASS of the kernels that must use them (cuobjdump from the nvidia-cuda-cuobjdump wheel)."""

import shutil
import subprocess
from pathlib import Path

import pytest
from sass_dump import built_archs, cuobjdump, extension, sass_functions

ROOT = Path(__file__).resolve().parents[2]
GATE_FLAGS = (ROOT / "cmake" / "ptxas_gate_flags.txt").read_text().strip()

# Substrings of mangled kernel names that must contain tensor-core instructions (HMMA on sm_80, HMMA or HGMMA on
# sm_90a). Each tensor-core kernel adds itself here when it lands.
TENSOR_CORE_KERNELS: list[str] = [
    # grouped expert GEMMs (csrc/kernels/moe): the bf16 and fp16 instantiations (fp32 runs SIMT FMAs on purpose)
    "moe_gate_up_kernelI13__nv_bfloat16", "moe_gate_up_kernelI6__half",
    "moe_down_kernelI13__nv_bfloat16", "moe_down_kernelI6__half",
    # chunked GDN scan and its segment chain (csrc/kernels/gdn)
    "gdn_chunk_kernel", "gdn_chunk_chain_kernel", "gdn_chunk_prep_kernel",
    # attention (csrc/kernels/attention): every instantiation (bf16/fp16 only)
    "prefill_attention_kernel", "decode_attention_kernel",
    # skinny linear on tensor cores, 9-64 rows (csrc/kernels/linear/skinny_mma.cu)
    "skinny_mma_kernel",
]

LOCAL_MEMORY_KERNEL = r"""
__global__ void uses_local_memory(float* out, const int* idx) {
  float scratch[256];
  for (int j = 0; j < 256; ++j) scratch[idx[j]] = out[j];
  float s = 0.0f;
  for (int j = 0; j < 256; ++j) s += scratch[idx[j + 256]];
  out[0] = s;
}
"""


def _nvcc():
    for cand in ("/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if cand and Path(cand).exists():
            return cand
    pytest.skip("nvcc not found")


def test_ptxas_gate_rejects_local_memory(tmp_path):
    src = tmp_path / "k.cu"
    src.write_text(LOCAL_MEMORY_KERNEL)
    cmd = [_nvcc(), "-arch=sm_90a", "-c", str(src), "-o", str(tmp_path / "k.o"), f"-Xptxas={GATE_FLAGS}"]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode != 0 and "Local memory" in bad.stderr, bad.stderr
    ok = subprocess.run(cmd[:-1], capture_output=True, text=True)  # without the gate it compiles
    assert ok.returncode == 0, ok.stderr


def test_sass_has_the_requested_architectures():
    out = subprocess.run([cuobjdump(), "--list-elf", str(extension())], capture_output=True, text=True, check=True)
    for arch in built_archs():
        assert f".{arch}.cubin" in out.stdout, f"no {arch} machine code in {out.stdout}"


@pytest.mark.skipif(not TENSOR_CORE_KERNELS, reason="no tensor-core kernel has landed yet")
@pytest.mark.parametrize("kernel", TENSOR_CORE_KERNELS)
def test_tensor_core_kernels_use_mma(kernel):
    matching = {key: code for key, code in sass_functions().items() if kernel in key[1]}
    assert {arch for arch, _ in matching} == set(built_archs()), \
        f"SASS functions matching {kernel!r}: {sorted(matching)}; expected some for each of {built_archs()}"
    for (arch, name), code in matching.items():
        assert "HMMA" in code or "HGMMA" in code, f"{name} ({arch}) has no HMMA/HGMMA instruction"
