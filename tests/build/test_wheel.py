"""The wheel is how users consume us: install the built wheel into a scratch --target directory and, from a working
directory outside the source tree, import it with the venv's python and call an op."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("qwen35_native-*.whl"))
    if not wheels:
        pytest.skip("no wheel in dist/ (make test builds it)")
    return wheels[-1]


def test_wheel_installs_and_runs_outside_the_tree(tmp_path):
    wheel = _wheel()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(target), str(wheel)], check=True)
    assert list(target.glob("qwen35_native/_C*.so")), "the wheel carries no compiled extension"
    script = (
        "import torch, qwen35_native as q35\n"
        f"assert q35.__file__.startswith({str(target)!r}), q35.__file__\n"
        "x = torch.randn(3, 128, dtype=torch.bfloat16); w = torch.zeros(128, dtype=torch.bfloat16)\n"
        "y = q35.ops.rms_norm(x, w, backend='kernel')\n"
        "ref = q35.ops.rms_norm_reference(x, w)\n"
        "assert torch.allclose(y.float(), ref.float(), rtol=2e-2, atol=2e-2)\n"
        "print('ok', q35.build_info())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_wheel_has_entry_point_and_metadata():
    import zipfile

    with zipfile.ZipFile(_wheel()) as zf:
        names = zf.namelist()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "qwen35 = qwen35_native.cli:main" in zf.read(entry).decode()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    for dep in ("torch", "numpy", "safetensors", "tokenizers", "jinja2", "tqdm"):
        assert f"Requires-Dist: {dep}" in meta


@pytest.mark.parametrize("where", ["here", pytest.param("gpu machine", marks=pytest.mark.gpu)])
def test_the_libraries_use_the_shared_libstdcxx(where):
    """(Also under -m gpu: the build on the GPU machine is the one that went wrong.) No compiled library of the package
    carries its own copy of libstdc++ (cmake/Q35Sources.cmake, q35_link_shared_libstdcxx): the H200 machine's
    build had linked libstdc++.a into _C, and every error message with a number in it segfaulted. Then an error
    that formats integers raises as it should."""
    import torch

    import qwen35_native
    from qwen35_native.ops.moe_stages import moe_align

    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found")
    libs = sorted(Path(qwen35_native.__file__).parent.glob("*.so"))
    assert libs, "no compiled library next to qwen35_native/__init__.py"
    for lib in libs:
        out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
        copies = [line for line in out.stdout.splitlines() if any(s in line for s in LIBSTDCXX_INTERNALS)]
        assert not copies, f"{lib.name} defines libstdc++'s own symbols, e.g. {copies[:3]}"
    ids = torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="expert_offset must be in .0, 2.31., got -3"):
        moe_align(ids, -3, 4, 16)


# mangled names only libstdc++ itself defines: std::locale, std::ios_base::Init, std::ostream's own members
LIBSTDCXX_INTERNALS = ("_ZNSt6locale", "_ZNSt8ios_base4Init", "_ZNSo9_M_insert")
