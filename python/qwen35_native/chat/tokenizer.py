"""A checkpoint's tokenizer, loaded with the ``tokenizers`` library (no transformers at runtime).

Files read from the checkpoint directory: ``tokenizer.json`` (required), ``tokenizer_config.json`` (named special
tokens such as ``eos_token``, the chat template) and ``special_tokens_map.json`` (fills named special tokens the
config lacks), ``chat_template.jinja`` / ``additional_chat_templates/`` (take priority over the config's template).
Encoding a chat prompt adds no special tokens (the template writes them), as HF ``apply_chat_template`` does;
decoding skips special tokens by default (vLLM's default). ``clean_up_tokenization_spaces`` is not applied (Qwen
checkpoints set it to false).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from .template import load_chat_templates, render_chat_template, select_template

# The named special tokens HF exposes to chat templates (PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES).
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"qwen35_native: {path} is not valid JSON: {e}") from e


def _token_text(value: Any) -> str | None:
    """A special token from a config: a string, or a serialized AddedToken dict with ``content``."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    """Text <-> token ids and chat-template rendering for one checkpoint."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, config: Mapping[str, Any] | None = None,
                 chat_template: str | Mapping[str, str] | None = None):
        self.backend = tokenizer
        self.config = dict(config or {})
        self.chat_template = chat_template
        self.special_tokens: dict[str, str] = {}
        for name in NAMED_SPECIAL_TOKENS:
            text = _token_text(self.config.get(name))
            if text is not None:
                self.special_tokens[name] = text

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"qwen35_native: checkpoint directory {directory} does not exist")
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"qwen35_native: {directory} has no tokenizer.json (a checkpoint without tokenizer "
                                    f"files can only generate from token-id prompts)")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"qwen35_native: cannot load {path}: {e}") from e
        config = _read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() \
            else {}
        if (directory / "special_tokens_map.json").is_file():
            for name, value in _read_json(directory / "special_tokens_map.json").items():
                if name in NAMED_SPECIAL_TOKENS and config.get(name) is None:
                    config[name] = value
        return cls(backend, config, load_chat_templates(directory, config))

    # ------------------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer knows, added tokens included (the model may pad its vocab beyond)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        pad = self.special_tokens.get("pad_token")
        return None if pad is None else self.backend.token_to_id(pad)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"qwen35_native.Tokenizer.encode: text must be a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------------------------------------------------
    def get_chat_template(self, name: str | None = None, has_tools: bool = False) -> str:
        if self.chat_template is None:
            raise ValueError("qwen35_native: this checkpoint has no chat template (chat_template.jinja or "
                             "tokenizer_config.json chat_template); pass chat_template= or use plain prompts")
        return select_template(self.chat_template, name, has_tools)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Any] | None = None,
                            documents: Sequence[Mapping[str, Any]] | None = None, add_generation_prompt: bool = False,
                            tokenize: bool = False, chat_template: str | None = None,
                            **kwargs: Any) -> str | list[int]:
        """Renders ``messages`` with the checkpoint's template (or ``chat_template``: jinja source or the name of
        one of the checkpoint's templates), like HF ``apply_chat_template``; extra keyword arguments
        (``enable_thinking=False``, ``add_vision_id=True``, ...) reach the template. ``tokenize=True`` returns the
        token ids (no special tokens added)."""
        if chat_template is None or (isinstance(self.chat_template, Mapping) and chat_template in self.chat_template):
            source = self.get_chat_template(chat_template, has_tools=tools is not None)
        else:
            source = chat_template
        text = render_chat_template(source, messages, tools=tools, documents=documents,
                                    add_generation_prompt=add_generation_prompt, special_tokens=self.special_tokens,
                                    **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """``Tokenizer.from_pretrained(directory)``."""
    return Tokenizer.from_pretrained(directory)
