"""Tensor parallelism (placeholder docstring, rewritten below)."""

from .groups import TPContext
from .layout import ShardSpec, check_tensor_parallel, param_specs
from .loading import load_sharded
from .shard import shard_model, shard_plan, take_shard

__all__ = ["ShardSpec", "TPContext", "check_tensor_parallel", "load_sharded", "param_specs", "shard_model",
           "shard_plan", "take_shard"]
