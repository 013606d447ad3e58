"""A small byte-level BPE tokenizer in the Qwen3.5 format (MODEL_SPEC §4), trained at write time with ``tokenizers``
on a fixed built-in corpus, carrying Qwen3.5's 33 special tokens remapped into the small vocabulary.

Ids: BPE tokens ``[0, base)``, then the special tokens in the release order (``<|endoftext|>`` = base, ...,
``<|audio_pad|>`` = base + 32). Release ids are 248044 ... 248076.
"""

from __future__ import annotations

import json
import os
import random

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"""
                     r"""| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# (content, special) in release id order: 248044 + index. Non-special ones are shown when decoding.
SPECIAL_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False), ("<|audio_start|>", True), ("<|audio_end|>", True),
    ("<tts_pad>", True), ("<tts_text_bos>", True), ("<tts_text_eod>", True), ("<tts_text_bos_single>", True),
    ("<|audio_pad|>", True),
]

_WORDS = tuple(str.split("the a an model token tokens think answer question user assistant system tool call function "
          "parameter "
          "value image video picture hello world qwen native kernel cuda tensor memory cache layer attention "
          "expert router gate state decode prefill sample text number one two three four five seven because "
          "please thanks what where when which would could should reason result output input chat template "
          "json name type string object array true false null return print def class import from with"))


def _corpus(seed: int = 1234) -> list[str]:
    """Deterministic English-like text, code and numbers: enough distinct pairs for a few hundred merges."""
    rng = random.Random(seed)
    lines = []
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


def build_tokenizer(base: int) -> Tokenizer:
    """BPE with exactly ``base`` tokens (256 byte symbols + merges), then the special tokens at ``base`` ...."""
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


def special_ids(base: int) -> dict[str, int]:
    return {content: base + i for i, (content, _) in enumerate(SPECIAL_TOKENS)}


def write_tokenizer_files(directory: str, base: int, chat_template: str, max_length: int) -> dict[str, int]:
    """Writes tokenizer.json, tokenizer_config.json and chat_template.jinja; returns the special token ids."""
    tok = build_tokenizer(base)
    tok.save(os.path.join(directory, "tokenizer.json"))
    ids = special_ids(base)
    decoder = {str(ids[c]): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": s} for c, s in SPECIAL_TOKENS}
    config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
              "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "errors": "replace", "model_max_length": max_length,
              "split_special_tokens": False, "tokenizer_class": "Qwen3_5Tokenizer"}
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    with open(os.path.join(directory, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(chat_template)
    return ids
