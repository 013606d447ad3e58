"""The batched on-device sampler.

One call samples one token for each of B rows from logits [B, V] (any float dtype; computed in fp32), every row
with its own parameters. The order of operations is vLLM's (v1 sampler):

1. raw logprobs = log_softmax(logits) if any row asks for logprobs (what ``logprobs`` reports);
2. a row's ``allowed_token_ids`` (every other logit set to -inf) and ``logit_bias`` (added); then the penalties:
   repetition, frequency, then presence (see ``penalties.py`` for which tokens count); then the banned tokens of
   a row (``min_tokens``: its stop tokens and eos ids) set to -inf;
3. greedy rows (temperature < 1e-5) take argmax of the penalised logits, ties to the lowest id;
4. the other rows: divide by temperature; min-p (drop tokens whose probability is below min_p x the largest);
   top-k (keep logits >= the k-th largest, so ties at the boundary are kept); top-p (keep the smallest set of most
   likely tokens whose probability mass reaches p, computed on what min-p and top-k kept; ties favour the lower
   id); sample from the renormalised rest. The masks are decided in float64 (see ``truncation.py``).

Randomness is counter-based, so a row's token depends only on its own logits, parameters, seed and step: row b
draws one uniform u = hash(seed_b, step_b) in [0, 1) (computed on the host, ``request_uniform``) and takes the
first kept token, in token-id order, whose float64 cumulative weight exceeds u x total (inverse-CDF sampling: the
same distribution as vLLM's exponential race). The token does not depend on the other rows of the batch, and CPU
and CUDA agree up to float64 rounding. ``step`` is the number of tokens the sequence has generated so far. When
every sampling row uses top-k (the recommended presets do), only ``torch.topk`` candidates are sorted instead of
the whole vocabulary.

Host traffic: ``SamplingTensors.build`` packs all per-row parameters into one host tensor and uploads it once per
step; decisions that would need device values (which masks to apply) use host-side flags, so the sampler never
synchronises; ``SamplerOutput.to_host`` brings the ids (and logprobs) back in one transfer.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .penalties import apply_penalties
from .sampling_params import GREEDY_TEMPERATURE, SamplingParams
from .structured import bitmask_to_bool
from .truncation import truncate_and_draw, truncated_logits

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def request_uniform(seed: int, step: int) -> float:
    """The uniform in [0, 1) that sequence ``seed`` uses at output position ``step``: 52 random bits, so
    ``u * total`` stays below ``total`` in float64."""
    return (_splitmix64(_splitmix64(seed & _M64) ^ (step & _M64)) >> 12) * 2.0**-52


def draw_seed() -> int:
    """A fresh random seed for a request that did not give one (the engine assigns it at admission)."""
    return secrets.randbits(63)


# Column order of the packed per-step parameter tensor.
_COLUMNS = ("temperature", "top_p", "min_p", "presence", "repetition", "top_k", "uniform", "greedy", "frequency")
NUM_COLUMNS = len(_COLUMNS)


class SamplingFlags(NamedTuple):
    """Host-side facts about a step's rows that decide which sampler stages run (hashable: the CUDA-graph key)."""

    all_greedy: bool
    any_greedy: bool
    any_top_k: bool
    any_top_p: bool
    any_min_p: bool
    any_presence: bool
    any_repetition: bool
    max_logprobs: int | None  # largest ``logprobs`` over rows; None when no row asks
    max_top_k: int | None  # largest top-k of the sampling rows when all of them use top-k, else None
    any_frequency: bool = False
    any_token_edits: bool = False  # a row has a logit bias or an allow-list: only ``build`` carries those


# A padding row (CUDA-graph batches padded to a captured size): greedy, every stage off.
PAD_ROW = (1.0, 1.0, 0.0, 0.0, 1.0, 0, 0.0, 1.0, 0.0)  # top_k column set to the vocab size by ``pad_rows``


def pad_rows(count: int, vocab_size: int) -> torch.Tensor:
    """``count`` host rows of :data:`PAD_ROW` in the packed layout of :meth:`SamplingTensors.pack`."""
    rows = torch.tensor([PAD_ROW], dtype=torch.float64).repeat(count, 1)
    rows[:, _COLUMNS.index("top_k")] = vocab_size
    return rows


@dataclass
class SamplingTensors:
    """Per-row sampler parameters for one step, on the logits' device, plus host-side flags saying which stages
    any row needs. Build it with :meth:`build` (or :meth:`pack` + :meth:`from_packed` when the packed rows live in
    a static buffer, as in CUDA graphs)."""

    temperature: torch.Tensor  # [B] fp32; 1.0 on greedy rows (never divided by 0)
    top_p: torch.Tensor  # [B] fp32; 1.0 = off
    min_p: torch.Tensor  # [B] fp32; 0.0 = off
    presence: torch.Tensor  # [B] fp32
    repetition: torch.Tensor  # [B] fp32
    top_k: torch.Tensor  # [B] int64; V = off
    uniform: torch.Tensor  # [B] fp64, from (seed, step)
    greedy: torch.Tensor  # [B] bool
    frequency: torch.Tensor  # [B] fp32
    all_greedy: bool
    any_greedy: bool
    any_top_k: bool
    any_top_p: bool
    any_min_p: bool
    any_presence: bool
    any_repetition: bool
    max_logprobs: int | None  # largest ``logprobs`` over rows; None when no row asks
    max_top_k: int | None  # largest top-k of the sampling rows when all of them use top-k, else None
    any_frequency: bool
    any_token_edits: bool
    vocab_size: int
    banned: torch.Tensor | None = None  # int64 [2, K]: (row, token) pairs that must not be sampled (min_tokens)
    bias: tuple[torch.Tensor, torch.Tensor] | None = None  # (int64 [2, K] (row, token) pairs, fp32 [K] biases)
    allowed: torch.Tensor | None = None  # bool [B, V]: what each row may sample (all True without an allow-list)

    @property
    def batch_size(self) -> int:
        return self.temperature.shape[0]

    @property
    def flags(self) -> SamplingFlags:
        return SamplingFlags(*(getattr(self, name) for name in SamplingFlags._fields))

    @staticmethod
    def pack(params: Sequence[SamplingParams], steps: Sequence[int],
             vocab_size: int) -> tuple[torch.Tensor, SamplingFlags]:
        """The host side of :meth:`build`: float64 rows ``[B, NUM_COLUMNS]`` (one per request, columns ``_COLUMNS``) and
        the flags. ``params[b]``: row b's resolved parameters (``SamplingParams.resolved``), with a seed on every
        row that samples (``for_sample(i, default_seed=draw_seed())`` gives one); ``steps[b]``: tokens row b has
        generated so far."""
        if len(params) != len(steps) or not params:
            raise ValueError(f"qwen35_native.SamplingTensors.build: params and steps must be non-empty lists of one "
                             f"length, got {len(params)} and {len(steps)}")
        rows = []
        for b, (p, step) in enumerate(zip(params, steps)):
            if not isinstance(p, SamplingParams) or not p.is_resolved:
                raise ValueError(f"qwen35_native.SamplingTensors.build: params[{b}] must be resolved SamplingParams "
                                 f"(call .resolved(generation_config)), got {p!r}")
            greedy = p.temperature < GREEDY_TEMPERATURE
            if not greedy and p.seed is None:
                raise ValueError(f"qwen35_native.SamplingTensors.build: params[{b}] samples but has no seed; assign "
                                 f"one with .for_sample(i, default_seed=draw_seed())")
            top_k = vocab_size if p.top_k <= 0 else min(p.top_k, vocab_size)
            uniform = 0.0 if greedy else request_uniform(p.seed, int(step))
            rows.append((1.0 if greedy else p.temperature, p.top_p, p.min_p, p.presence_penalty,
                         p.repetition_penalty, top_k, uniform, float(greedy), p.frequency_penalty))
        sampling = [(p, r) for p, r in zip(params, rows) if not r[7]]
        logprobs = [p.logprobs for p in params if p.logprobs is not None]
        top_ks = [int(r[5]) for _, r in sampling]
        flags = SamplingFlags(
            all_greedy=not sampling, any_greedy=len(sampling) < len(params),
            any_top_k=any(r[5] < vocab_size for _, r in sampling), any_top_p=any(p.top_p < 1.0 for p, _ in sampling),
            any_min_p=any(p.min_p > 0.0 for p, _ in sampling),
            any_presence=any(p.presence_penalty != 0.0 for p in params),
            any_repetition=any(p.repetition_penalty != 1.0 for p in params),
            max_logprobs=max(logprobs) if logprobs else None,
            max_top_k=max(top_ks) if top_ks and max(top_ks) < vocab_size else None,
            any_frequency=any(p.frequency_penalty != 0.0 for p in params),
            any_token_edits=any(p.edits_logits for p in params))
        return torch.tensor(rows, dtype=torch.float64), flags

    @classmethod
    def from_packed(cls, packed: torch.Tensor, flags: SamplingFlags, vocab_size: int) -> SamplingTensors:
        """Views of a device float64 ``[B, NUM_COLUMNS]`` tensor of packed rows (``pack``'s layout) as sampler
        inputs. The float32/bool columns are converted here, so with a static ``packed`` buffer the conversions are
        part of whatever is captured after this call."""
        col = {name: packed[:, i] for i, name in enumerate(_COLUMNS)}
        return cls(temperature=col["temperature"].float(), top_p=col["top_p"].float(), min_p=col["min_p"].float(),
                   presence=col["presence"].float(), repetition=col["repetition"].float(),
                   top_k=col["top_k"].long(), uniform=col["uniform"].contiguous(), greedy=col["greedy"] > 0.5,
                   frequency=col["frequency"].float(),
                   vocab_size=vocab_size, **flags._asdict())

    @classmethod
    def build(cls, params: Sequence[SamplingParams], steps: Sequence[int], vocab_size: int,
              device: torch.device | str = "cpu", banned: Sequence[Sequence[int]] | None = None,
              bitmask: torch.Tensor | None = None) -> SamplingTensors:
        """``pack`` then ``from_packed`` after one host-to-device copy. ``banned[b]``: token ids row b must not
        sample this step (:func:`min_tokens_bans`). ``bitmask``: int32 ``[B, ceil(V / 32)]`` allowed tokens of
        rows with a grammar (``structured.py``; all ones on the others)."""
        host, flags = cls.pack(params, steps, vocab_size)
        pin = torch.device(device).type == "cuda"
        packed = (host.pin_memory() if pin else host).to(device, non_blocking=pin)
        out = cls.from_packed(packed, flags, vocab_size)
        pairs = [(b, t) for b, ids in enumerate(banned or []) for t in ids]
        if pairs:
            _check_ids("banned", [t for _, t in pairs], vocab_size)
            out.banned = torch.tensor(pairs, dtype=torch.long).t().contiguous().to(device, non_blocking=pin)
        if flags.any_token_edits:
            out.bias, out.allowed = _token_edits(params, vocab_size, device)
        if bitmask is not None:
            if not flags.any_token_edits or bitmask.dtype != torch.int32 or list(bitmask.shape) != \
                    [len(params), (vocab_size + 31) // 32]:
                raise ValueError(f"qwen35_native.SamplingTensors.build: bitmask must be int32 [{len(params)}, "
                                 f"{(vocab_size + 31) // 32}] for rows with structured_outputs, got {bitmask.dtype} "
                                 f"{list(bitmask.shape)}")
            grammar = bitmask_to_bool(bitmask.to(device), vocab_size)
            out.allowed = grammar if out.allowed is None else out.allowed & grammar
        if out.bias is None and out.allowed is None:  # e.g. grammars that wait for </think>: nothing to edit now
            out.any_token_edits = False
        return out


def _check_ids(name: str, ids: Sequence[int], vocab_size: int) -> None:
    if any(not 0 <= t < vocab_size for t in ids):
        raise ValueError(f"qwen35_native.SamplingTensors.build: {name} token ids must be in [0, {vocab_size}), got "
                         f"{sorted({t for t in ids if not 0 <= t < vocab_size})[:8]}")


def _token_edits(params: Sequence[SamplingParams], vocab_size: int, device) -> tuple:
    """(bias, allowed) of :class:`SamplingTensors` from the rows' ``logit_bias`` and ``allowed_token_ids``."""
    bias = [(b, t, v) for b, p in enumerate(params) for t, v in (p.logit_bias or {}).items()]
    _check_ids("logit_bias", [t for _, t, _ in bias], vocab_size)
    bias_out = None
    if bias:
        pairs = torch.tensor([(b, t) for b, t, _ in bias], dtype=torch.long).t().contiguous().to(device)
        bias_out = (pairs, torch.tensor([v for *_, v in bias], dtype=torch.float32).to(device))
    restricted = [(b, p.allowed_token_ids) for b, p in enumerate(params) if p.allowed_token_ids is not None]
    allowed = None
    if restricted:
        _check_ids("allowed_token_ids", [t for _, ids in restricted for t in ids], vocab_size)
        allowed = torch.ones(len(params), vocab_size, dtype=torch.bool)
        for b, ids in restricted:
            allowed[b] = False
            allowed[b, list(ids)] = True
        allowed = allowed.to(device)
    return bias_out, allowed


def min_tokens_bans(rules: Sequence[tuple[int, Sequence[int]] | None] | None,
                    steps: Sequence[int]) -> list[list[int]] | None:
    """Per row, the ids it must not sample at output position ``steps[b]``: ``rules[b] = (min_tokens, ids)`` bans
    ``ids`` while ``steps[b] < min_tokens``. None when no row bans anything."""
    if rules is None:
        return None
    bans = [list(rule[1]) if rule is not None and step < rule[0] else [] for rule, step in zip(rules, steps)]
    return bans if any(bans) else None


@dataclass
class SamplerOutput:
    """What one sampler call returns, on the device. Logprob fields are None when no row asked for them."""

    token_ids: torch.Tensor  # [B] int64
    logprobs: torch.Tensor | None = None  # [B] fp32: raw logprob of the sampled token
    ranks: torch.Tensor | None = None  # [B] int64: 1 + number of tokens with a larger raw logprob
    top_logprobs: torch.Tensor | None = None  # [B, N] fp32, N = max requested, descending
    top_ids: torch.Tensor | None = None  # [B, N] int64

    def to_host(self) -> HostSamplerOutput:
        """Everything as Python lists, in a single device-to-host transfer (ids are exact in float64)."""
        if self.logprobs is None:
            return HostSamplerOutput(self.token_ids.tolist())
        parts = [self.token_ids[:, None], self.logprobs[:, None], self.ranks[:, None], self.top_logprobs,
                 self.top_ids]
        host = torch.cat([t.double() for t in parts], dim=1).cpu()
        n = self.top_ids.shape[1]
        ids = host[:, 0].long().tolist()
        return HostSamplerOutput(ids, host[:, 1].tolist(), host[:, 2].long().tolist(), host[:, 3:3 + n].tolist(),
                                 host[:, 3 + n:].long().tolist())


@dataclass
class HostSamplerOutput:
    token_ids: list[int]
    logprobs: list[float] | None = None
    ranks: list[int] | None = None
    top_logprobs: list[list[float]] | None = None
    top_ids: list[list[int]] | None = None


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Sets to -inf the tokens whose probability is below ``min_p`` [B] x the row's largest. [B, V] fp32."""
    return truncated_logits(logits, None, None, min_p)


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """Sets to -inf what top-k then top-p drop. ``top_k`` [B] int64 in [1, V] (V = off), ``top_p`` [B] fp32 in
    (0, 1] (1 = off); None skips the stage. Ties: top-k keeps every logit equal to the k-th largest; top-p favours
    the lower token id among equal logits."""
    return truncated_logits(logits, top_k, top_p, None)


def _check_logits(logits: torch.Tensor, tensors: SamplingTensors) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"qwen35_native.sample: logits must be a float tensor [B, V], got "
                         f"{getattr(logits, 'dtype', type(logits))} {list(getattr(logits, 'shape', []))}")
    if logits.shape[0] != tensors.batch_size or logits.shape[1] != tensors.vocab_size:
        raise ValueError(f"qwen35_native.sample: logits must have shape [B, V]=[{tensors.batch_size}, "
                         f"{tensors.vocab_size}] (from the sampling tensors), got {list(logits.shape)}")
    if logits.device != tensors.temperature.device:
        raise ValueError(f"qwen35_native.sample: logits must be on the sampling tensors' device "
                         f"({tensors.temperature.device}), got {logits.device}")


def penalized_logits(logits: torch.Tensor, tensors: SamplingTensors, prompt_mask: torch.Tensor | None = None,
                     output_mask: torch.Tensor | None = None,
                     output_counts: torch.Tensor | None = None) -> torch.Tensor:
    """Steps 2: fp32 logits after the penalties and bans (what greedy rows take the argmax of)."""
    _check_logits(logits, tensors)
    if tensors.any_token_edits and tensors.bias is None and tensors.allowed is None:
        raise ValueError("qwen35_native.sample: a row has logit_bias or allowed_token_ids, which only "
                         "SamplingTensors.build carries (from_packed has no per-row token lists)")
    x = logits.float()
    if tensors.allowed is not None:
        x = x.masked_fill(~tensors.allowed, float("-inf"))
    if tensors.bias is not None:  # out of place: x may still be the caller's logits
        x = x.index_put((tensors.bias[0][0], tensors.bias[0][1]), tensors.bias[1], accumulate=True)
    x = apply_penalties(x, tensors.presence if tensors.any_presence else None,
                        tensors.repetition if tensors.any_repetition else None, prompt_mask, output_mask,
                        tensors.frequency if tensors.any_frequency else None, output_counts)
    if tensors.banned is not None:  # out of place: x may still be the caller's logits
        x = x.index_put((tensors.banned[0], tensors.banned[1]), torch.tensor(float("-inf"), device=x.device))
    return x


def _stages(tensors: SamplingTensors):
    return (tensors.top_k if tensors.any_top_k else None, tensors.top_p if tensors.any_top_p else None,
            tensors.min_p if tensors.any_min_p else None)


def sampling_logits(penalized: torch.Tensor, tensors: SamplingTensors) -> torch.Tensor:
    """Step 4 without the draw: temperature, then min-p, top-k, top-p as -inf masks on penalised logits. Its
    softmax is the exact distribution sampling rows draw from (meaningless for greedy rows)."""
    return truncated_logits(penalized / tensors.temperature[:, None], *_stages(tensors))


def sample(logits: torch.Tensor, tensors: SamplingTensors, prompt_mask: torch.Tensor | None = None,
           output_mask: torch.Tensor | None = None, output_counts: torch.Tensor | None = None) -> SamplerOutput:
    """Samples one token per row. ``logits`` [B, V] on the device of ``tensors``; ``prompt_mask``/``output_mask``
    [B, V] bool (``TokenPresence.masks``) are needed only when a row has a repetition (both) or presence
    (``output_mask``) penalty, ``output_counts`` [B, V] int32 (``TokenPresence.counts_of``) when a row has a
    frequency penalty. Never synchronises with the host."""
    _check_logits(logits, tensors)
    raw_logprobs = logits.float().log_softmax(dim=-1) if tensors.max_logprobs is not None else None
    x = penalized_logits(logits, tensors, prompt_mask, output_mask, output_counts)
    greedy_ids = x.argmax(dim=-1) if tensors.any_greedy else None
    if tensors.all_greedy:
        token_ids = greedy_ids
    else:
        top_k, top_p, min_p = _stages(tensors)
        random_ids = truncate_and_draw(x / tensors.temperature[:, None], tensors.uniform, top_k, top_p, min_p,
                                       tensors.max_top_k)
        token_ids = random_ids if greedy_ids is None else torch.where(tensors.greedy, greedy_ids, random_ids)
    out = SamplerOutput(token_ids)
    if raw_logprobs is not None:
        sampled = raw_logprobs.gather(1, token_ids[:, None])
        out.logprobs = sampled.squeeze(1)
        out.ranks = (raw_logprobs > sampled).sum(dim=-1) + 1
        out.top_logprobs, out.top_ids = raw_logprobs.topk(tensors.max_logprobs, dim=-1)
    return out
