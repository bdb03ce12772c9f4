"""The operating point of `detect`: which ranked candidates a reader is shown. Torch-free, shared by `detect`, the
Python API, `calibrate`, `export` and training's calibration.

A dense model ranks up to `max_seg_num` candidates per class and video (soft-NMS decays duplicates, it does not
remove them); mAP wants that whole list, a reader does not. An operating point (`types.OperatingPoint`) is a score
threshold per class plus same-class overlap suppression:
- applying it (`apply_operating_point`): per video and class, candidates overlapping a higher-scoring kept one by
  more than `overlap_iou` are dropped (greedy, by descending score), then each class's threshold; which candidate
  survives suppression never depends on the thresholds, so the two can be chosen apart;
- choosing it (`choose_thresholds`, on every candidate of each video of a validation split): per overlap level,
  suppression, then the survivors matched to the true events with the mAP evaluator's rule at tIoU 0.5
  (`mean_ap.ranked_hits`); keeping a class's candidates down to some score is a prefix of its ranked list, so one
  pass gives the F1 of every threshold (`class_thresholds`): each class takes the cut of its highest event-level F1
  (midway between the last kept score and the next); classes with fewer than `min_events` true events, or with no
  hit at any threshold, take the one cut that maximises the F1 of all classes pooled; the overlap level with the
  best pooled F1 wins (ties: the stricter suppression). The evaluator is imported by the functions that match
  (calibration only), so detection never loads the metrics;
- the point `detect` uses (`operating_point_for`): the checkpoint's calibrated one, one global `--threshold`, or
  every candidate (`--all`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

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
    from avdet.pipeline.metrics.mean_ap import events_to_predictions, ranked_hits  # not with the module: see its doc

    _, _, hits, npos = ranked_hits(annotations, events_to_predictions(events), split, tiou)
    return Counts(int(hits.sum()), len(hits), sum(npos.values()))


# -- choosing thresholds -------------------------------------------------------------------------------------------
def best_cut(scores: np.ndarray, hits: np.ndarray, true_events: int) -> tuple[float, float]:
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


def class_thresholds(
    labels: np.ndarray,
    scores: np.ndarray,
    hits: np.ndarray,
    true_events: Mapping[int, int],
    num_classes: int,
    min_events: int = MIN_EVENTS,
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(threshold per label id, label ids given the pooled threshold) from every kept candidate of a split,
    ranked by descending score: `labels`, `scores`, `hits` (R,) and `true_events` {label id: count}."""
    pooled = np.argsort(-scores, kind="stable")
    pooled_threshold, _ = best_cut(scores[pooled], hits[pooled], sum(true_events.values()))
    thresholds, fallback = [], []
    for k in range(num_classes):
        mine = labels == k
        cut, _ = best_cut(scores[mine], hits[mine], true_events.get(k, 0))
        if true_events.get(k, 0) < min_events or not np.isfinite(cut):
            cut = pooled_threshold
            fallback.append(k)
        thresholds.append(min(cut, 1.0) if np.isfinite(cut) else 1.0)
    return tuple(thresholds), tuple(fallback)


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
    # the evaluator's matching rule, imported here rather than with the module: detection never loads metrics
    from avdet.pipeline.metrics.mean_ap import events_to_predictions, ranked_hits

    best: tuple[float, OperatingPoint] | None = None
    for overlap in overlap_levels:  # stricter first: a later level must be strictly better
        kept = {vid: suppress_overlaps(evs, overlap) for vid, evs in candidates.items()}
        labels, scores, hits, npos = ranked_hits(annotations, events_to_predictions(kept), split, TIOU)
        thresholds, fallback = class_thresholds(labels, scores, hits, npos, num_classes, min_events)
        point = OperatingPoint("calibrated", thresholds, overlap, split, TIOU, fallback)
        counts = event_counts(annotations, {v: apply_operating_point(e, point) for v, e in kept.items()}, split)
        point = replace(point, validation=counts.as_dict())
        log.info("overlap %.2f: validation F1 %.3f", overlap, counts.f1)
        if best is None or counts.f1 > best[0] + 1e-12:
            best = (counts.f1, point)
    assert best is not None
    return best[1]
