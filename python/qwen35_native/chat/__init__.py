"""Chat: the checkpoint's tokenizer, chat-template rendering (HF ``apply_chat_template`` semantics), and parsing of
replies into reasoning, answer and tool calls."""

from .output import ChatOutput, parse_chat_output
from .reasoning import THINK_END, THINK_START, ReasoningStream, prompt_opens_think, split_reasoning
from .template import (
    QWEN3_5_TEMPLATE,
    compile_template,
    default_chat_template,
    load_chat_templates,
    render_chat_template,
    select_template,
)
from .tiny_tokenizer import build_tiny_tokenizer, write_tokenizer_files
from .tokenizer import Tokenizer, load_tokenizer
from .tool_calls import ToolCall, parse_tool_calls

__all__ = [
    "QWEN3_5_TEMPLATE",
    "THINK_END",
    "THINK_START",
    "ChatOutput",
    "ReasoningStream",
    "ToolCall",
    "Tokenizer",
    "build_tiny_tokenizer",
    "compile_template",
    "default_chat_template",
    "load_chat_templates",
    "load_tokenizer",
    "parse_chat_output",
    "parse_tool_calls",
    "prompt_opens_think",
    "render_chat_template",
    "select_template",
    "split_reasoning",
    "write_tokenizer_files",
]
