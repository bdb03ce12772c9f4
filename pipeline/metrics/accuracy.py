"""Segment-task metrics: segment accuracy (background included), per-class accuracy, the confusion matrix, and
the always-background floor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def _np(x: Tensor | np.ndarray | Sequence) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def segment_accuracy(
    pred: Tensor | np.ndarray, target: Tensor | np.ndarray, mask: Tensor | np.ndarray | None = None
) -> float:
    """Percent of (valid) segments whose predicted label equals the target, background included."""
    p, t = _np(pred).reshape(-1), _np(target).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"predictions {p.shape} and targets {t.shape} differ in size")
    keep = np.ones_like(t, dtype=bool) if mask is None else _np(mask).reshape(-1).astype(bool)
    keep &= t >= 0
    if not keep.any():
        raise ValueError("no valid segments to score")
    return float(100.0 * (p[keep] == t[keep]).mean())


def confusion_matrix(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_labels: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true label, columns = predicted label; negative targets are ignored."""
    p, t = _np(pred).reshape(-1).astype(np.int64), _np(target).reshape(-1).astype(np.int64)
    keep = t >= 0
    if ((p[keep] < 0) | (p[keep] >= num_labels) | (t[keep] >= num_labels)).any():
        raise ValueError(f"labels must lie in 0..{num_labels - 1}")
    flat = np.bincount(t[keep] * num_labels + p[keep], minlength=num_labels * num_labels)
    return flat.reshape(num_labels, num_labels)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Per true label: correct / segments of that label in percent (NaN for labels absent from the targets)."""
    totals = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(matrix) / totals, np.nan)


@dataclass
class SegmentReport:
    accuracy: float  # percent, all valid segments, background included
    per_class: np.ndarray  # (K,) percent, NaN where a label never occurs
    confusion: np.ndarray  # (K, K) rows = truth
    class_names: list[str]

    def table(self) -> list[tuple[str, int, float]]:
        """(name, segments, accuracy %) per label."""
        totals = self.confusion.sum(axis=1)
        return [(n, int(t), float(a)) for n, t, a in zip(self.class_names, totals, self.per_class, strict=True)]


def segment_report(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, class_names: Sequence[str]
) -> SegmentReport:
    """Accuracy, per-class accuracy and confusion matrix; `class_names` lists the K labels, background last."""
    matrix = confusion_matrix(pred, target, len(class_names))
    return SegmentReport(segment_accuracy(pred, target), per_class_accuracy(matrix), matrix, list(class_names))


def background_only_accuracy(target: np.ndarray, background: int) -> float:
    """The accuracy of always predicting background: the floor a model must clear."""
    return segment_accuracy(np.full_like(target, background), target)
