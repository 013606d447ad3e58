"""Dense SwiGLU MLP (the dense models' FFN and the MoE shared expert), MODEL_SPEC §3d.4 / §1.2.

``y = down( silu(x @ W_gate^T) * (x @ W_up^T) )`` with the gate and up projections fused into one weight
``w13 [2I, H]`` (rows [0, I) gate, [I, 2I) up, as in the fused expert layout) and ``w2 [H, I]``. Matmuls run in the
activation dtype (cuBLAS on GPU, fp32 accumulation); silu and the product round to that dtype like HF.

Up to 64 rows (decode) both projections run on the skinny kernels (ops/projection.py: the gate/up product with the
SwiGLU as its epilogue, then the down product); larger batches are GEMMs on cuBLAS through torch. Tests:
tests/model/test_ops_moe.py, tests/kernels/test_linear.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from ._backend import use_kernel
from .projection import swiglu_mlp_projected

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def swiglu_mlp_reference(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, w13).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w2)


def check_swiglu_weights(op: str, x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, prefix: str = "") -> None:
    _checks.check_tensor(op, prefix + "w13", w13, (x.dtype,), dim=2)
    _checks.check_tensor(op, prefix + "w2", w2, (x.dtype,), dim=2)
    H = x.shape[-1]
    if w13.shape[1] != H or w13.shape[0] % 2:
        _checks.fail(op, f"{prefix}w13 must have shape [2*I, H={H}], got {list(w13.shape)}")
    _checks.check_shape(op, prefix + "w2", w2, [H, w13.shape[0] // 2], "[H, I]")
    for name, t in ((prefix + "w13", w13), (prefix + "w2", w2)):
        _checks.check_same_device(op, name, t, x, "x")


def swiglu_mlp(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """SwiGLU MLP.

    Args:
        x: ``[..., H]`` float32/float16/bfloat16.
        w13: ``[2I, H]`` gate rows first, then up rows; x's dtype.
        w2: ``[H, I]`` x's dtype.
    Returns:
        ``[..., H]`` in x's dtype.

    ``backend="kernel"``: the skinny kernels where they take the input (up to 64 rows of float16 / bfloat16), cuBLAS
    elsewhere; ``None`` / ``"auto"``: the same on CUDA tensors.
    """
    op = "swiglu_mlp"
    _checks.check_tensor(op, "x", x, _DTYPES, min_dim=1)
    check_swiglu_weights(op, x, w13, w2)
    if not use_kernel(op, backend, x.device):
        return swiglu_mlp_reference(x, w13, w2)
    return swiglu_mlp_projected(x, w13, w2, backend)
