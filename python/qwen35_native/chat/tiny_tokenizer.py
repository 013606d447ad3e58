"""A small Qwen3.5-style tokenizer for tiny test checkpoints: byte-level BPE with Qwen's normaliser (NFC) and
pre-tokenisation regex, trained on a short built-in ASCII text, followed by Qwen's added tokens in Qwen's order
(special ``<|...|>`` tokens, and the non-special ``<tool_call>``, ``<tool_response>``, ``<think>`` pairs, which
therefore survive ``skip_special_tokens`` decoding). Training is deterministic. The corpus is ASCII only, so
non-ASCII characters encode as several single-byte tokens (which exercises incremental UTF-8 decoding).

``write_tokenizer_files`` writes ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` into a
checkpoint directory; token ids of the special tokens are the tokenizer's (``token_to_id``), never constants.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .template import default_chat_template

# Qwen3.5's pre-tokenisation pattern (MODEL_SPEC.md §4): single digits, letters include marks.
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                     r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# (token, special) in Qwen's id order, starting at <|endoftext|>.
ADDED_TOKENS = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True), ("<|fim_pad|>", True),
    ("<|repo_name|>", True), ("<|file_sep|>", True),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
    ("<|audio_start|>", True), ("<|audio_end|>", True),
)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A tiny model answers questions about the weather, numbers and code.
User: What is the capital of France? Assistant: The capital of France is Paris.
def add(a, b):
    return a + b
Let me think about this step by step. First, we compute 12 + 30 = 42. Then we check the result.
Tool calls use parameters with values such as city, unit, query, path, content, true, false and null.
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
The system prompt says: you are a helpful assistant. Images and videos are shown as placeholders.
"""


def build_tiny_tokenizer(vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE tokenizer with at most ``vocab_size`` ids, Qwen's added tokens taking the last ones."""
    base = vocab_size - len(ADDED_TOKENS)
    if base < 256:
        raise ValueError(f"qwen35_native.build_tiny_tokenizer: vocab_size must be >= {256 + len(ADDED_TOKENS)} "
                         f"(256 bytes + {len(ADDED_TOKENS)} added tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=base, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    for text, special in ADDED_TOKENS:
        token = AddedToken(text, special=special, normalized=False, lstrip=False, rstrip=False, single_word=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    return tok


def write_tokenizer_files(directory: str | Path, tokenizer: Tokenizer, chat_template: str | None = None,
                          model_max_length: int = 262144) -> None:
    """Writes the tokenizer files of a checkpoint: ``tokenizer.json``, ``tokenizer_config.json`` (eos and pad
    ``<|endoftext|>`` as in Qwen3.5) and ``chat_template.jinja`` (default: the packaged Qwen3.5-style template)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "split_special_tokens": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    template = default_chat_template() if chat_template is None else chat_template
    (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
