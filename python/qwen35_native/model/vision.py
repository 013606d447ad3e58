"""The vision tower (MODEL_SPEC §2.5, §3f): pixel rows of images and videos -> merged vision tokens in the text
model's hidden size.

Input: ``pixel_values [N, C * tp * p * p]`` (rows in 2x2-merge-block order, as ``qwen35_native.multimodal``
writes them) and ``grid_thw [n, 3]`` (one row per image or video). Steps:

1. patch embedding: the Conv3d with kernel = stride is a matmul with its weight flattened to ``[Vh, C*tp*p*p]``;
2. learned position embedding, bilinearly resampled (align-corners) from its square grid to each ``(h, w)`` grid,
   weights in fp32, added in the model dtype;
3. ``depth`` blocks: ``x += proj(attn(LN1(x)))``, ``x += fc2(gelu_tanh(fc1(LN2(x))))`` (LayerNorm with bias, eps
   1e-6); fused qkv; 2D rotary over the whole head (row angles on the first quarter and third quarter of the dims,
   column angles on the others; applied in fp32); non-causal attention block-diagonal per image and per video
   temporal group, through ``ops.varlen_attention`` with ``cu_seqlens``;
4. merger: LayerNorm per patch, 4 consecutive patches (one 2x2 block) concatenated, fc1, exact GELU, fc2.

Output: ``[N / merge**2, out_hidden_size]`` in the tower's dtype, images/videos in ``grid_thw`` order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .config import VisionConfig
from .layers import _param

LN_EPS = 1e-6


def check_grid(grid_thw, pixel_values: torch.Tensor, cfg: VisionConfig) -> list[tuple[int, int, int]]:
    """Validated ``[(t, h, w), ...]`` host ints of a grid tensor describing ``pixel_values``."""
    width = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2
    if not isinstance(grid_thw, torch.Tensor) or grid_thw.dim() != 2 or grid_thw.shape[1] != 3 or \
            grid_thw.dtype.is_floating_point:
        raise ValueError(f"qwen35_native: grid_thw must be an integer tensor [num_items, 3], got "
                         f"{getattr(grid_thw, 'shape', type(grid_thw).__name__)}")
    grids = [tuple(int(v) for v in row) for row in grid_thw.tolist()]
    m = cfg.spatial_merge_size
    for t, h, w in grids:
        if t < 1 or h < m or w < m or h % m or w % m:
            raise ValueError(f"qwen35_native: grid_thw row ({t}, {h}, {w}) must have t >= 1 and h, w positive "
                             f"multiples of spatial_merge_size={m}")
    rows = sum(t * h * w for t, h, w in grids)
    if pixel_values.dim() != 2 or tuple(pixel_values.shape) != (rows, width):
        raise ValueError(f"qwen35_native: pixel values must have shape [sum(t*h*w)={rows}, C*tp*p*p={width}] for "
                         f"grid_thw {grids}, got {list(pixel_values.shape)}")
    return grids


def patch_coords(grids, merge: int, device) -> tuple[torch.Tensor, ...]:
    """Per patch, in merge-block order and repeated over t: (row, col, grid height, grid width), int64 [N]."""
    rows, cols, hs, ws = [], [], [], []
    for t, h, w in grids:
        r = torch.arange(h, device=device).view(h // merge, merge, 1, 1).expand(-1, -1, w // merge, merge)
        c = torch.arange(w, device=device).view(1, 1, w // merge, merge).expand(h // merge, merge, -1, -1)
        r, c = r.transpose(1, 2).reshape(-1).repeat(t), c.transpose(1, 2).reshape(-1).repeat(t)   # (hb, wb, hi, wi)
        rows.append(r)
        cols.append(c)
        hs.append(torch.full_like(r, h))
        ws.append(torch.full_like(r, w))
    return torch.cat(rows), torch.cat(cols), torch.cat(hs), torch.cat(ws)


def _axis_taps(index: torch.Tensor, size: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation (align-corners) of position ``index`` on an axis of ``size`` into a table of ``side``
    entries: two taps (floor, floor + 1, clamped) and their fp32 weights."""
    src = index.float() * (side - 1) / torch.clamp(size - 1, min=1).float()
    floor = torch.floor(src)
    offsets = torch.arange(2, device=index.device)
    taps = (floor.long()[:, None] + offsets).clamp(0, side - 1)
    weights = (1 - (src[:, None] - floor[:, None] - offsets).abs()).clamp(min=0)
    return taps, weights


def position_embedding(table: torch.Tensor, rows, cols, heights, widths) -> torch.Tensor:
    """Bilinear resampling of the learned ``[side * side, Vh]`` grid at each patch: ``[N, Vh]`` fp32."""
    side = int(round(table.shape[0] ** 0.5))
    h_taps, h_w = _axis_taps(rows, heights, side)
    w_taps, w_w = _axis_taps(cols, widths, side)
    idx = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4)
    weight = (h_w[:, :, None] * w_w[:, None, :]).reshape(-1, 4)
    out = table[idx[:, 0]].float() * weight[:, :1]
    for k in range(1, 4):   # one tap at a time: [N, Vh] temporaries instead of [N, 4, Vh]
        out += table[idx[:, k]].float() * weight[:, k:k + 1]
    return out


def rotary_cos_sin(rows, cols, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """2D rotary angles, fp32 ``[N, head_dim]``: ``f = [row * inv, col * inv]`` (``inv`` of length head_dim / 4),
    duplicated for rotate-half pairs (d, d + head_dim / 2)."""
    half = head_dim // 2
    inv = 1.0 / (theta ** (torch.arange(0, half, 2, dtype=torch.float32, device=rows.device) / half))
    f = torch.cat([rows.float()[:, None] * inv, cols.float()[:, None] * inv], dim=-1)    # [N, head_dim / 2]
    emb = torch.cat([f, f], dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary in fp32 over the whole head: ``x * cos + rotate_half(x) * sin``; x ``[N, heads, D]``."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


def vision_cu_seqlens(grids, device) -> torch.Tensor:
    """int32 offsets of the attention blocks: one per image and per video temporal group."""
    lens = [h * w for t, h, w in grids for _ in range(t)]
    return torch.tensor([0] + lens, dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.cfg, self.backends = cfg, backends
        Vh, inter = cfg.hidden_size, cfg.intermediate_size
        for name in ("norm1", "norm2"):
            setattr(self, f"{name}_weight", _param(Vh, dtype=dtype, device=device))
            setattr(self, f"{name}_bias", _param(Vh, dtype=dtype, device=device))
        self.qkv_weight = _param(3 * Vh, Vh, dtype=dtype, device=device)             # rows q | k | v, head-major
        self.qkv_bias = _param(3 * Vh, dtype=dtype, device=device)
        self.proj_weight = _param(Vh, Vh, dtype=dtype, device=device)
        self.proj_bias = _param(Vh, dtype=dtype, device=device)
        self.fc1_weight = _param(inter, Vh, dtype=dtype, device=device)
        self.fc1_bias = _param(inter, dtype=dtype, device=device)
        self.fc2_weight = _param(Vh, inter, dtype=dtype, device=device)
        self.fc2_bias = _param(Vh, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        N, Vh = x.shape
        heads = self.cfg.num_heads
        h = F.layer_norm(x, (Vh,), self.norm1_weight, self.norm1_bias, LN_EPS)
        q, k, v = F.linear(h, self.qkv_weight, self.qkv_bias).view(N, 3, heads, -1).unbind(1)   # [N, heads, D]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        o = ops.varlen_attention(q.contiguous(), k.contiguous(), v.contiguous(), cu_seqlens,
                                 scale=self.cfg.head_dim ** -0.5, causal=False,
                                 backend=self.backends.get("varlen_attention"))                 # [N, heads, D]
        x = x + F.linear(o.reshape(N, Vh), self.proj_weight, self.proj_bias)
        h = F.layer_norm(x, (Vh,), self.norm2_weight, self.norm2_bias, LN_EPS)
        h = F.gelu(F.linear(h, self.fc1_weight, self.fc1_bias), approximate="tanh")
        return x + F.linear(h, self.fc2_weight, self.fc2_bias)


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device, backends: dict):
        super().__init__()
        self.cfg = cfg
        Vh, merged = cfg.hidden_size, cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.patch_weight = _param(Vh, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2,
                                   dtype=dtype, device=device)
        self.patch_bias = _param(Vh, dtype=dtype, device=device)
        self.pos_embed = _param(cfg.num_position_embeddings, Vh, dtype=dtype, device=device)
        self.blocks = nn.ModuleList(VisionBlock(cfg, dtype, device, backends) for _ in range(cfg.depth))
        self.merger_norm_weight = _param(Vh, dtype=dtype, device=device)
        self.merger_norm_bias = _param(Vh, dtype=dtype, device=device)
        self.merger_fc1_weight = _param(merged, merged, dtype=dtype, device=device)
        self.merger_fc1_bias = _param(merged, dtype=dtype, device=device)
        self.merger_fc2_weight = _param(cfg.out_hidden_size, merged, dtype=dtype, device=device)
        self.merger_fc2_bias = _param(cfg.out_hidden_size, dtype=dtype, device=device)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_weight.dtype

    def num_tokens(self, grid_thw) -> list[int]:
        """Merged tokens of each image / video (t * h * w / merge**2)."""
        m2 = self.cfg.spatial_merge_size ** 2
        return [int(t) * int(h) * int(w) // m2 for t, h, w in grid_thw.tolist()]

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """``[N, C*tp*p*p]`` pixel rows of the items in ``grid_thw [n, 3]`` -> ``[N / merge**2, out_hidden]``."""
        cfg = self.cfg
        grids = check_grid(grid_thw, pixel_values, cfg)
        dev = self.patch_weight.device
        x = F.linear(pixel_values.to(device=dev, dtype=self.dtype), self.patch_weight, self.patch_bias)  # [N, Vh]
        rows, cols, hs, ws = patch_coords(grids, cfg.spatial_merge_size, dev)
        x = x + position_embedding(self.pos_embed, rows, cols, hs, ws).to(x.dtype)
        cos, sin = rotary_cos_sin(rows, cols, cfg.head_dim, cfg.rope_theta)
        cu = vision_cu_seqlens(grids, dev)
        for block in self.blocks:
            x = block(x, cos, sin, cu)
        x = F.layer_norm(x, (cfg.hidden_size,), self.merger_norm_weight, self.merger_norm_bias, LN_EPS)
        x = x.view(-1, cfg.hidden_size * cfg.spatial_merge_size ** 2)                            # 2x2 blocks
        x = F.gelu(F.linear(x, self.merger_fc1_weight, self.merger_fc1_bias))                     # exact GELU
        return F.linear(x, self.merger_fc2_weight, self.merger_fc2_bias)
