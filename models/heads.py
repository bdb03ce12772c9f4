"""UnAV's detection heads (PtTransformerClsHead / class-aware PtTransformerRegHead), channel-last.

Both heads are shared across pyramid levels: (num_layers - 1) masked convs + LayerNorm + ReLU, then a masked conv
predictor. Inputs are lists over levels of (B, T_l, D) features with (B, T_l) bool masks.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from avdet.models.blocks import LayerNorm, MaskedConv1d, Scale


class _ConvTower(nn.Module):
    """(num_layers - 1) x [masked conv -> LayerNorm (or identity) -> ReLU]."""

    def __init__(self, in_dim: int, head_dim: int, num_layers: int, kernel_size: int, with_ln: bool) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [head_dim] * (num_layers - 1)
        self.convs = nn.ModuleList(
            MaskedConv1d(dims[i], dims[i + 1], kernel_size, bias=not with_ln) for i in range(num_layers - 1)
        )
        self.norms = nn.ModuleList(LayerNorm(dims[i + 1]) if with_ln else nn.Identity() for i in range(num_layers - 1))
        self.out_dim = dims[-1]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x, mask)))
        return x


class ClassificationHead(nn.Module):
    """Per-level class logits (B, T_l, C), pre-sigmoid; the classifier bias starts at the focal prior."""

    def __init__(
        self,
        in_dim: int,
        head_dim: int,
        num_classes: int,
        num_layers: int = 3,
        prior_prob: float = 0.01,
        kernel_size: int = 3,
        with_ln: bool = True,
        empty_classes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.tower = _ConvTower(in_dim, head_dim, num_layers, kernel_size, with_ln)
        self.classifier = MaskedConv1d(self.tower.out_dim, num_classes, kernel_size)
        nn.init.constant_(self.classifier.conv.bias, -math.log((1 - prior_prob) / prior_prob))
        # classes without training examples: a very negative bias keeps them silent (reference behaviour)
        for idx in empty_classes:
            nn.init.constant_(self.classifier.conv.bias[idx], -math.log((1 - 1e-6) / 1e-6))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        if len(feats) != len(masks):
            raise ValueError(f"{len(feats)} feature levels but {len(masks)} masks")
        return [self.classifier(self.tower(x, mask), mask) for x, mask in zip(feats, masks, strict=True)]


class RegressionHead(nn.Module):
    """Per-level (left, right) offsets (B, T_l, C, 2) >= 0 in units of the level stride.

    Class-aware (default): one offset pair per class; class-agnostic: (B, T_l, 1, 2), which broadcasts over classes.
    Each level has its own learnable Scale before the final ReLU.
    """

    def __init__(
        self,
        in_dim: int,
        head_dim: int,
        num_classes: int,
        num_levels: int,
        num_layers: int = 3,
        kernel_size: int = 3,
        with_ln: bool = True,
        class_aware: bool = True,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.num_outputs = num_classes if class_aware else 1
        self.tower = _ConvTower(in_dim, head_dim, num_layers, kernel_size, with_ln)
        self.scales = nn.ModuleList(Scale() for _ in range(num_levels))
        self.regressor = MaskedConv1d(self.tower.out_dim, 2 * self.num_outputs, kernel_size)

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        if len(feats) != self.num_levels or len(masks) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels, got {len(feats)} features and {len(masks)} masks")
        out = []
        for scale, x, mask in zip(self.scales, feats, masks, strict=True):
            offsets = F.relu(scale(self.regressor(self.tower(x, mask), mask)))  # (B, T_l, 2K)
            out.append(offsets.unflatten(-1, (self.num_outputs, 2)))  # (B, T_l, K, 2)
        return out
