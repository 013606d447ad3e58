"""Structured outputs (vLLM's ``structured_outputs``): a JSON schema, any JSON object, a regular expression, a choice
of strings or an EBNF grammar that the generated text must follow, enforced token by token with xgrammar (the
backend vLLM uses by default; ``pip install qwen35-native[structured]``).

Each constrained sequence holds a grammar matcher. Before a step samples it, the matcher's allowed next tokens
become a bitmask row (int32, bit ``t % 32`` of word ``t // 32`` for token ``t``) that the sampler applies like an
allow-list (every other logit set to -inf before the penalties); each sampled token then advances the matcher. When
the grammar is complete only the end-of-sequence ids remain allowed, so the sequence stops with reason "stop".
Constrained sequences take no speculative drafts and their steps run eagerly (no CUDA graphs).

Tests: tests/engine/test_structured.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_KINDS = ("json", "json_object", "regex", "choice", "grammar")
INSTALL_HINT = "structured outputs need the xgrammar package: pip install 'qwen35-native[structured]'"


def _err(expectation: str, value: Any) -> ValueError:
    return ValueError(f"qwen35_native.StructuredOutputs: {expectation}, got {value!r}"[:400])


@dataclass(frozen=True)
class StructuredOutputs:
    """Exactly one of: ``json`` (a JSON schema, as a dict or a JSON string), ``json_object=True`` (any JSON
    object), ``regex``, ``choice`` (a list of strings: the output is one of them), ``grammar`` (EBNF, xgrammar's
    dialect of GBNF). ``disable_any_whitespace=True`` (vLLM's option; JSON kinds only): JSON with single spaces
    after ``,`` and ``:`` and no other whitespace, where JSON itself allows any amount (which a model can wander
    in)."""

    json: Mapping[str, Any] | str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: Sequence[str] | None = None
    grammar: str | None = None
    disable_any_whitespace: bool = False

    def __post_init__(self) -> None:
        given = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise _err(f"give exactly one of {list(_KINDS)}", given)
        if self.json is not None:
            if isinstance(self.json, str):
                try:
                    schema = json.loads(self.json)
                except json.JSONDecodeError as e:
                    raise _err(f"json must be a JSON schema ({e})", self.json) from None
            else:
                schema = self.json
            if not isinstance(schema, Mapping):
                raise _err("json must be a JSON schema object", self.json)
            object.__setattr__(self, "json", json.loads(json.dumps(schema)))  # a plain, private copy
        for name in ("json_object", "disable_any_whitespace"):
            if not isinstance(getattr(self, name), bool):
                raise _err(f"{name} must be True or False", getattr(self, name))
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise _err(f"{name} must be a non-empty string", value)
        if self.choice is not None:
            if isinstance(self.choice, str) or not isinstance(self.choice, Sequence) or not self.choice or \
                    not all(isinstance(c, str) and c for c in self.choice):
                raise _err("choice must be a non-empty list of non-empty strings", self.choice)
            object.__setattr__(self, "choice", tuple(self.choice))

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))


def _choice_grammar(choices: Sequence[str]) -> str:
    return "root ::= " + " | ".join(json.dumps(c) for c in choices)


# xgrammar keeps compiled grammars by their source; a long-running server sees many schemas, so the cache is bounded
GRAMMAR_CACHE_BYTES = 256 << 20


class GrammarBackend:
    """Compiles grammars for one tokenizer and vocabulary (xgrammar caches them) and makes per-sequence matchers."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: Sequence[int]):
        if not stop_ids:  # a complete grammar allows only these: without any, nothing could be sampled after it
            raise ValueError("qwen35_native.SamplingParams: structured_outputs needs an end-of-sequence token id "
                             "(generation_config.json eos_token_id)")
        try:
            import xgrammar
        except ImportError as e:
            raise ValueError(f"qwen35_native: {INSTALL_HINT} ({e})") from None
        from transformers import PreTrainedTokenizerFast

        self.xgr = xgrammar
        self.vocab_size = vocab_size
        hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend)
        info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_limit_bytes=GRAMMAR_CACHE_BYTES)
        self.words = (vocab_size + 31) // 32

    def compile(self, spec: StructuredOutputs):
        kind = spec.kind
        try:
            spaces = not spec.disable_any_whitespace
            if kind == "json":  # key order: the output's order
                return self.compiler.compile_json_schema(json.dumps(spec.json), any_whitespace=spaces)
            if kind == "json_object":  # OpenAI's json_object: an object, not any JSON value
                return self.compiler.compile_json_schema(json.dumps({"type": "object"}), any_whitespace=spaces)
            if kind == "regex":
                return self.compiler.compile_regex(spec.regex)
            return self.compiler.compile_grammar(_choice_grammar(spec.choice) if kind == "choice" else spec.grammar)
        except Exception as e:  # xgrammar raises RuntimeError on a bad schema, regex or grammar
            raise ValueError(f"qwen35_native.SamplingParams: structured_outputs {kind} cannot be compiled: "
                             f"{str(e).strip()[:300]}") from None

    def matcher(self, spec: StructuredOutputs):
        return self.xgr.GrammarMatcher(self.compile(spec))

    def bitmask(self, matchers: Sequence[Any | None]) -> torch.Tensor:
        """int32 ``[len(matchers), words]``: each matcher's allowed next tokens; all ones for None (no constraint)."""
        mask = torch.full((len(matchers), self.words), -1, dtype=torch.int32)
        for row, m in enumerate(matchers):
            if m is not None:
                m.fill_next_token_bitmask(mask, row)
        return mask


def bitmask_to_bool(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """bool ``[B, vocab_size]`` from an int32 ``[B, ceil(V / 32)]`` bitmask (bit ``t % 32`` of word ``t // 32``)."""
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()
