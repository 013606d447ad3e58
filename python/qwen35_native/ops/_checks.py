"""Input checks shared by the op wrappers. Every backend validates the same way, before dispatch, with the
message format of STYLE.md habit 11: ``qwen35_native.<op>: <arg> <expectation>, got <actual>``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _names(dtypes: Iterable[torch.dtype]) -> str:
    return " or ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(op: str, name: str, t, dtypes: Sequence[torch.dtype] | None = None, dim: int | None = None,
                 min_dim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"qwen35_native.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"qwen35_native.{op}: {name} must have dtype {_names(dtypes)}, got {str(t.dtype)[6:]}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"qwen35_native.{op}: {name} must have {dim} dimensions, got shape {list(t.shape)}")
    if min_dim is not None and t.dim() < min_dim:
        raise ValueError(f"qwen35_native.{op}: {name} must have at least {min_dim} dimension(s), got shape "
                         f"{list(t.shape)}")


def check_shape(op: str, name: str, t: torch.Tensor, expected: Sequence[int], what: str) -> None:
    if list(t.shape) != list(expected):
        raise ValueError(f"qwen35_native.{op}: {name} must have shape {what}={list(expected)}, got {list(t.shape)}")


def check_same_device(op: str, name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"qwen35_native.{op}: {name} must be on the device of {ref_name} ({ref.device}), "
                         f"got {t.device}")


def rows_have_uniform_stride(t: torch.Tensor) -> bool:
    """True when a [..., H] tensor's leading dims collapse into rows with one stride (see csrc/torch/checks.h)."""
    row_stride, inner = None, 0
    for i in range(t.dim() - 2, -1, -1):
        if t.size(i) == 1:
            continue
        if inner == 0:
            row_stride = t.stride(i)
        elif t.stride(i) != row_stride * inner:
            return False
        inner = t.size(i) if inner == 0 else inner * t.size(i)
    return True


def check_rows(op: str, name: str, t: torch.Tensor) -> None:
    if t.dim() >= 1 and t.size(-1) > 1 and t.stride(-1) != 1:
        raise ValueError(f"qwen35_native.{op}: {name} must be contiguous in its last dimension, got strides "
                         f"{list(t.stride())}")
    if not rows_have_uniform_stride(t):
        raise ValueError(f"qwen35_native.{op}: {name} must collapse to rows [num_rows, hidden_size] with one row "
                         f"stride, got shape {list(t.shape)} strides {list(t.stride())}")
