"""UnAV's detection heads (PtTransformerClsHead / class-aware PtTransformerRegHead), channel-last, used by LoCo,
UnAV and CCNet (built from their config by `detection_heads`).

Both heads are shared across pyramid levels: (num_layers - 1) masked convs + LayerNorm + ReLU, then a masked conv
predictor. Inputs are lists over levels of (B, T_l, D) features with (B, T_l) bool masks.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from avdet.models.blocks import ConvStack, MaskedConv1d, Scale
from avdet.models.pyramid import PyramidConfig


def _tower(in_dim: int, head_dim: int, num_layers: int, kernel_size: int, with_ln: bool) -> ConvStack:
    """The (num_layers - 1) conv + norm + ReLU layers before a head's predictor."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return ConvStack(in_dim, head_dim, num_layers - 1, kernel_size, with_ln)


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
        self.tower = _tower(in_dim, head_dim, num_layers, kernel_size, with_ln)
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
        self.tower = _tower(in_dim, head_dim, num_layers, kernel_size, with_ln)
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


def detection_heads(
    in_dim: int, cfg: PyramidConfig, num_classes: int, regression: bool = True
) -> tuple[ClassificationHead, RegressionHead | None]:
    """A detector's classification head over `num_classes` labels and, unless `regression` is off (segment
    models), its regression head; sizes from the config's head fields. Assign them to `cls_head` and `reg_head`:
    the state-dict names (and the reference key maps) depend on it."""
    cls_head = ClassificationHead(
        in_dim,
        cfg.head_dim,
        num_classes,
        num_layers=cfg.head_layers,
        prior_prob=cfg.head_prior_prob,
        kernel_size=cfg.head_kernel,
        with_ln=cfg.head_with_ln,
    )
    if not regression:
        return cls_head, None
    reg_head = RegressionHead(
        in_dim,
        cfg.head_dim,
        num_classes,
        cfg.num_levels,
        num_layers=cfg.head_layers,
        kernel_size=cfg.head_kernel,
        with_ln=cfg.head_with_ln,
        class_aware=cfg.class_aware,
    )
    return cls_head, reg_head
