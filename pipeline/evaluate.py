"""`avdet eval --checkpoint`: run a checkpoint over a split and score it with its task's metric (mAP for dense
checkpoints, segment accuracy for segment ones), or score cross-modal localization (`--cml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avdet.errors import CheckpointError
from avdet.pipeline.checkpoint import Checkpoint, load_checkpoint
from avdet.pipeline.metrics.cross_modal import CMLResult, evaluate_cml
from avdet.pipeline.tasks import Report, SegmentTask, task_class


def _loaded(checkpoint: str | Path | Checkpoint, device: str, data: dict[str, Any] | None) -> Checkpoint:
    """A loaded checkpoint as given, or the one at a path (with the data overrides)."""
    return checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device, data=data)


def evaluate_checkpoint(
    checkpoint: str | Path | Checkpoint,
    *,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = 16,
    data: dict[str, Any] | None = None,
) -> Report:
    """Score a checkpoint on `split` of the data it records (`data`: DataConfig overrides such as annotations,
    cache, released_root, ave_root; ignored when a loaded `Checkpoint` is passed)."""
    ckpt = _loaded(checkpoint, device, data)
    return task_class(ckpt.task).evaluate(ckpt, split, device=device, batch_size=batch_size)


def evaluate_cml_checkpoint(
    checkpoint: str | Path | Checkpoint, *, split: str = "test", device: str = "cpu", data: dict | None = None
) -> CMLResult:
    """Cross-modal localization (A2V / V2A) accuracy of a segment checkpoint with a cross-modal embedding space."""
    ckpt = _loaded(checkpoint, device, data)
    if ckpt.task != SegmentTask.name:
        raise CheckpointError(f"{ckpt.path}: a {ckpt.task} checkpoint, not a segment one")
    try:
        return evaluate_cml(ckpt.model, SegmentTask.labelled_split(ckpt, split), device)
    except ValueError as err:
        raise CheckpointError(f"{ckpt.path}: {err}") from None
