"""Point-to-event assignment for the dense task (class-aware, as in the UnAV reference). Grid units only.

Every pyramid point sits at grid `i * stride`. A point is positive for an event when it lies strictly inside
the event and the larger of its two boundary distances falls inside its level's regression range (both ends
inclusive). There is no centre sampling and no "shortest event wins": each class is assigned separately, so a
point can be positive for several overlapping events of different classes. When several events of the *same*
class qualify at one point, the one listed last in the annotations gives the regression target (the
reference's indexed write keeps the last value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Regression ranges of the six UnAV levels (strides 1 .. 32), in grid units of the larger boundary distance.
UNAV_REGRESSION_RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 4.0),
    (4.0, 8.0),
    (8.0, 16.0),
    (16.0, 32.0),
    (32.0, 64.0),
    (64.0, math.inf),
)


def default_regression_ranges(num_levels: int) -> tuple[tuple[float, float], ...]:
    """The UnAV ranges for `num_levels` levels; the top level always reaches infinity."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, not {num_levels}")
    if num_levels > len(UNAV_REGRESSION_RANGES):
        raise ValueError(f"no default regression ranges for {num_levels} levels: set them explicitly")
    ranges = list(UNAV_REGRESSION_RANGES[:num_levels])
    ranges[-1] = (ranges[-1][0], math.inf)
    return tuple(ranges)


def make_points(
    num_points_per_level: Sequence[int],
    strides: Sequence[int],
    regression_ranges: Sequence[tuple[float, float]],
    device: torch.device | str | None = None,
) -> Tensor:
    """All pyramid points, level by level: (P, 4) float32 rows (grid position, range low, high, stride)."""
    if not len(num_points_per_level) == len(strides) == len(regression_ranges):
        raise ValueError(
            f"{len(num_points_per_level)} levels of points, {len(strides)} strides and "
            f"{len(regression_ranges)} regression ranges disagree"
        )
    levels = []
    for n, stride, (low, high) in zip(num_points_per_level, strides, regression_ranges, strict=True):
        pos = torch.arange(n, dtype=torch.float32, device=device) * stride
        fixed = torch.tensor([low, high, float(stride)], dtype=torch.float32, device=device)
        levels.append(torch.cat([pos[:, None], fixed.expand(n, 3)], dim=1))  # (n, 4)
    return torch.cat(levels, dim=0)


def assign_targets(points: Tensor, gt_segments: Tensor, gt_labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Class-aware targets of one video.

    points:      (P, 4) from `make_points`.
    gt_segments: (N, 2) event (start, end) in grid units.
    gt_labels:   (N,) class ids in [0, num_classes).
    Returns cls_targets (P, C) in {0, 1} and reg_targets (P, C, 2): (left, right) distances in units of the
    point's stride on positive (point, class) slots, 0 elsewhere.
    """
    num_points = points.shape[0]
    cls_targets = points.new_zeros(num_points, num_classes)
    reg_targets = points.new_zeros(num_points, num_classes, 2)
    if gt_segments.numel() == 0:
        return cls_targets, reg_targets
    segs = gt_segments.to(points)
    labels = gt_labels.to(device=points.device, dtype=torch.long)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"event labels must lie in [0, {num_classes}), got {labels.tolist()}")

    pos, low, high, stride = points.unbind(dim=1)  # each (P,)
    left = pos[:, None] - segs[None, :, 0]  # (P, N)
    right = segs[None, :, 1] - pos[:, None]  # (P, N)
    dist = torch.stack((left, right), dim=-1)  # (P, N, 2)
    inside = dist.min(dim=-1).values > 0
    reach = dist.max(dim=-1).values
    in_range = (reach >= low[:, None]) & (reach <= high[:, None])
    positive = inside & in_range  # (P, N)

    # For each (point, class) the highest event index among the positives of that class, -1 when none.
    event_idx = torch.arange(segs.shape[0], device=points.device).expand(num_points, -1)  # (P, N)
    ranked = torch.where(positive, event_idx, torch.full_like(event_idx, -1))
    chosen = torch.full((num_points, num_classes), -1, dtype=torch.long, device=points.device)
    chosen = chosen.scatter_reduce(1, labels.expand(num_points, -1), ranked, reduce="amax")  # (P, C)

    has_event = chosen >= 0
    cls_targets[has_event] = 1.0
    picked = dist.gather(1, chosen.clamp(min=0)[..., None].expand(-1, -1, 2))  # (P, C, 2)
    reg_targets = torch.where(has_event[..., None], picked / stride[:, None, None], reg_targets)
    return cls_targets, reg_targets


def assign_batch(
    points: Tensor, gt_segments: Sequence[Tensor], gt_labels: Sequence[Tensor], num_classes: int
) -> tuple[Tensor, Tensor]:
    """`assign_targets` for every video of a batch: (B, P, C) and (B, P, C, 2)."""
    per_video = [
        assign_targets(points, segs, labels, num_classes) for segs, labels in zip(gt_segments, gt_labels, strict=True)
    ]
    return torch.stack([c for c, _ in per_video]), torch.stack([r for _, r in per_video])
