"""Detection losses as pure functions: sigmoid focal, 1-D DIoU / GIoU, LoCo's LCF, and their sum.

`detection_loss` works for any detector's `DetectorOutput`: it assigns targets (models.targets), takes the
focal loss over every valid (point, class) slot and the IoU loss over positive slots, both divided by an EMA
of the positive-point count (UnAV reference). A model that puts `aux["lcf"]` in its training output
(LoCo) adds `lcf_weight * LCF`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from avdet.models.base import DetectorOutput
from avdet.models.loss_config import LossConfig
from avdet.models.targets import assign_batch, default_regression_ranges, make_points


class PositiveNormaliser:
    """EMA of the number of positive points per batch (init 250, momentum 0.9), the loss divisor.

    Small batches have few positives, so a running value keeps the loss scale steady. Its state is saved in
    checkpoints so a resumed run continues with the same divisor.
    """

    def __init__(self, init: float = 250.0, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), not {momentum}")
        self.value = float(init)
        self.momentum = float(momentum)

    def update(self, num_pos: float) -> float:
        """Fold in this batch's positive count (at least 1) and return the new divisor."""
        self.value = self.momentum * self.value + (1.0 - self.momentum) * max(float(num_pos), 1.0)
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.momentum = float(state.get("momentum", self.momentum))


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: Literal["none", "sum", "mean"] = "none",
) -> Tensor:
    """RetinaNet focal loss on independent sigmoids; `targets` in [0, 1], same shape as `logits`."""
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def _iou_terms(pred: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """IoU, enclosing length, union and centre gap of segments as (left, right) distances from a point."""
    lp, rp = pred.float().unbind(dim=-1)
    lg, rg = target.float().unbind(dim=-1)
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = (lp + rp) + (lg + rg) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    centre_gap = 0.5 * ((rp - lp) - (rg - lg))
    return iou, enclosing, union, centre_gap


def diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """1 - IoU + (centre distance / enclosing length)^2 per segment; (..., 2) offsets >= 0 -> (...)."""
    iou, enclosing, _, gap = _iou_terms(pred, target, eps)
    return 1.0 - iou + torch.square(gap / enclosing.clamp(min=eps))


def giou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """1 - GIoU per segment. Both segments contain their shared anchor point, so the enclosing segment equals
    the union and this is 1 - IoU (kept in its general form for clarity)."""
    iou, enclosing, union, _ = _iou_terms(pred, target, eps)
    return 1.0 - iou + (enclosing - union) / enclosing.clamp(min=eps)


def soft_cross_entropy(logits: Tensor, targets: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean over rows of -sum_j t_ij log softmax(logits)_ij, with each target row normalised to sum 1."""
    weights = targets / targets.sum(dim=-1, keepdim=True).clamp(min=eps)
    return -(weights * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def target_entropy(targets: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean over rows of the entropy of each target row normalised to sum 1."""
    weights = targets / targets.sum(dim=-1, keepdim=True).clamp(min=eps)
    return -(weights * torch.log(weights.clamp(min=eps))).sum(dim=-1).mean()


def lcf_loss(visual: Tensor, audio: Tensor, scale: Tensor, targets: Tensor) -> Tensor:
    """LoCo's LCF loss: soft-target contrastive loss in both directions, averaged.

    visual, audio: (N, d) L2-normalised embeddings of the N valid segments of a batch.
    scale:         scalar 1 / temperature.
    targets:       (N, N) correspondence weights w_ij (row i: visual segment i, column j: audio segment j).

    The value is the paper's cross-entropy. A learnable target (adaptive sigma) gets the gradient of the KL
    divergence instead (cross-entropy minus the target's own entropy, whose value is kept): the cross-entropy
    alone always rewards a sharper target, so sigma could only shrink to its floor, never fit the similarities.
    The embeddings' and the temperature's gradients are the same either way.
    """
    logits = scale * (visual.float() @ audio.float().T)  # (N, N)
    v2a = soft_cross_entropy(logits, targets)
    a2v = soft_cross_entropy(logits.T, targets.T)
    if not targets.requires_grad:
        return 0.5 * (v2a + a2v)
    entropy = 0.5 * (target_entropy(targets) + target_entropy(targets.T))
    return 0.5 * (v2a + a2v) - entropy + entropy.detach()


def detection_loss(
    out: DetectorOutput,
    gt_segments: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    num_classes: int,
    normaliser: PositiveNormaliser,
    cfg: LossConfig,
) -> dict[str, Tensor]:
    """Losses of one batch: "cls", "reg", "lcf" (when the output carries it) and "total".

    gt_segments[b]: (N_b, 2) events of video b in grid units; gt_labels[b]: (N_b,) class ids.
    """
    if len(gt_segments) != out.cls_logits[0].shape[0]:
        raise ValueError(f"{len(gt_segments)} target lists for a batch of {out.cls_logits[0].shape[0]}")
    device = out.cls_logits[0].device
    ranges = cfg.regression_ranges or default_regression_ranges(len(out.strides))
    if len(ranges) != len(out.strides):
        raise ValueError(f"{len(ranges)} regression ranges for a model with {len(out.strides)} levels")
    points = make_points([x.shape[1] for x in out.cls_logits], out.strides, ranges, device)
    cls_targets, reg_targets = assign_batch(points, gt_segments, gt_labels, num_classes)  # (B,P,C), (B,P,C,2)

    valid = torch.cat(out.masks, dim=1)  # (B, P)
    logits = torch.cat(out.cls_logits, dim=1)  # (B, P, C)
    offsets = torch.cat(out.offsets, dim=1)  # (B, P, C, 2)
    positive = (cls_targets.sum(dim=-1) > 0) & valid  # (B, P)
    norm = normaliser.update(int(positive.sum()))

    target = cls_targets[valid]  # (V, C)
    if cfg.label_smoothing > 0:
        target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / (num_classes + 1)
    cls = sigmoid_focal_loss(logits[valid], target, cfg.focal_alpha, cfg.focal_gamma, "sum") / norm

    slots = (cls_targets > 0) & valid[..., None]  # (B, P, C): positive (point, class) pairs
    if slots.any():
        reg_fn = diou_loss_1d if cfg.reg_loss == "diou" else giou_loss_1d
        reg = reg_fn(offsets[slots], reg_targets[slots]).sum() / norm
    else:
        reg = 0.0 * offsets.float().sum()  # keeps the graph (and DDP) happy on a batch without events

    losses = {"cls": cls, "reg": reg}
    total = cls + cfg.reg_weight * reg
    lcf = out.aux.get("lcf")
    if lcf is not None:
        # "weight" 0: LCF not switched on yet (LoCo's lcf_start_epoch); the term stays in the graph at zero
        losses["lcf"] = lcf.get("weight", 1.0) * lcf_loss(lcf["visual"], lcf["audio"], lcf["scale"], lcf["targets"])
        total = total + cfg.lcf_weight * losses["lcf"]
    losses["total"] = total
    return losses
