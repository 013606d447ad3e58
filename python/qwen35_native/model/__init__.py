"""The Qwen3.5 text model: config, layers, caches and ``from_pretrained``."""

from .cache import ForwardBatch, ModelCache
from .config import ConfigError, Qwen35Config, TextConfig, VisionConfig
from .loading import from_pretrained
from .model import Qwen35ForCausalLM

__all__ = ["ConfigError", "ForwardBatch", "ModelCache", "Qwen35Config", "Qwen35ForCausalLM", "TextConfig",
           "VisionConfig", "from_pretrained"]
