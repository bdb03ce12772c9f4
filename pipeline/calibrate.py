"""The operating point of `detect`: per-class score thresholds chosen on a validation split, and same-class overlap
suppression, so that the default output reads as one event per occurrence.

A dense model ranks up to `max_seg_num` candidates per class and video (soft-NMS decays duplicates, it does not
remove them); mAP wants that whole list, a reader does not. Calibration:
1. runs the checkpoint over a split (validation by default) and keeps every candidate;
2. per video and class, suppresses candidates overlapping a higher-scoring kept one (greedy, by descending score):
   which candidate survives never depends on the thresholds, so thresholds and suppression can be chosen apart;
3. matches the survivors to the true events with the mAP evaluator's rule at tIoU 0.5 (`mean_ap.ranked_hits`);
   keeping a class's candidates down to some score is a prefix of its ranked list, so one pass gives the
   precision, recall and F1 of every threshold;
4. per class, takes the threshold of the highest event-level F1 (midway between the last kept score and the next);
   classes with fewer than `min_events` true events in the split, or with no hit at any threshold, get the one
   threshold that maximises the F1 of all classes pooled;
5. repeats 2-4 for a few overlap levels and keeps the best pooled F1 (ties: the stricter suppression).
`detect` applies the result by default; `--threshold X` is one global value, `--all` every candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avdet.errors import CheckpointError
from avdet.pipeline.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from avdet.pipeline.data.annotations import load_annotations
from avdet.pipeline.metrics.mean_ap import events_to_predictions, ranked_hits
from avdet.pipeline.tasks import task_class
from avdet.pipeline.types import Event, OperatingPoint

log = logging.getLogger(__name__)

TIOU = 0.5  # event-level matching, as mAP@0.5
MIN_EVENTS = 5  # fewer true events of a class in the split: the pooled threshold
OVERLAP_LEVELS = (0.0, 0.25, 0.5)  # suppress same-class overlaps with tIoU above this (0.0: any overlap)
DEFAULT_OVERLAP_IOU = 0.0  # uncalibrated checkpoints and --threshold on them


# -- applying an operating point -----------------------------------------------------------------------------------
def span_tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """tIoU of two (start, end) intervals; 0 when they do not overlap."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def suppress_overlaps(events: list[Event], overlap_iou: float | None) -> list[Event]:
    """Per class, greedily by descending score, drop events whose tIoU with a kept one exceeds `overlap_iou`
    (None: keep all). Returns the kept events by descending score."""
    ranked = sorted(events, key=lambda e: -e.score)
    if overlap_iou is None:
        return ranked
    kept: dict[int, list[Event]] = {}
    out = []
    for e in ranked:
        same = kept.setdefault(e.label_id, [])
        if all(span_tiou((e.start, e.end), (k.start, k.end)) <= overlap_iou for k in same):
            same.append(e)
            out.append(e)
    return out


def apply_operating_point(events: list[Event], point: OperatingPoint) -> list[Event]:
    """The events `detect` shows: suppression first (independent of thresholds), then each class's threshold."""
    if point.mode == "all":
        return sorted(events, key=lambda e: -e.score)
    return [e for e in suppress_overlaps(events, point.overlap_iou) if e.score >= point.thresholds[e.label_id]]


def operating_point_for(
    calibrated: OperatingPoint | None,
    num_classes: int,
    fallback_threshold: float,
    *,
    threshold: float | None = None,
    all_events: bool = False,
    calibratable: bool = True,
) -> OperatingPoint:
    """The operating point `detect` uses: every candidate (`all_events` or threshold 0), one global `threshold`, the
    checkpoint's calibrated one, or (uncalibrated checkpoint) the global `fallback_threshold`, with a warning when
    the checkpoint could be calibrated (dense task)."""
    if all_events or threshold == 0:
        return OperatingPoint("all", (0.0,) * num_classes, None)
    overlap = calibrated.overlap_iou if calibrated is not None else DEFAULT_OVERLAP_IOU
    if threshold is not None:
        return OperatingPoint("global", (float(threshold),) * num_classes, overlap)
    if calibrated is not None:
        return calibrated
    if calibratable:
        log.warning(
            "checkpoint not calibrated: score threshold %.3g for every class (`avdet calibrate`)", fallback_threshold
        )
    return OperatingPoint("global", (float(fallback_threshold),) * num_classes, overlap)


# -- event-level precision / recall / F1 -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    """Event-level counts at one operating point."""

    hits: int
    detections: int
    true_events: int

    @property
    def precision(self) -> float:
        return self.hits / self.detections if self.detections else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.true_events if self.true_events else 0.0

    @property
    def f1(self) -> float:
        total = self.detections + self.true_events
        return 2 * self.hits / total if total else 0.0

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "hits": self.hits,
            "detections": self.detections,
            "true_events": self.true_events,
        }


def event_counts(
    annotations: Mapping, events: Mapping[str, list[Event]], split: str | None, tiou: float = TIOU
) -> Counts:
    """Hits, detections and true events of `events` ({video: shown events}) on a split, matched as mAP matches."""
    _, _, hits, npos = ranked_hits(annotations, events_to_predictions(events), split, tiou)
    return Counts(int(hits.sum()), len(hits), sum(npos.values()))


# -- choosing thresholds -------------------------------------------------------------------------------------------
def _best_cut(scores: np.ndarray, hits: np.ndarray, true_events: int) -> tuple[float, float]:
    """(threshold, F1) keeping the prefix of a descending `scores` list with the highest F1 against `true_events`;
    only cuts between distinct scores count (a threshold keeps all of a tie). No hit at all: (inf, 0)."""
    if not hits.any():
        return float("inf"), 0.0
    tp = np.cumsum(hits)
    n = np.arange(1, len(scores) + 1)
    f1 = 2 * tp / (n + true_events)
    last_of_tie = np.append(scores[1:] < scores[:-1], True)  # (R,) keeping up to here splits no tie
    best = int(np.flatnonzero(last_of_tie)[np.argmax(f1[last_of_tie])])
    below = scores[best + 1] if best + 1 < len(scores) else 0.0
    return float((scores[best] + below) / 2), float(f1[best])


def choose_thresholds(
    annotations: Mapping,
    candidates: Mapping[str, list[Event]],
    num_classes: int,
    split: str,
    *,
    min_events: int = MIN_EVENTS,
    overlap_levels: tuple[float, ...] = OVERLAP_LEVELS,
) -> OperatingPoint:
    """The calibrated operating point from every candidate of each video of `split` (see the module doc)."""
    best: tuple[float, OperatingPoint] | None = None
    for overlap in overlap_levels:  # stricter first: a later level must be strictly better
        kept = {vid: suppress_overlaps(evs, overlap) for vid, evs in candidates.items()}
        labels, scores, hits, npos = ranked_hits(annotations, events_to_predictions(kept), split, TIOU)
        pooled = np.argsort(-scores, kind="stable")
        pooled_threshold, _ = _best_cut(scores[pooled], hits[pooled], sum(npos.values()))
        thresholds, fallback = [], []
        for k in range(num_classes):
            mine = labels == k
            cut, _ = _best_cut(scores[mine], hits[mine], npos.get(k, 0))
            if npos.get(k, 0) < min_events or not np.isfinite(cut):
                cut = pooled_threshold
                fallback.append(k)
            thresholds.append(min(cut, 1.0) if np.isfinite(cut) else 1.0)
        point = OperatingPoint("calibrated", tuple(thresholds), overlap, split, TIOU, tuple(fallback))
        counts = event_counts(annotations, {v: apply_operating_point(e, point) for v, e in kept.items()}, split)
        point = replace(point, validation=counts.as_dict())
        log.info("overlap %.2f: validation F1 %.3f", overlap, counts.f1)
        if best is None or counts.f1 > best[0] + 1e-12:
            best = (counts.f1, point)
    assert best is not None
    return best[1]


# -- a checkpoint --------------------------------------------------------------------------------------------------
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
