"""The tokenizer of the tiny checkpoints (``qwen35 make-tiny``, chat tests): byte-level BPE in the Qwen3.5 format
(MODEL_SPEC §4: NFC normaliser, Qwen's pre-tokenisation regex), trained deterministically with ``tokenizers`` on a
fixed built-in corpus, followed by Qwen3.5's 33 added tokens in the release order (release ids 248044 ... 248076).

Ids: BPE tokens ``[0, base)``, then ``<|endoftext|>`` = base, ..., ``<|audio_pad|>`` = base + 32. The non-special
added tokens (``<tool_call>``, ``<think>``, the fim tokens, ...) survive ``skip_special_tokens`` decoding, as in
the release. The corpus is ASCII only, so non-ASCII characters encode as several single-byte tokens (which
exercises incremental UTF-8 decoding).

``write_tokenizer_files`` writes ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` (the
packaged Qwen3.5-style template, ``templates/qwen3_5.jinja``) into a checkpoint directory.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ..configs import TINY_SPECIAL_BASE
from .template import default_chat_template

# Qwen3.5's pre-tokenisation pattern (MODEL_SPEC.md §4): single digits, letters include marks.
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                     r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# (content, special) in release id order: base + index.
SPECIAL_TOKENS = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False), ("<|audio_start|>", True), ("<|audio_end|>", True),
    ("<tts_pad>", True), ("<tts_text_bos>", True), ("<tts_text_eod>", True), ("<tts_text_bos_single>", True),
    ("<|audio_pad|>", True),
)

_WORDS = tuple(str.split(
    "the a an model token tokens think answer question user assistant system tool call function parameter "
    "value image video picture hello world qwen native kernel cuda tensor memory cache layer attention "
    "expert router gate state decode prefill sample text number one two three four five seven because "
    "please thanks what where when which would could should reason result output input chat template "
    "json name type string object array true false null return print def class import from with"))

_TEXT = """\
The quick brown fox jumps over the lazy dog. A tiny model answers questions about the weather, numbers and code.
User: What is the capital of France? Assistant: The capital of France is Paris.
Let me think about this step by step. First, we compute 12 + 30 = 42. Then we check the result.
Tool calls use parameters with values such as city, unit, query, path, content, true, false and null.
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
"""


def _corpus(seed: int = 1234) -> list[str]:
    """Deterministic English-like text, code and numbers: enough distinct pairs for a few hundred merges."""
    rng = random.Random(seed)
    lines = [_TEXT] * 4
    for i in range(600):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        if i % 5 == 0:
            words[0] = words[0].capitalize()
        sep = rng.choice([". ", ", ", "? ", "! ", ": ", "\n"])
        lines.append(" ".join(words) + sep + str(rng.randint(0, 99999)))
        if i % 7 == 0:
            lines.append(f'{{"name": "{rng.choice(_WORDS)}", "value": {rng.randint(0, 999)}}}\n'
                         f"def {rng.choice(_WORDS)}_{rng.choice(_WORDS)}(x):\n    return x + {rng.randint(1, 9)}\n")
    return lines


def build_tiny_tokenizer(base: int = TINY_SPECIAL_BASE) -> Tokenizer:
    """BPE with exactly ``base`` tokens (256 byte symbols + merges), then the 33 added tokens at ``base`` ...
    ``base + 32``. The tiny model configs expect the default base (448) and a vocab of 512."""
    if not 256 < base <= 1024:
        raise ValueError(f"qwen35_native.build_tiny_tokenizer: base must be in (256, 1024] (256 byte symbols plus "
                         f"merges), got {base}")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=base, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(_corpus(), trainer)
    if tok.get_vocab_size() != base:
        raise RuntimeError(f"tiny tokenizer: BPE training produced {tok.get_vocab_size()} tokens, expected {base}")
    for content, special in SPECIAL_TOKENS:  # one at a time so that ids follow the release order
        token = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    for i, (content, _) in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(content) != base + i:
            raise RuntimeError(f"tiny tokenizer: {content} got id {tok.token_to_id(content)}, expected {base + i}")
    return tok


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Content -> id of the 33 added tokens, read from the tokenizer (never constants)."""
    return {content: tokenizer.token_to_id(content) for content, _ in SPECIAL_TOKENS}


def write_tokenizer_files(directory: str | Path, tokenizer: Tokenizer, chat_template: str | None = None,
                          model_max_length: int = 262144) -> dict[str, int]:
    """Writes ``tokenizer.json``, ``tokenizer_config.json`` (eos/pad/unk ``<|endoftext|>`` and the added tokens, as
    in Qwen3.5) and ``chat_template.jinja`` (default: the packaged Qwen3.5-style template) into ``directory``
    (created if needed). Returns the added tokens' ids (:func:`special_token_ids`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    ids = special_token_ids(tokenizer)
    decoder = {str(ids[c]): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": s} for c, s in SPECIAL_TOKENS}
    config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
              "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "errors": "replace", "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False, "split_special_tokens": False,
              "tokenizer_class": "Qwen3_5Tokenizer"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")
    template = default_chat_template() if chat_template is None else chat_template
    (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
    return ids
