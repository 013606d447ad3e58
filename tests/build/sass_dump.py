"""The SASS of the built extension modules, for the build-gate tests: dumped once per test process and module
(cuobjdump --dump-sass of _C takes 30-50 s on 2 cores; every check reads the same dump)."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

import qwen35_native


def cuobjdump() -> str:
    """cuobjdump from the nvidia-cuda-cuobjdump wheel (a test dependency), else from PATH."""
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


def nvdisasm_env() -> dict[str, str]:
    """cuobjdump --dump-sass runs nvdisasm: from PATH, the CUDA toolkit, or a wheel that bundles one (triton)."""
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


def extension(pattern: str = "_C*.so") -> Path:
    """The installed extension module matching `pattern`; skips for a build without CUDA kernels."""
    if not qwen35_native.build_info()["with_cuda_kernels"]:
        pytest.skip("this build has no CUDA kernels")
    return next(Path(qwen35_native.__file__).parent.glob(pattern))


def built_archs() -> list[str]:
    raw = os.environ.get("QWEN35_CUDA_ARCHS", "80;90a").replace(",", ";").replace("sm_", "")
    return ["sm_" + a for a in raw.split(";") if a]


@cache
def _dump(lib: Path) -> dict[tuple[str, str], str]:
    out = subprocess.run([cuobjdump(), "--dump-sass", str(lib)], capture_output=True, text=True, check=True,
                         env=nvdisasm_env()).stdout
    funcs: dict[tuple[str, str], list[str]] = {}
    arch, body = "", None
    for line in out.splitlines():
        if "arch = sm_" in line:
            arch = line.split("=", 1)[1].strip()
        elif line.strip().startswith("Function :"):
            body = funcs.setdefault((arch, line.split(":", 1)[1].strip()), [])
        elif body is not None:
            body.append(line)
    return {key: "\n".join(lines) for key, lines in funcs.items()}


def sass_functions(pattern: str = "_C*.so") -> dict[tuple[str, str], str]:
    """{(arch, mangled function name): SASS} of the extension module matching `pattern`."""
    return _dump(extension(pattern))
