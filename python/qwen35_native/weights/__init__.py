"""Checkpoint loading: memory-mapped safetensors (single file or sharded), the checkpoint-name -> parameter plan
(both expert layouts, fused projections, MTP and vision tensors recognised), and the loader."""

from .loader import load_plan
from .plan import LoadPlan, ParamSpec, Placement, build_plan, check_plan, text_prefix
from .reader import CheckpointReader, WeightsError
from .vision_plan import build_vision_plan, vision_prefix

__all__ = ["CheckpointReader", "LoadPlan", "ParamSpec", "Placement", "WeightsError", "build_plan", "build_vision_plan",
           "check_plan", "load_plan", "text_prefix", "vision_prefix"]
