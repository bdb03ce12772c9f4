"""Building blocks shared by the detectors (UnAV / ActionFormer semantics), channel-last.

Every tensor at a module boundary is (B, T, C); masks are bool (B, T), True = valid.

Padding semantics follow the UnAV reference exactly, because its released checkpoints depend on them:
a block masks its *outputs* (padded steps come out as zero) but reads its inputs as given, so the k=3 convolutions
of a valid step next to the padding see what the padded steps hold (zero, or whatever the previous layer put there,
e.g. ReLU(LayerNorm bias) after a conv + norm + ReLU). Given the same padded content (zeros at the model input),
the output on valid steps is the same whatever the amount of padding (>= 1 step).

Strided modules (stride > 1) return only the features; their mask is `downsample_mask(mask, stride)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def downsample_mask(mask: Tensor, stride: int) -> Tensor:
    """(B, T) -> (B, T // stride): the reference's nearest-neighbour mask downsampling (keeps every stride-th step)."""
    if stride == 1:
        return mask
    if mask.shape[-1] % stride:
        raise ValueError(f"sequence length {mask.shape[-1]} is not divisible by stride {stride}")
    return mask[..., ::stride]


def sinusoid_encoding(n_position: int, dim: int) -> Tensor:
    """(n_position, dim) float32 table: sin on even channels, cos on odd ones, periods 10000^(2i/dim)."""
    position = torch.arange(n_position, dtype=torch.float64)[:, None]  # (P, 1)
    channel = torch.arange(dim, dtype=torch.float64)
    inv_freq = torch.pow(10000.0, 2.0 * torch.div(channel, 2, rounding_mode="floor") / dim)  # (D,)
    angles = position / inv_freq  # (P, D)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class MaskedConv1d(nn.Module):
    """1-D convolution over time ("same" padding, odd kernel) whose output is zero on padded steps.

    forward(x (B, T, C_in), mask (B, T)) -> (B, T // stride, C_out). With stride > 1 the output mask is
    `downsample_mask(mask, stride)`. The bias (if any) starts at zero, as in the reference.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.stride = stride
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out_mask = downsample_mask(mask, self.stride)
        out = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, T', C_out)
        return out * out_mask[..., None].to(out.dtype)


class LayerNorm(nn.Module):
    """LayerNorm over channels (the last axis) with affine weight/bias; eps 1e-5 as UnAV's."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level in the regression head)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init_value, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class ConvStack(nn.Module):
    """num_convs x [masked conv (in_dim -> dim, then dim -> dim) -> LayerNorm (or identity) -> ReLU]: UnAV's
    embedding projections and the towers of its heads. With no convs it passes its input through."""

    def __init__(self, in_dim: int, dim: int, num_convs: int, kernel_size: int = 3, with_ln: bool = True) -> None:
        super().__init__()
        dims = [in_dim] + [dim] * num_convs
        self.convs = nn.ModuleList(
            MaskedConv1d(dims[i], dims[i + 1], kernel_size, bias=not with_ln) for i in range(num_convs)
        )
        self.norms = nn.ModuleList(LayerNorm(dims[i + 1]) if with_ln else nn.Identity() for i in range(num_convs))
        self.out_dim = dims[-1]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return conv_stack(x, mask, self.convs, self.norms)


def conv_stack(x: Tensor, mask: Tensor, convs: nn.ModuleList, norms: nn.ModuleList) -> Tensor:
    """`ConvStack`'s forward over convs and norms held elsewhere (CCNet keeps them in two lists)."""
    for conv, norm in zip(convs, norms, strict=True):
        x = F.relu(norm(conv(x, mask)))
    return x


def drop_path(x: Tensor, prob: float, training: bool) -> Tensor:
    """Stochastic depth: while training, zero whole samples with probability `prob` and rescale the rest."""
    if prob == 0.0 or not training:
        return x
    keep = 1.0 - prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    sample_mask = (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
    return x / keep * sample_mask


class AffineDropPath(nn.Module):
    """Per-channel scale (LayerScale, init 1e-4) followed by stochastic depth, as in UnAV/ActionFormer."""

    def __init__(self, dim: int, prob: float, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.prob = prob
        self.scale = nn.Parameter(torch.full((dim,), init_scale))

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x * self.scale, self.prob, self.training)


class MaskedAttention(nn.Module):
    """Multi-head attention with depthwise k=3 convs (+ LayerNorm) on query, key and value (UnAV's MaskedMHCA).

    Keys/values come from `x`, queries from `query`; both (B, T, D) on the same time grid. With stride 2 the convs
    downsample and the output has T // 2 steps. Padded keys are excluded; padded outputs are zero.
    """

    def __init__(self, dim: int, num_heads: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        if stride != 1 and stride % 2:
            raise ValueError(f"stride must be 1 or even, got {stride}")
        self.num_heads = num_heads
        self.stride = stride
        kernel = stride + 1 if stride > 1 else 3
        self.query_conv = MaskedConv1d(dim, dim, kernel, stride=stride, bias=False, groups=dim)
        self.key_conv = MaskedConv1d(dim, dim, kernel, stride=stride, bias=False, groups=dim)
        self.value_conv = MaskedConv1d(dim, dim, kernel, stride=stride, bias=False, groups=dim)
        self.query_norm = LayerNorm(dim)
        self.key_norm = LayerNorm(dim)
        self.value_norm = LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.reshape(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)  # (B, h, T, d)

    def forward(self, x: Tensor, query: Tensor, mask: Tensor) -> Tensor:
        out_mask = downsample_mask(mask, self.stride)  # (B, T')
        q = self._split(self.query(self.query_norm(self.query_conv(query, mask))))  # (B, h, T', d)
        k = self._split(self.key(self.key_norm(self.key_conv(x, mask))))  # (B, h, T', d)
        v = self._split(self.value(self.value_norm(self.value_conv(x, mask))))  # (B, h, T', d)
        scale = 1.0 / math.sqrt(q.shape[-1])
        att = (q * scale) @ k.transpose(-2, -1)  # (B, h, T'q, T'k)
        # a finite fill: a sequence with no valid key gets uniform weights on zeroed values instead of NaN
        att = att.masked_fill(~out_mask[:, None, None, :], torch.finfo(att.dtype).min).softmax(dim=-1)
        out = att @ (v * out_mask[:, None, :, None].to(v.dtype))  # (B, h, T', d)
        out = out.transpose(1, 2).flatten(2)  # (B, T', D)
        return self.proj_drop(self.proj(out)) * out_mask[..., None].to(out.dtype)


class TransformerBlock(nn.Module):
    """Pre-LN transformer block of UnAV/ActionFormer: masked conv-attention + MLP, with optional downsampling.

    forward(x (B, T, D), mask (B, T), query=None) -> (B, T // stride, D), zero on padded steps.
    Keys, values and the residual come from `x`; queries from `query` (default `x`: self-attention). This is the
    reference's cross-modal form (UnAV's `TransformerBlock(x1, x2)`: x1 = key/value/residual, x2 = query).
    With stride 2 the residual is max-pooled (k3, s2) and the output mask is `downsample_mask(mask, 2)`.
    drop_path > 0 adds UnAV's per-channel LayerScale (init 1e-4) on both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        stride: int = 1,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.stride = stride
        hidden = hidden_dim or 4 * dim
        self.norm_kv = LayerNorm(dim)
        self.norm_q = LayerNorm(dim)
        self.norm_mlp = LayerNorm(dim)
        self.attn = MaskedAttention(dim, num_heads, stride=stride, dropout=dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )
        self.drop_path_attn = AffineDropPath(dim, drop_path) if drop_path > 0 else nn.Identity()
        self.drop_path_mlp = AffineDropPath(dim, drop_path) if drop_path > 0 else nn.Identity()
        for module in self.modules():  # the reference zeroes every linear/conv bias of its backbone
            if isinstance(module, nn.Linear | nn.Conv1d) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _skip(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x
        pooled = F.max_pool1d(x.transpose(1, 2), self.stride + 1, self.stride, (self.stride + 1) // 2)
        return pooled.transpose(1, 2)  # (B, T // stride, D)

    def forward(self, x: Tensor, mask: Tensor, query: Tensor | None = None) -> Tensor:
        query = x if query is None else query
        keep = downsample_mask(mask, self.stride)[..., None].to(x.dtype)  # (B, T', 1)
        out = self.attn(self.norm_kv(x), self.norm_q(query), mask)
        out = self._skip(x) * keep + self.drop_path_attn(out)
        return out + self.drop_path_mlp(self.mlp(self.norm_mlp(out)) * keep)


class SelfAttentionPyramid(nn.Module):
    """Level 0 is the input; each further level a stride-2 self-attention block on the previous one (UnAV's
    pyramid with the cross-modal queries taken from the stream itself): the pyramid of unimodal detectors."""

    def __init__(self, dim: int, num_heads: int, num_levels: int, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, dropout=dropout, drop_path=drop_path, stride=2)
            for _ in range(num_levels - 1)
        )

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x (B, T, D), mask (B, T) -> per level (B, T_l, D) and (B, T_l) masks."""
        feats, masks = [x], [mask]
        for block in self.blocks:
            feats.append(block(feats[-1], masks[-1]))
            masks.append(downsample_mask(masks[-1], 2))
        return feats, masks
