"""Checkpoint loading: memory-mapped safetensors (single file or sharded), the checkpoint-name -> parameter plan
(both expert layouts, fused projections, MTP and vision tensors recognised), and the loader."""

from .loader import load_plan
from .plan import LoadPlan, ParamSpec, Placement, build_plan, check_plan, text_prefix
from .reader import CheckpointReader, WeightsError

__all__ = ["CheckpointReader", "LoadPlan", "ParamSpec", "Placement", "WeightsError", "build_plan", "check_plan",
           "load_plan", "text_prefix"]
