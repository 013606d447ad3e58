"""Kernel quality gates that need no GPU: the ptxas spill/local-memory gate of the build, and tensor-core
instructions in the SASS of the kernels that must use them (cuobjdump from the nvidia-cuda-cuobjdump wheel)."""

import shutil
import subprocess
from pathlib import Path

import pytest

import qwen35_native

ROOT = Path(__file__).resolve().parents[2]
GATE_FLAGS = (ROOT / "cmake" / "ptxas_gate_flags.txt").read_text().strip()

# Substrings of mangled kernel names that must contain tensor-core instructions (HMMA on sm_80, HMMA or HGMMA on
# sm_90a). Each tensor-core kernel adds itself here when it lands.
TENSOR_CORE_KERNELS: list[str] = [
    # grouped expert GEMMs (csrc/kernels/moe): the bf16 and fp16 instantiations (fp32 runs SIMT FMAs on purpose)
    "moe_gate_up_kernelI13__nv_bfloat16", "moe_gate_up_kernelI6__half",
    "moe_down_kernelI13__nv_bfloat16", "moe_down_kernelI6__half",
    # chunked GDN scan and its segment chain (csrc/kernels/gdn)
    "gdn_chunk_kernel", "gdn_chunk_chain_kernel",
    # attention (csrc/kernels/attention): every instantiation (bf16/fp16 only)
    "prefill_attention_kernel", "decode_attention_kernel",
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


def _cuobjdump():
    try:
        import nvidia.cu13

        cand = Path(nvidia.cu13.__path__[0]) / "bin" / "cuobjdump"
        if cand.exists():
            return str(cand)
    except ImportError:
        pass
    found = shutil.which("cuobjdump")
    if not found:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    return found


def _extension():
    lib = next(Path(qwen35_native.__file__).parent.glob("_C*.so"))
    if not qwen35_native.build_info()["with_cuda_kernels"]:
        pytest.skip("this build has no CUDA kernels")
    return lib


def _nvdisasm_env() -> dict[str, str]:
    """cuobjdump --dump-sass runs nvdisasm: from PATH, the CUDA toolkit, or a wheel that bundles one (triton)."""
    import os

    env = dict(os.environ)
    if shutil.which("nvdisasm"):
        return env
    cands = [Path("/usr/local/cuda/bin/nvdisasm")]
    try:
        import triton

        cands.append(Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "nvdisasm")
    except ImportError:
        pass
    for cand in cands:
        if cand.exists():
            env["PATH"] = f"{cand.parent}{os.pathsep}{env.get('PATH', '')}"
            return env
    pytest.skip("nvdisasm not found (cuobjdump --dump-sass needs it): install the CUDA toolkit's nvdisasm")


def _sass_by_function(lib: Path) -> dict[str, str]:
    out = subprocess.run([_cuobjdump(), "--dump-sass", str(lib)], capture_output=True, text=True, check=True,
                         env=_nvdisasm_env()).stdout
    funcs, name = {}, None
    for line in out.splitlines():
        if line.strip().startswith("Function :"):
            name = line.split(":", 1)[1].strip()
            funcs[name] = ""
        elif name:
            funcs[name] += line + "\n"
    return funcs


def test_sass_has_the_requested_architectures():
    import os

    archs = os.environ.get("QWEN35_CUDA_ARCHS", "80;90a").replace(",", ";").replace("sm_", "").split(";")
    out = subprocess.run([_cuobjdump(), "--list-elf", str(_extension())], capture_output=True, text=True, check=True)
    for arch in archs:
        assert f".sm_{arch}.cubin" in out.stdout, f"no sm_{arch} machine code in {out.stdout}"


@pytest.mark.skipif(not TENSOR_CORE_KERNELS, reason="no tensor-core kernel has landed yet")
@pytest.mark.parametrize("kernel", TENSOR_CORE_KERNELS)
def test_tensor_core_kernels_use_mma(kernel):
    funcs = _sass_by_function(_extension())
    matching = {n: s for n, s in funcs.items() if kernel in n}
    assert matching, f"no SASS function matches {kernel!r}"
    for name, sass in matching.items():
        assert "HMMA" in sass or "HGMMA" in sass, f"{name} has no HMMA/HGMMA instruction"
