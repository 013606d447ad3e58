"""Image and video input: preprocessing (no torchvision), the checkpoint's vision processor and prompt expansion.

The model side (vision tower, M-RoPE positions, multimodal prefill) is in ``qwen35_native.model``; see
``model/multimodal.py`` for how the engine runs a multimodal prompt through the cached path.
"""

from .image import ImageSettings, load_image, preprocess_image, smart_resize
from .processor import VisionInputs, VisionProcessor
from .prompt import VisionTokens, expand_prompt, expand_prompt_ids
from .video import VideoSettings, preprocess_video, sample_frame_indices

__all__ = ["ImageSettings", "VideoSettings", "VisionInputs", "VisionProcessor", "VisionTokens", "expand_prompt",
           "expand_prompt_ids", "load_image", "preprocess_image", "preprocess_video", "sample_frame_indices",
           "smart_resize"]
