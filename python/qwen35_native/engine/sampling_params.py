"""``SamplingParams``: what one request asks of the sampler and of the stop checker.

Fields left ``None`` are "unset": :meth:`SamplingParams.resolved` fills them from a checkpoint's
``generation_config.json`` (the keys vLLM reads: ``temperature``, ``top_p``, ``top_k``, ``min_p``,
``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``, ``max_new_tokens``), else from vLLM's defaults:
temperature 1.0, top_p 1.0, top_k 0 (off), min_p 0.0, presence_penalty 0.0, frequency_penalty 0.0,
repetition_penalty 1.0. Like vLLM, ``do_sample`` is not
read: greedy decoding is ``temperature=0``.

Conventions (vLLM's):
- ``temperature`` below 1e-5 means greedy (argmax, ties to the lowest token id); top-k/top-p/min-p then do nothing.
- ``top_k`` 0 means off; -1 is accepted as a synonym and resolves to 0.
- ``max_tokens`` None means "until the context is full" (the engine caps it by the model's context length).
- ``logprobs`` N >= 0 returns the sampled token's logprob and rank plus the N most likely tokens, all from the raw
  ``log_softmax`` of the model's logits (before penalties and temperature).
- ``prompt_logprobs`` N >= 0 returns the same for every prompt token after the first (``RequestOutput.
  prompt_logprobs``, None at position 0); computed once per request, by its first sample (``prompt_logprobs.py``).
- ``stop_token_ids`` always stop; the eos ids (generation_config ``eos_token_id``) stop unless ``ignore_eos``.
- ``logit_bias`` {token id: bias in [-100, 100]}: added to the row's logits before the penalties (vLLM's order);
  ``allowed_token_ids``: the only ids the row may sample (the others' logits are set to -inf first). Neither
  changes the reported logprobs, which stay raw.
- ``structured_outputs`` (:class:`StructuredOutputs`): a JSON schema, JSON object, regex, choice or grammar the
  output must follow (``structured.py``; needs xgrammar); not together with ``min_tokens``.
- ``min_tokens`` N: the first N tokens can be neither a stop token nor an eos id (their logits are set to -inf
  before sampling; logprobs stay raw) and no stop string ends the output before N tokens.
- ``stop`` strings end generation when they appear in the detokenized output; they are not included in the text
  unless ``include_stop_str_in_output``.
- ``seed``: same seed + same inputs = same tokens, whatever else is in the batch. Sample i of ``n`` uses
  ``seed + i`` (vLLM's convention), see :meth:`SamplingParams.for_sample`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .structured import StructuredOutputs

GREEDY_TEMPERATURE = 1e-5  # vLLM's _SAMPLING_EPS: temperatures below it sample greedily

_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "presence_penalty": 0.0,
             "frequency_penalty": 0.0, "repetition_penalty": 1.0}
# generation_config.json key -> SamplingParams field
_GENERATION_CONFIG_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                           "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


def _err(name: str, expectation: str, value: Any) -> ValueError:
    return ValueError(f"qwen35_native.SamplingParams: {name} {expectation}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling and stopping parameters (DESIGN.md §4). Invalid values raise ``ValueError`` naming the
    field. Unset (None) sampler fields are filled by :meth:`resolved`."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = None
    min_tokens: int = 0
    seed: int | None = None
    stop: str | Sequence[str] | None = None
    stop_token_ids: Sequence[int] | None = None
    logit_bias: Mapping[int, float] | None = None
    allowed_token_ids: Sequence[int] | None = None
    structured_outputs: StructuredOutputs | None = None
    ignore_eos: bool = False
    n: int = 1
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    _resolved: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Normalise containers first so the frozen instance holds immutable, validated values.
        stop = self.stop
        if stop is None:
            stop = ()
        elif isinstance(stop, str):
            stop = (stop,)
        elif isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
            stop = tuple(stop)
        else:
            raise _err("stop", "must be a string or a list of strings", stop)
        if any(s == "" for s in stop):
            raise _err("stop", "must not contain empty strings", list(stop))
        object.__setattr__(self, "stop", stop)
        ids = () if self.stop_token_ids is None else self.stop_token_ids
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not all(_is_int(i) and i >= 0
                                                                                    for i in ids):
            raise _err("stop_token_ids", "must be a list of non-negative integers", self.stop_token_ids)
        object.__setattr__(self, "stop_token_ids", tuple(ids))
        self._normalise_token_edits()
        self._validate()

    def _normalise_token_edits(self) -> None:
        bias = self.logit_bias
        if bias is not None:
            if not isinstance(bias, Mapping) or not all(_is_int(k) and k >= 0 and _is_real(v) and -100 <= v <= 100
                                                        for k, v in bias.items()):
                raise _err("logit_bias", "must map non-negative integer token ids to numbers in [-100, 100]", bias)
            object.__setattr__(self, "logit_bias", {int(k): float(v) for k, v in bias.items()} or None)
        allowed = self.allowed_token_ids
        if allowed is not None:
            if isinstance(allowed, (str, bytes)) or not isinstance(allowed, Sequence) or not allowed or \
                    not all(_is_int(i) and i >= 0 for i in allowed):
                raise _err("allowed_token_ids", "must be a non-empty list of non-negative integers", allowed)
            object.__setattr__(self, "allowed_token_ids", tuple(allowed))

    @property
    def edits_logits(self) -> bool:
        """True when the row has a logit bias, an allow-list or a grammar (the sampler then takes its eager path)."""
        return self.logit_bias is not None or self.allowed_token_ids is not None or self.structured_outputs is not None

    def _validate(self) -> None:
        def real(name, ok, expectation):
            v = getattr(self, name)
            if v is None:
                return
            if not _is_real(v) or not ok(v):
                raise _err(name, expectation, v)

        real("temperature", lambda v: v >= 0, "must be a finite number >= 0")
        real("top_p", lambda v: 0 < v <= 1, "must be in (0, 1]")
        real("min_p", lambda v: 0 <= v <= 1, "must be in [0, 1]")
        real("presence_penalty", lambda v: -2 <= v <= 2, "must be in [-2, 2]")
        real("frequency_penalty", lambda v: -2 <= v <= 2, "must be in [-2, 2]")
        real("repetition_penalty", lambda v: v > 0, "must be a finite number > 0")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < -1):
            raise _err("top_k", "must be an integer >= -1 (0 or -1: off)", self.top_k)
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            raise _err("max_tokens", "must be an integer >= 1 or None", self.max_tokens)
        if not _is_int(self.min_tokens) or self.min_tokens < 0:
            raise _err("min_tokens", "must be an integer >= 0", self.min_tokens)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise _err("min_tokens", f"must be <= max_tokens={self.max_tokens}", self.min_tokens)
        if self.structured_outputs is not None:
            if not isinstance(self.structured_outputs, StructuredOutputs):
                raise _err("structured_outputs", "must be a qwen35_native.StructuredOutputs", self.structured_outputs)
            if self.min_tokens:
                raise _err("structured_outputs", "cannot be combined with min_tokens (the grammar decides where the "
                           "output ends)", self.structured_outputs)
        if not _is_int(self.n) or self.n < 1:
            raise _err("n", "must be an integer >= 1", self.n)
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise _err(name, "must be an integer >= 0 or None", value)
        if self.seed is not None and not _is_int(self.seed):
            raise _err("seed", "must be an integer or None", self.seed)
        for name in ("ignore_eos", "skip_special_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise _err(name, "must be a bool", getattr(self, name))

    # ----------------------------------------------------------------------------------------------------------
    @classmethod
    def thinking(cls, **overrides: Any) -> SamplingParams:
        """The model card's set for thinking mode: temperature 0.6, top-p 0.95, top-k 20, no penalties."""
        base = dict(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=0.0, frequency_penalty=0.0,
                    repetition_penalty=1.0)
        return cls(**{**base, **overrides})

    @classmethod
    def instruct(cls, **overrides: Any) -> SamplingParams:
        """The model card's set for non-thinking (instruct) mode: temperature 0.7, top-p 0.8, top-k 20,
        presence penalty 1.5."""
        base = dict(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0, presence_penalty=1.5, frequency_penalty=0.0,
                    repetition_penalty=1.0)
        return cls(**{**base, **overrides})

    def resolved(self, generation_config: Mapping[str, Any] | None = None) -> SamplingParams:
        """A copy with every unset sampler field filled: from ``generation_config`` (the parsed
        ``generation_config.json``) where it has the key, else vLLM's default. ``top_k=-1`` becomes 0. Values taken
        from the generation config are validated like user values (an invalid file is an error naming the field)."""
        generation_config = generation_config or {}
        updates: dict[str, Any] = {}
        for key, name in _GENERATION_CONFIG_KEYS.items():
            if getattr(self, name) is None and generation_config.get(key) is not None:
                updates[name] = generation_config[key]
        for name, default in _DEFAULTS.items():
            if getattr(self, name) is None and name not in updates:
                updates[name] = default
        out = dataclasses.replace(self, **updates)
        if out.top_k == -1:
            out = dataclasses.replace(out, top_k=0)
        object.__setattr__(out, "_resolved", True)
        return out

    @property
    def is_resolved(self) -> bool:
        return self._resolved

    @property
    def greedy(self) -> bool:
        """True when this request samples greedily (temperature below 1e-5). Needs a resolved instance."""
        self._require_resolved("greedy")
        return self.temperature < GREEDY_TEMPERATURE

    def for_sample(self, index: int, default_seed: int | None = None) -> SamplingParams:
        """The parameters of sample ``index`` of ``n``: ``n=1`` and seed ``seed + index`` (vLLM's convention), or
        ``default_seed`` when this request has no seed (the engine draws one per sample). Only sample 0 scores the
        prompt (``prompt_logprobs``)."""
        if not _is_int(index) or not 0 <= index < self.n:
            raise _err("index", f"must be in [0, n={self.n})", index)
        seed = self.seed + index if self.seed is not None else default_seed
        out = dataclasses.replace(self, n=1, seed=seed, prompt_logprobs=self.prompt_logprobs if index == 0 else None)
        object.__setattr__(out, "_resolved", self._resolved)
        return out

    def _require_resolved(self, what: str) -> None:
        if not self._resolved:
            raise ValueError(f"qwen35_native.SamplingParams: {what} needs resolved parameters; call "
                             f".resolved(generation_config) first")
