"""Fills model parameters from a checkpoint following a load plan, tensor by tensor, with a progress bar."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from .plan import LoadPlan
from .reader import CheckpointReader, WeightsError


def load_plan(plan: LoadPlan, params: dict[str, torch.Tensor], reader: CheckpointReader,
              progress: bool | None = None) -> None:
    """Copies every placement into its parameter (converting dtype and device on the way).

    Each checkpoint tensor (or the slice a placement names) is read from the memory-mapped file, converted and
    copied, then dropped, so host memory holds one tensor at a time. ``progress``: show a tqdm bar (default: when
    stderr is a terminal)."""
    missing = sorted(set(plan) - set(params))
    extra = sorted(set(params) - set(plan))
    if missing or extra:
        raise WeightsError(f"load plan and model parameters differ: plan-only {missing[:3]}, model-only {extra[:3]}")
    total = sum(params[name][pl.dst].numel() * params[name].element_size()
                for name, spec in plan.items() for pl in spec.placements)
    show = sys.stderr.isatty() if progress is None else progress
    with torch.no_grad(), tqdm(total=total, unit="B", unit_scale=True, desc="loading weights", disable=not show,
                               leave=False) as bar:
        for name, spec in plan.items():
            param = params[name]
            if tuple(param.shape) != tuple(spec.shape):
                raise WeightsError(f"parameter {name} has shape {list(param.shape)}, the plan expects "
                                   f"{list(spec.shape)}")
            for pl in spec.placements:
                dst = param[pl.dst] if pl.dst else param
                src = reader.read(pl.key, pl.src)
                if src.numel() != dst.numel():
                    raise WeightsError(f"tensor {pl.key} in {reader.file_of(pl.key)}: {src.numel()} elements do not "
                                       f"fill parameter block {name}{list(dst.shape)}")
                dst.copy_(src.reshape(dst.shape))
                bar.update(dst.numel() * dst.element_size())


