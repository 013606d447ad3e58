"""The Qwen3.5 model: config, layers, vision tower, M-RoPE positions, caches and ``from_pretrained``."""

from .cache import ForwardBatch, ModelCache
from .config import ConfigError, Qwen35Config, TextConfig, VisionConfig
from .loading import from_pretrained
from .model import Qwen35ForCausalLM
from .mrope import get_rope_index, rope_index, sequence_positions
from .multimodal import MultimodalPrompt, concat_vision_embeds
from .vision import VisionTower

__all__ = ["ConfigError", "ForwardBatch", "ModelCache", "MultimodalPrompt", "Qwen35Config", "Qwen35ForCausalLM",
           "TextConfig", "VisionConfig", "VisionTower", "concat_vision_embeds", "from_pretrained", "get_rope_index",
           "rope_index", "sequence_positions"]
