"""LoCo's Local Adaptive Cross-modal interaction (LAC) and the cross-modal pyramid built from it.

One modality gives the queries, the other the keys and values (both directions, separate weights). Time is cut
into non-overlapping base windows of W steps. Three attention strategies (the paper's ablation):

- "global":   every query attends to every valid key (UnAV-style dense cross-attention);
- "fixed":    queries of window w attend to the keys of windows w-1, w, w+1 (cross-modal sliding windows);
- "adaptive": Window Adaptation (masked average pool per window -> LeakyReLU -> 1x1 conv, zero-initialised)
  predicts per head a scale s and an offset o for every window. Head m of window w samples W key/value
  points uniformly inside its target window (centre shifted by o * W, length W * exp(s)) by linear
  interpolation, and the queries of window w attend to the samples of windows w-1, w, w+1. With s = o = 0 the
  samples fall exactly on the base window's steps, so training starts from "fixed".

A sample is valid only when the steps it interpolates between are valid and its window holds a valid step, so
outputs on valid steps never depend on how much padding follows.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionType = Literal["adaptive", "fixed", "global"]
ATTENTION_TYPES: tuple[str, ...] = ("adaptive", "fixed", "global")

MAX_LOG_SCALE = 4.0  # target windows stay within [W / e^4, W * e^4] steps


def masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    """Softmax over the last dim restricted to `valid` keys; a row without any valid key gives zeros."""
    scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * valid.to(scores.dtype)


def window_positions(scale: Tensor, offset: Tensor, window: int) -> Tensor:
    """Sampling positions (in steps) of every target window: (B, h, nW) scale/offset -> (B, h, nW, W).

    Base window w covers steps [w W, (w + 1) W). Its target window is centred at w W + (W - 1) / 2 + o W and
    is W exp(s) long; the W samples sit at the centres of W equal parts of it.
    """
    scale, offset = scale.float(), offset.float()  # positions need float32 precision (not bf16 under autocast)
    num_windows = scale.shape[-1]
    base = torch.arange(num_windows, device=scale.device, dtype=scale.dtype) * window + (window - 1) / 2
    centre = base + offset * window  # (B, h, nW)
    step = torch.exp(scale.clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE))  # (B, h, nW) distance between samples
    k = torch.arange(window, device=scale.device, dtype=scale.dtype) + 0.5 - window / 2  # (W,)
    return centre[..., None] + k * step[..., None]  # (B, h, nW, W)


def sample_linear(x: Tensor, valid: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """Linearly interpolate `x` (B, h, T, d) at fractional steps `pos` (B, h, S).

    `valid` (B, T) marks usable steps. A sample is valid when every step it draws weight from is valid (a
    position exactly on a step needs only that step). Returns values (B, h, S, d) and validity (B, h, S).
    """
    batch, heads, length, dim = x.shape
    lo = torch.floor(pos)
    frac = pos - lo  # (B, h, S), carries the gradient to the positions
    lo = lo.long()
    hi = lo + 1
    step_ok = valid[:, None, :].expand(batch, heads, length)  # (B, h, T)

    def take(idx: Tensor) -> tuple[Tensor, Tensor]:
        inside = (idx >= 0) & (idx < length)
        safe = idx.clamp(0, length - 1)
        ok = inside & step_ok.gather(2, safe)
        vals = x.gather(2, safe[..., None].expand(-1, -1, -1, dim))  # (B, h, S, d)
        return vals * ok[..., None].to(x.dtype), ok

    v_lo, ok_lo = take(lo)
    v_hi, ok_hi = take(hi)
    frac_x = frac[..., None].float()
    values = (v_lo.float() * (1 - frac_x) + v_hi.float() * frac_x).to(x.dtype)
    ok = ok_lo & (ok_hi | (frac == 0))
    return values * ok[..., None].to(x.dtype), ok


def with_neighbours(x: Tensor) -> Tensor:
    """Concatenate windows w-1, w, w+1 along the in-window axis: (B, h, nW, W, ...) -> (B, h, nW, 3W, ...).

    Missing neighbours at both ends are zero-filled (callers pass validity through the same function, so those
    slots are also invalid).
    """
    # F.pad lists dims from the last one backwards: leave dims 3.. alone, pad the window axis (dim 2) by one
    padded = F.pad(x, [0, 0] * (x.dim() - 3) + [1, 1])
    return torch.cat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], dim=3)


class WindowAdaptation(nn.Module):
    """Per window and head a log-scale and an offset from the masked mean of the window's query features."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.act = nn.LeakyReLU()
        self.proj = nn.Linear(dim, 2 * num_heads)  # a 1x1 conv over windows
        nn.init.zeros_(self.proj.weight)  # zero init: training starts from the base windows
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, D) with T a multiple of W, mask (B, T) -> scale, offset, each (B, h, nW)."""
        batch, length, dim = x.shape
        nw = length // self.window
        xw = x.reshape(batch, nw, self.window, dim)  # (B, nW, W, D)
        mw = mask.reshape(batch, nw, self.window, 1).to(x.dtype)  # (B, nW, W, 1)
        pooled = (xw * mw).sum(dim=2) / mw.sum(dim=2).clamp(min=1.0)  # (B, nW, D)
        out = self.proj(self.act(pooled))  # (B, nW, 2h)
        out = out.reshape(batch, nw, 2, self.num_heads).permute(2, 0, 3, 1)  # (2, B, h, nW)
        return out[0], out[1]


class CrossModalAttention(nn.Module):
    """Multi-head attention of `query` steps over `context` steps with a global, fixed or adaptive scope."""

    def __init__(
        self, dim: int, num_heads: int, window: int = 8, attention: str = "adaptive", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"unknown attention {attention!r} (one of {', '.join(ATTENTION_TYPES)})")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        if window < 1:
            raise ValueError(f"window size must be >= 1, not {window}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.attention = attention
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.adapt = WindowAdaptation(dim, num_heads, window) if attention == "adaptive" else None

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)

    def forward(self, query: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """query, context: (B, T, D) (already normalised); mask (B, T) bool -> (B, T, D), zero on padding."""
        batch, length, dim = query.shape
        if self.attention == "global":
            out = self._global(query, context, mask)
        else:
            pad = (-length) % self.window  # whole windows; the extra steps are masked
            q_in, kv_in = F.pad(query, (0, 0, 0, pad)), F.pad(context, (0, 0, 0, pad))
            m = F.pad(mask, (0, pad), value=False)
            out = self._windowed(q_in, kv_in, m)[:, :length]
        return self.out(out) * mask[..., None].to(out.dtype)

    def _global(self, query: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self._heads(self.q(query)), self._heads(self.k(context)), self._heads(self.v(context))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, T, T)
        attn = self.attn_drop(masked_softmax(scores, mask[:, None, None, :]))
        out = attn @ v  # (B, h, T, d)
        return out.transpose(1, 2).reshape(query.shape)  # (B, T, D)

    def _windowed(self, query: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """Sliding-window attention over base windows (fixed) or sampled target windows (adaptive)."""
        batch, length, dim = query.shape
        nw, w, h = length // self.window, self.window, self.num_heads
        q, k, v = self._heads(self.q(query)), self._heads(self.k(context)), self._heads(self.v(context))
        # a window without any valid step contributes nothing (its samples could otherwise reach valid steps)
        window_ok = mask.reshape(batch, nw, w).any(dim=-1)  # (B, nW)
        if self.adapt is None:
            keys = k.reshape(batch, h, nw, w, self.head_dim)  # (B, h, nW, W, d)
            values = v.reshape(batch, h, nw, w, self.head_dim)  # (B, h, nW, W, d)
            ok = mask.reshape(batch, 1, nw, w).expand(batch, h, nw, w)  # (B, h, nW, W)
        else:
            scale, offset = self.adapt(query, mask)  # (B, h, nW) each
            pos = window_positions(scale, offset, w).reshape(batch, h, nw * w)  # (B, h, nW*W)
            keys, ok = sample_linear(k, mask, pos)  # (B, h, nW*W, d), (B, h, nW*W)
            values, _ = sample_linear(v, mask, pos)
            keys = keys.reshape(batch, h, nw, w, self.head_dim)  # (B, h, nW, W, d)
            values = values.reshape(batch, h, nw, w, self.head_dim)  # (B, h, nW, W, d)
            ok = ok.reshape(batch, h, nw, w)  # (B, h, nW, W)
        ok = ok & window_ok[:, None, :, None]
        keys, values = with_neighbours(keys), with_neighbours(values)  # (B, h, nW, 3W, d)
        ok = with_neighbours(ok[..., None].float())[..., 0] > 0  # (B, h, nW, 3W)

        qw = q.reshape(batch, h, nw, w, self.head_dim)  # (B, h, nW, W, d)
        scores = qw @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, nW, W, 3W)
        attn = self.attn_drop(masked_softmax(scores, ok[:, :, :, None, :]))
        out = attn @ values  # (B, h, nW, W, d)
        return out.reshape(batch, h, length, self.head_dim).transpose(1, 2).reshape(batch, length, dim)  # (B,T,D)


class LACBlock(nn.Module):
    """Pre-LN cross-modal block: x = q + Attn(LN(q), LN(kv)); x = x + FFN(LN(x)); zero on padding."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int = 8,
        attention: str = "adaptive",
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossModalAttention(dim, num_heads, window, attention, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_ratio * dim, dim),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, query: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """query (B, T, D) attends to context (B, T, D); mask (B, T) -> (B, T, D)."""
        keep = mask[..., None].to(query.dtype)
        x = query + self.drop(self.attn(self.norm_q(query), self.norm_kv(context), mask))
        x = x + self.drop(self.ffn(self.norm_ffn(x))) * keep
        return x * keep


class Downsample(nn.Module):
    """Stride-2 depthwise conv (k3) between pyramid levels; the mask keeps every other step (nearest)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, stride=2, padding=1, groups=dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, D), mask (B, T) with T even -> (B, T/2, D), (B, T/2)."""
        if x.shape[1] % 2:
            raise ValueError(f"cannot halve a sequence of odd length {x.shape[1]}")
        out_mask = mask[:, ::2]
        x = x * mask[..., None].to(x.dtype)  # padding must read as zeros
        out = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, D, T) -> (B, D, T/2) -> (B, T/2, D)
        return out * out_mask[..., None].to(out.dtype), out_mask


class LACPyramid(nn.Module):
    """The adaptive cross-modal interaction pyramid: level 0 at full rate, each next level halved.

    At every level both streams are downsampled (except level 0), then audio queries attend to visual keys and
    visual queries to audio keys, each with its own LAC block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_levels: int = 6,
        window: int = 8,
        attention: str = "adaptive",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.down_audio = nn.ModuleList(Downsample(dim) for _ in range(num_levels - 1))
        self.down_visual = nn.ModuleList(Downsample(dim) for _ in range(num_levels - 1))
        block = lambda: LACBlock(dim, num_heads, window, attention, dropout=dropout)
        self.audio_blocks = nn.ModuleList(block() for _ in range(num_levels))  # audio queries visual
        self.visual_blocks = nn.ModuleList(block() for _ in range(num_levels))  # visual queries audio

    @property
    def strides(self) -> list[int]:
        return [2**level for level in range(self.num_levels)]

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """audio, visual (B, T, D), mask (B, T) -> per level audio, visual (B, T_l, D) and mask (B, T_l)."""
        audios, visuals, masks = [], [], []
        a, v, m = audio, visual, mask
        for level in range(self.num_levels):
            if level > 0:
                a, m_next = self.down_audio[level - 1](a, m)
                v, _ = self.down_visual[level - 1](v, m)
                m = m_next
            a, v = self.audio_blocks[level](a, v, m), self.visual_blocks[level](v, a, m)
            audios.append(a)
            visuals.append(v)
            masks.append(m)
        return audios, visuals, masks
