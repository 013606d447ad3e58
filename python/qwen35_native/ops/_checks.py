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


INDEX_DTYPES = (torch.int32, torch.int64)


def fail(op: str, message: str) -> None:
    raise ValueError(f"qwen35_native.{op}: {message}")


def check_dim_size(op: str, name: str, t: torch.Tensor, dim: int, size: int, what: str) -> None:
    if t.shape[dim] != size:
        raise ValueError(f"qwen35_native.{op}: {name} dimension {dim} must be {what}={size}, got shape "
                         f"{list(t.shape)}")


def check_cu_seqlens(op: str, cu_seqlens: torch.Tensor, total: int, name: str = "cu_seqlens") -> int:
    """``cu_seqlens`` int32/int64 ``[N+1]``, starting at 0, non-decreasing, ending at ``total``. Returns N.

    The values are checked only for CPU tensors: reading a CUDA tensor would synchronise the device on every call
    (the model validates its batch metadata once per forward instead)."""
    check_tensor(op, name, cu_seqlens, INDEX_DTYPES, dim=1)
    if cu_seqlens.numel() < 2:
        fail(op, f"{name} must have at least 2 entries [0, ..., total], got shape {list(cu_seqlens.shape)}")
    if cu_seqlens.device.type == "cpu":
        c = cu_seqlens
        if int(c[0]) != 0 or int(c[-1]) != total or bool((c[1:] < c[:-1]).any()):
            fail(op, f"{name} must start at 0, be non-decreasing and end at the token count {total}, "
                     f"got {c.tolist()}")
    return cu_seqlens.numel() - 1


def check_indices(op: str, name: str, t: torch.Tensor, length: int, upper: int, what: str) -> None:
    """A 1-D int32/int64 index tensor of ``length`` entries with values in ``[0, upper)`` (values checked on CPU)."""
    check_tensor(op, name, t, INDEX_DTYPES, dim=1)
    if t.numel() != length:
        fail(op, f"{name} must have {length} entries (one per sequence), got shape {list(t.shape)}")
    if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= upper):
        fail(op, f"{name} values must be in [0, {what}={upper}), got min {int(t.min())} max {int(t.max())}")


def check_unique(op: str, name: str, t: torch.Tensor) -> None:
    """Slots written in place must differ between sequences (values checked on CPU)."""
    if t.device.type == "cpu" and t.numel() and torch.unique(t).numel() != t.numel():
        fail(op, f"{name} must not repeat a slot (each sequence owns its state), got {t.tolist()}")
