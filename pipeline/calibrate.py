"""`avdet calibrate`: choose a dense checkpoint's operating point on a split of its data (validation by default)
and store it in the checkpoint. The choice itself (`operating_point.choose_thresholds`) is shared with training,
which calibrates best.ckpt on the candidates of the validation pass that selected it, without running it again.
`detect` applies the result by default; `--threshold X` is one global value, `--all` every candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from avdet.errors import CheckpointError
from avdet.pipeline.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from avdet.pipeline.data.annotations import load_annotations
from avdet.pipeline.operating_point import MIN_EVENTS, choose_thresholds
from avdet.pipeline.tasks import task_class
from avdet.pipeline.types import OperatingPoint

log = logging.getLogger(__name__)


def calibrate_checkpoint(
    path: str | Path,
    split: str = "validation",
    *,
    device: str = "cpu",
    batch_size: int = 16,
    data: Mapping | None = None,
    min_events: int = MIN_EVENTS,
) -> tuple[OperatingPoint, list[str]]:
    """Choose the operating point of a dense checkpoint on `split` of its recorded data (or `data` overrides) and
    store it in the checkpoint (rewritten atomically; everything else is kept as it was). Returns it with the class
    names its thresholds belong to."""
    ckpt = load_checkpoint(path, device, data=data)
    if ckpt.task != "dense":
        raise CheckpointError(
            f"{path}: a {ckpt.task}-task checkpoint labels every segment; only dense checkpoints "
            "have score thresholds to calibrate"
        )
    report = task_class(ckpt.task).evaluate(ckpt, split, device=device, batch_size=batch_size)
    annotations = load_annotations(ckpt.data.annotations)
    point = choose_thresholds(annotations, report.events, len(ckpt.classes), split, min_events=min_events)
    payload = read_checkpoint(path)
    payload["operating_point"] = point.to_payload()
    save_checkpoint(Path(path), {k: v for k, v in payload.items() if k not in ("format", "version", "avdet_version")})
    return point, ckpt.classes
