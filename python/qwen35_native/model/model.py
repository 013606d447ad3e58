"""The Qwen3.5 text model (MODEL_SPEC §3e): embedding, decoder layers (GDN or gated attention, then MoE or dense
MLP), final norm, lm_head. Two entry points:

- ``model(input_ids, attention_mask=None, cu_seqlens=None)``: logits for a padded batch ``[B, T]`` (with an
  optional mask) or for packed sequences ``[T]`` with ``cu_seqlens``; no cache to manage (a temporary one is used).
- ``model.forward_cached(input_ids, batch, cache)``: the engine's step: packed tokens of several sequences (prefill
  chunks and decode tokens together) against caches it owns (see ``cache.py``).

Images and videos (when the checkpoint has a vision tower, ``model.visual``): ``model(input_ids, pixel_values=...,
image_grid_thw=..., pixel_values_videos=..., video_grid_thw=...)`` for a full forward; for the cached path
``model.prepare_multimodal(prompt_ids, ...)`` then ``forward_cached(..., vision_embeds=...)`` (see
``multimodal.py``, which documents the engine's sequence of calls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .cache import KV_BLOCK_SIZE, ForwardBatch, ModelCache
from .config import Qwen35Config
from .layers import DecoderLayer, _param
from .multimodal import MultimodalPrompt, packed_multimodal_inputs, prepare_multimodal
from .vision import VisionTower

MULTIMODAL_KWARGS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


class MtpHead(nn.Module):
    """The multi-token-prediction head (MODEL_SPEC §3h), loaded with ``load_mtp=True``: the draft model of the
    engine's speculative decoding (``engine/spec_decode.py``), run through ``Qwen35ForCausalLM.forward_mtp``."""

    def __init__(self, cfg, dtype, device, backends):
        super().__init__()
        H = cfg.hidden_size
        self.fc = _param(H, 2 * H, dtype=dtype, device=device)
        self.pre_fc_norm_embedding = _param(H, dtype=dtype, device=device)
        self.pre_fc_norm_hidden = _param(H, dtype=dtype, device=device)
        self.norm = _param(H, dtype=dtype, device=device)
        self.layers = nn.ModuleList(DecoderLayer(cfg, "full_attention", dtype, device, backends)
                                    for _ in range(cfg.mtp_num_hidden_layers))
        self.eps, self.backends = cfg.rms_norm_eps, backends

    def forward(self, embeds: torch.Tensor, hidden: torch.Tensor, batch: ForwardBatch,
                kv: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """``x = fc([norm_e(embeds), norm_h(hidden)])`` (embedding first, as vLLM), the decoder layer(s) over the
        batch with their own KV caches ``kv[j]``, then ``mtp.norm`` with the residual: ``[T, H]``."""
        be = self.backends["rms_norm"]
        e = ops.rms_norm(embeds, self.pre_fc_norm_embedding, self.eps, backend=be)
        h = ops.rms_norm(hidden, self.pre_fc_norm_hidden, self.eps, backend=be)
        x, residual = F.linear(torch.cat([e, h], dim=-1), self.fc), None           # [T, H]
        for j, layer in enumerate(self.layers):
            x, residual = layer(x, residual, batch, kv[j])
        x, _ = ops.rms_norm(x, self.norm, self.eps, residual=residual, backend=be)
        return x


class Qwen35ForCausalLM(nn.Module):
    def __init__(self, config: Qwen35Config, dtype: torch.dtype, device, backends: dict, with_mtp: bool = False,
                 with_vision: bool = False):
        super().__init__()
        cfg = config.text
        self.config, self.text_config, self.dtype, self.backends = config, cfg, dtype, backends
        self.embed_tokens = _param(cfg.vocab_size, cfg.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(DecoderLayer(cfg, kind, dtype, device, backends) for kind in cfg.layer_types)
        self.norm = _param(cfg.hidden_size, dtype=dtype, device=device)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(cfg.vocab_size, cfg.hidden_size, dtype=dtype, device=device)
        self.mtp = MtpHead(cfg, dtype, device, backends) if with_mtp else None
        if with_vision and config.vision is None:
            raise ValueError("qwen35_native: with_vision=True but config.json has no vision_config")
        self.visual = VisionTower(config.vision, dtype, device, backends) if with_vision else None
        # The config the caches are shaped by (head counts of this model's own weights). Tensor parallelism
        # (``qwen35_native.parallel``) sets it to a rank's local head counts; ``text_config`` stays the global one.
        self.cache_config = cfg

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.device

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens if self.text_config.tie_word_embeddings else self.lm_head

    def allocate_cache(self, num_blocks: int, block_size: int = KV_BLOCK_SIZE, num_slots: int = 1,
                       with_mtp: bool = False) -> ModelCache:
        """Paged KV cache (``num_blocks`` blocks of ``block_size`` tokens; the attention kernels want 64, see
        ``ops/attention.py``) and ``num_slots`` GDN state slots; ``with_mtp``: the MTP head's KV caches too."""
        if with_mtp and self.mtp is None:
            raise ValueError("qwen35_native: allocate_cache(with_mtp=True) needs the MTP head (load the checkpoint "
                             "with load_mtp=True)")
        return ModelCache.allocate(self.cache_config, num_blocks, block_size, num_slots, self.device, self.dtype,
                                   mtp_layers=len(self.mtp.layers) if with_mtp else 0)

    # Token embedding and output head. Tensor parallelism replaces both on the instance (vocab-parallel lookup +
    # all-reduce, vocab-parallel lm_head + all-gather); everything else calls them, never the weights directly.
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """int ``[T]`` -> ``[T, H]`` embeddings."""
        return F.embedding(input_ids.long(), self.embed_tokens)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[M, H]`` final-normed hidden states -> ``[M, vocab]`` logits."""
        return F.linear(hidden, self.output_weight)

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"qwen35_native: input_ids must be int32 or int64, got {input_ids.dtype}")
        if input_ids.numel() == 0:
            raise ValueError("qwen35_native: input_ids is empty (need at least one token)")
        capturing = input_ids.is_cuda and torch.cuda.is_current_stream_capturing()
        if not capturing:  # one host sync per forward; skipped while a CUDA graph is being captured
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.text_config.vocab_size:
                raise ValueError(f"qwen35_native: token ids must be in [0, vocab_size={self.text_config.vocab_size})"
                                 f", got min {lo} max {hi}")

    def encode_vision(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Vision tower over images (or videos): ``[sum(t*h*w), C*tp*p*p]`` pixel rows and their ``grid_thw
        [n, 3]`` -> ``[sum(t*h*w) / merge**2, H]`` features in the model dtype, items in ``grid_thw`` order."""
        if self.visual is None:
            why = ("config.json has no vision_config" if self.config.vision is None else
                   "the checkpoint has no model.visual.* tensors, or it was loaded with load_vision=False")
            raise ValueError(f"qwen35_native: this model cannot take images or videos: {why}")
        return self.visual(pixel_values, grid_thw).to(self.dtype)

    def prepare_multimodal(self, input_ids, pixel_values: torch.Tensor | None = None,
                           image_grid_thw: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                           video_grid_thw: torch.Tensor | None = None) -> MultimodalPrompt:
        """One expanded prompt ``[L]`` with its images / videos -> :class:`~.multimodal.MultimodalPrompt`: M-RoPE
        positions, ``rope_delta`` and the vision features (the tower runs here, once) for cached prefill."""
        return prepare_multimodal(self, input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)

    def forward_cached(self, input_ids: torch.Tensor, batch: ForwardBatch, cache: ModelCache,
                       return_hidden: bool = False,
                       vision_embeds: tuple[torch.Tensor, torch.Tensor] | None = None):
        """One engine step over packed tokens.

        Args:
            input_ids: int ``[T]`` new tokens of the batch's sequences, packed in ``batch.cu_seqlens`` order.
            batch: :class:`ForwardBatch` (positions, cu_seqlens, GDN slots, block tables, logits to return).
            cache: :class:`ModelCache` read and written in place.
            return_hidden: also return the final-normed hidden states ``[T, H]`` (input of the MTP head).
            vision_embeds: optional ``(index int64 [K], features [K, H])``: token ``index[k]`` of the batch takes
                ``features[k]`` instead of its embedding (image / video pad tokens; see ``multimodal.py``).
        Returns:
            logits ``[M, vocab]`` for ``batch.logits_indices`` (all T when None), or ``(logits, hidden)``.
        """
        if input_ids.dim() != 1 or input_ids.numel() != batch.num_tokens:
            raise ValueError(f"qwen35_native: input_ids must be [T={batch.num_tokens}] packed tokens, got shape "
                             f"{list(input_ids.shape)}")
        self._check_ids(input_ids)
        h = self.embed(input_ids)                                                 # [T, H]
        if vision_embeds is not None:
            h = self._scatter_vision(h, *vision_embeds)
        residual = None
        for i, layer in enumerate(self.layers):
            caches = cache.kv[i] if layer.kind == "full_attention" else (cache.conv[i], cache.ssm[i])
            h, residual = layer(h, residual, batch, caches)
        h, _ = ops.rms_norm(h, self.norm, self.text_config.rms_norm_eps, residual=residual,
                            backend=self.backends["rms_norm"])                    # [T, H]
        picked = h if batch.logits_indices is None else h[batch.logits_indices]  # [M, H]
        logits = self.compute_logits(picked)                                      # [M, vocab]
        return (logits, h) if return_hidden else logits

    def forward_mtp(self, next_ids: torch.Tensor, hidden: torch.Tensor, batch: ForwardBatch,
                    cache: ModelCache, vision_embeds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The MTP head over the rows of a step that ``forward_cached(..., return_hidden=True)`` ran: row t pairs
        ``hidden[t]`` (the target's final-normed state at position p) with the embedding of ``next_ids[t]`` (the
        token at position p + 1) and is processed at position p (vLLM's convention), reading and writing the MTP KV
        caches of ``cache`` (``allocate_cache(with_mtp=True)``). Returns ``[T, H]``; ``compute_logits`` of a row
        gives the draft distribution of the token at position p + 2. ``vision_embeds`` (``(row index [K], features
        [K, H])``): rows whose next token is a vision pad token embed its vision features instead, as the target's
        input did (vLLM's MTP proposer does the same)."""
        if self.mtp is None:
            raise ValueError("qwen35_native: forward_mtp needs the MTP head (load the checkpoint with load_mtp=True)")
        if len(cache.mtp_kv) != len(self.mtp.layers):
            raise ValueError("qwen35_native: forward_mtp needs a cache with the MTP KV caches "
                             "(allocate_cache(with_mtp=True))")
        if next_ids.dim() != 1 or next_ids.numel() != batch.num_tokens or tuple(hidden.shape) != (
                batch.num_tokens, self.text_config.hidden_size):
            raise ValueError(f"qwen35_native: forward_mtp needs next_ids [T={batch.num_tokens}] and hidden [T, "
                             f"{self.text_config.hidden_size}], got {list(next_ids.shape)} and {list(hidden.shape)}")
        self._check_ids(next_ids)
        x = self.embed(next_ids)
        if vision_embeds is not None:
            x = self._scatter_vision(x, *vision_embeds)
        return self.mtp(x, hidden, batch, cache.mtp_kv)

    def _scatter_vision(self, h: torch.Tensor, index: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        T, H = h.shape
        if index.dim() != 1 or features.dim() != 2 or features.shape != (index.numel(), H):
            raise ValueError(f"qwen35_native: vision_embeds must be (index [K], features [K, H={H}]), got shapes "
                             f"{list(index.shape)} and {list(features.shape)}")
        if index.numel() == 0:
            return h
        if int(index.min()) < 0 or int(index.max()) >= T:
            raise ValueError(f"qwen35_native: vision_embeds indices must be token indices in [0, {T})")
        return h.index_copy(0, index.to(h.device).long(), features.to(device=h.device, dtype=h.dtype))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Full causal forward without a persistent cache.

        Args:
            input_ids: int ``[B, T]`` (left- or right-padded when ``attention_mask`` is given) or ``[T]`` with
                ``cu_seqlens``.
            attention_mask: optional ``[B, T]`` of 1 (token) / 0 (padding); the ones of a row must be contiguous.
            cu_seqlens: optional int ``[N+1]`` offsets of packed sequences in a 1-D ``input_ids``.
            pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw: optional images / videos (as
                ``qwen35_native.multimodal.VisionProcessor`` returns them) for prompts already expanded; the items
                are taken in order by the sequences (sequence 0's first), as in transformers; M-RoPE positions
                follow MODEL_SPEC §3g.
        Returns:
            logits ``[B, T, vocab]`` (padded positions are 0) or ``[T, vocab]`` for packed input.
        """
        mm = {k: kwargs[k] for k in MULTIMODAL_KWARGS if kwargs.get(k) is not None}
        unknown = sorted(set(kwargs) - set(MULTIMODAL_KWARGS))
        if unknown:
            raise TypeError(f"qwen35_native: unexpected forward arguments {unknown}")
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"qwen35_native: input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        self._check_ids(input_ids)
        if cu_seqlens is not None:
            if input_ids.dim() != 1 or attention_mask is not None:
                raise ValueError("qwen35_native: with cu_seqlens, input_ids must be 1-D packed tokens and "
                                 "attention_mask must be None")
            bounds = cu_seqlens.tolist()
            if bounds[0] != 0 or bounds[-1] != input_ids.numel() or any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise ValueError(f"qwen35_native: cu_seqlens must rise strictly from 0 to {input_ids.numel()}, "
                                 f"got {bounds}")
            return self._packed_forward(input_ids, [b - a for a, b in zip(bounds, bounds[1:])], mm)
        if input_ids.dim() != 2:
            raise ValueError(f"qwen35_native: input_ids must be [B, T] (or [T] with cu_seqlens), got shape "
                             f"{list(input_ids.shape)}")
        B, T = input_ids.shape
        mask = torch.ones(B, T, dtype=torch.bool)
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, T):
                raise ValueError(f"qwen35_native: attention_mask must have shape [B, T]={[B, T]}, got "
                                 f"{list(attention_mask.shape)}")
            mask = attention_mask.bool().cpu()
            if not mask.any(1).all():
                raise ValueError("qwen35_native: every sequence needs at least one token (a mask row is all zero)")
            # one run of ones per row: left padding (as transformers' generate pads), right padding, or none
            starts = mask.int().diff(dim=1, prepend=torch.zeros(B, 1, dtype=torch.int)) == 1
            if (starts.sum(1) != 1).any():
                raise ValueError("qwen35_native: attention_mask must mark one contiguous run of tokens per row "
                                 "(left or right padding), got a row with gaps")
        lens = mask.sum(1).tolist()
        # each row's tokens become one sequence from position 0, as transformers computes positions from the mask
        flat = self._packed_forward(input_ids[mask.to(input_ids.device)], lens, mm)   # [sum(lens), vocab]
        out = flat.new_zeros(B, T, flat.shape[-1])
        out[mask.to(out.device)] = flat
        return out

    def _packed_forward(self, input_ids: torch.Tensor, lens: list[int], mm: dict | None = None) -> torch.Tensor:
        positions, vision = None, None
        if mm:  # images / videos are shared by the sequences in order (sequence 0's first), as in transformers
            positions, vision = packed_multimodal_inputs(self, input_ids, lens, **mm)
        block = KV_BLOCK_SIZE
        blocks = [(n + block - 1) // block for n in lens]
        cache = self.allocate_cache(num_blocks=sum(blocks), block_size=block, num_slots=len(lens))
        table = torch.zeros(len(lens), max(blocks), dtype=torch.int32)
        start = 0
        for i, nb in enumerate(blocks):
            table[i, :nb] = torch.arange(start, start + nb)
            start += nb
        batch = ForwardBatch.build(lens, [0] * len(lens), list(range(len(lens))), table, block, self.device,
                                   positions=positions, logits="all")
        return self.forward_cached(input_ids.to(self.device), batch, cache, vision_embeds=vision)
