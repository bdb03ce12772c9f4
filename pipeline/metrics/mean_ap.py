"""UnAV-100 mAP, identical to the reference evaluator (ttgeng233/UnAV `libs/utils/metrics.py`, ANETdetection).

ActivityNet-style interpolated AP per class, averaged over the classes present in the split's ground truth, at
each tIoU threshold. Reference behaviours kept on purpose (they change numbers):
- ground-truth duplicates (same class, both ends within 1e-3 s of an earlier event) are dropped;
- each class's predictions are ranked by `argsort(scores)[::-1]` over the class's predictions in file order.
  The reference uses numpy's default (unstable) sort there, and requires numpy < 1.24, whose default argsort is an
  introsort: its order among equal scores (and so the AP where tied predictions differ in correctness) is
  reproduced by `argsort_numpy123`, for the classes whose scores tie (identical numbers to the reference under
  numpy 1.23.5). `tie_order="stable"` takes a stable sort, reversed (equal scores: later in the file first), which
  is what the reference gives under numpy 2.x on the published fixture (1.3e-8; 1.1e-6 from numpy 1.23's numbers);
- a prediction takes the unmatched ground truth of its video and class with the highest tIoU (ties: in the
  reversed order of the same argsort) among those with tIoU >= threshold; otherwise it is a false positive.
  Predictions for videos without ground truth of that class (other splits included) are false positives;
- label ids are mapped to class indices like pandas' `replace`: an id absent from the ground truth keeps its
  value, so it is scored as whichever class has that index (a no-op when every class is present, as in the
  UnAV-100 test split).
No pandas: the greedy matching runs in rounds (the k-th ranked prediction of every (class, video) pair at once),
vectorised over pairs and thresholds with numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from avdet.errors import DataError
from avdet.pipeline.data.annotations import (
    as_label_id,
    check_segment,
    database_of,
    is_finite_number,
    load_annotations,
    num_classes_of,
    read_json,
)
from avdet.pipeline.io.writers import events_from_document, is_events_document
from avdet.pipeline.types import Event

log = logging.getLogger(__name__)

DEFAULT_TIOU = np.linspace(0.1, 0.9, 9)
DUPLICATE_TOL = 1e-3  # seconds, as the reference's remove_duplicate_annotations


@dataclass
class EvalResult:
    tiou_thresholds: np.ndarray  # (T,)
    mAP: np.ndarray  # (T,) fractions, mean over classes
    average_mAP: float  # mean of mAP over thresholds (the papers' "Avg.")
    ap: np.ndarray  # (T, K) per class
    class_ids: np.ndarray  # (K,) label id of each column of `ap` (classes present in the split's ground truth)

    def as_dict(self) -> dict:
        return {
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "mAP": [float(x) for x in self.mAP],
            "average_mAP": float(self.average_mAP),
        }


@dataclass
class MapScores:
    """The mAP of one split as `avdet eval` prints and serialises it (the `tasks.Report` shape)."""

    split: str
    result: EvalResult

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        res = self.result
        shown = [(t, ap) for t, ap in zip(res.tiou_thresholds, res.mAP, strict=True) if t >= 0.5 - 1e-9]
        columns = [f"{t:.1f}" for t, _ in shown] + ["Avg."]
        row = [f"{100 * ap:.2f}" for _, ap in shown] + [f"{100 * res.average_mAP:.2f}"]
        return f"UnAV-100 mAP (%), split {self.split}", columns, [row]

    def as_dict(self) -> dict:
        return self.result.as_dict()


# -- loading and validation --------------------------------------------------------------------------------------


def _prediction_db(predictions: Mapping) -> Mapping:
    """Unwrap `{"database": {...}}` / `{"results": {...}}` (the reference writes "results"); plain maps pass."""
    for key in ("database", "results"):
        if isinstance(predictions.get(key), Mapping):
            return predictions[key]
    return predictions


_NUMBER_TYPES = {int, float}


def _fast_rows(db: Mapping, n_cls: int) -> dict[str, list[dict]] | None:
    """The normalised predictions when every one is well-formed, checked with numpy at once; None when any is not
    (the caller then walks them one by one to name the first bad one)."""
    preds = [p for ps in db.values() for p in ps]
    try:
        segs = [p["segment"] for p in preds]
        scores = [p["score"] if "score" in p else p["scores"] for p in preds]
        labels = [p["label_id"] for p in preds]
    except (KeyError, TypeError):
        return None
    if {type(x) for x in segs} - {list, tuple} or {len(x) for x in segs} - {2}:
        return None
    if {type(v) for x in segs for v in x} - _NUMBER_TYPES or {type(v) for v in [*scores, *labels]} - _NUMBER_TYPES:
        return None  # also rejects bools and strings, which numpy would convert
    seg = np.asarray(segs, dtype=np.float64).reshape(-1, 2)  # (N, 2)
    score = np.asarray(scores, dtype=np.float64)
    label = np.asarray(labels, dtype=np.float64)
    ok = (
        np.isfinite(seg).all()
        and (seg[:, 0] >= 0).all()
        and (seg[:, 1] >= seg[:, 0]).all()
        and np.isfinite(score).all()
        and (label == np.floor(label)).all()
        and ((label >= 0) & (label < n_cls)).all()
    )
    if not ok:
        return None
    rows = iter(zip(seg.tolist(), label.astype(np.int64).tolist(), score.tolist(), strict=True))
    return {
        vid: [{"segment": s, "label_id": lab, "score": sc} for s, lab, sc in islice(rows, len(ps))]
        for vid, ps in db.items()
    }


def _checked_rows(preds: list, vid: str, n_cls: int, source: str) -> list[dict]:
    rows = []
    for i, p in enumerate(preds):
        where = f"{source}: video {vid!r} prediction {i}"
        if not isinstance(p, dict):
            raise DataError(f"{where}: expected an object")
        start, end = check_segment(p.get("segment"), where)
        score = p.get("score", p.get("scores"))
        if not is_finite_number(score):
            raise DataError(f"{where}: score must be a finite number, not {score!r}")
        lid = as_label_id(p.get("label_id"))
        if lid is None or not 0 <= lid < n_cls:
            raise DataError(f"{where}: label_id {p.get('label_id')!r} out of range 0..{n_cls - 1}")
        rows.append({"segment": [start, end], "label_id": lid, "score": float(score)})
    return rows


def validate_predictions(
    data: Any, annotations: dict, num_classes: int | None = None, source: str = "predictions"
) -> dict[str, list[dict]]:
    """Normalised `{vid: [{"segment": [s, e], "label_id": int, "score": float}]}` from the results format
    (`{"database" | "results": {vid: [{segment, label_id, score | scores}]}}`); the first bad prediction is a
    one-line DataError naming `source`, the video and the problem."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected {EXPECTED}")
    db = _prediction_db(data)
    if db is data and ("database" in data or "results" in data):
        raise DataError(f'{source}: "database" must map video ids to lists of predictions')
    known = database_of(annotations)
    n_cls = num_classes_of(annotations) if num_classes is None else num_classes
    for vid, preds in db.items():
        if vid not in known:
            raise DataError(f"{source}: unknown video id {vid!r} (not in the annotations)")
        if not isinstance(preds, list):
            raise DataError(f"{source}: video {vid!r}: expected a list of predictions")
    fast = _fast_rows(db, n_cls)
    return fast if fast is not None else {vid: _checked_rows(preds, vid, n_cls, source) for vid, preds in db.items()}


EXPECTED = (
    'the UnAV-100 results format ({"database" or "results": {video id: [predictions]}}), '
    'an events JSON of `avdet detect` ({"video": ..., "events": [...]}) or a folder of them'
)


def read_predictions(path: str | Path) -> dict:
    """The predictions in `path` as the results format: a results-format file as it is; an events JSON of
    `detect`, or a folder of them (*.json), converted (video id = the document's "video"). Events filtered by an
    operating point (not `detect --all`) are scored as they are, with a warning: mAP needs every candidate."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise DataError(f"{path}: no .json files in the folder; expected {EXPECTED}")
    docs = [(f, read_json(f, "predictions")) for f in files]
    if not path.is_dir() and not is_events_document(docs[0][1]):
        return docs[0][1]
    events: dict[str, list[Event]] = {}
    for f, doc in docs:
        if not is_events_document(doc):
            raise DataError(f"{f}: not an events JSON of `avdet detect`; expected {EXPECTED}")
        video, _, found = events_from_document(doc, f)
        if video in events:
            raise DataError(f"{f}: video {video!r} appears in two events files")
        events[video] = found
        mode = (doc.get("operating_point") or {}).get("mode")
        if mode not in (None, "all"):
            log.warning("%s: events chosen by %s thresholds; mAP needs every candidate (`detect --all`)", f, mode)
    return events_to_predictions(events)


def load_predictions(path: str | Path, annotations: dict, num_classes: int | None = None) -> dict[str, list[dict]]:
    """Predictions from `path` (`read_predictions`), validated against the annotations (num_classes: from them if
    None)."""
    return validate_predictions(read_predictions(path), annotations, num_classes, str(path))


def events_to_predictions(events_by_video: Mapping[str, list[Event]]) -> dict:
    """`{vid: [Event]}` -> the results format `{"database": {vid: [{segment, label_id, label, score}]}}`."""
    return {
        "database": {
            vid: [
                {"segment": [e.start, e.end], "label_id": e.label_id, "label": e.label, "score": e.score}
                for e in events
            ]
            for vid, events in events_by_video.items()
        }
    }


# -- ground truth and predictions as flat arrays -----------------------------------------------------------------
def _dedupe(events: list[dict]) -> list[tuple[float, float, int]]:
    kept: list[tuple[float, float, int]] = []
    for e in events:
        s, t, lab = float(e["segment"][0]), float(e["segment"][1]), int(e["label_id"])
        for ks, kt, kl in kept:  # a plain loop: a generator per event cost more than the comparisons
            if lab == kl and abs(s - ks) <= DUPLICATE_TOL and abs(t - kt) <= DUPLICATE_TOL:
                break
        else:
            kept.append((s, t, lab))
    return kept


def _ground_truth(db: Mapping, split: str | None, video_index: dict[str, int]) -> tuple[np.ndarray, ...]:
    vids, rows = [], []
    for vid, video in db.items():
        if split is not None and str(video["subset"]).lower() != split:
            continue
        kept = _dedupe(video.get("annotations", []))
        vids += [video_index.setdefault(vid, len(video_index))] * len(kept)
        rows += kept
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)  # (N, [start, end, label])
    return np.asarray(vids, dtype=np.int64), arr[:, 0], arr[:, 1], arr[:, 2].astype(np.int64)


def _flat_predictions(db: Mapping, video_index: dict[str, int]) -> tuple[np.ndarray, ...]:
    counts = [len(preds) for preds in db.values()]
    vids = [video_index.setdefault(vid, len(video_index)) for vid in db]
    preds = [p for ps in db.values() for p in ps]
    return (
        np.repeat(np.asarray(vids, dtype=np.int64), counts),
        np.asarray([float(p["segment"][0]) for p in preds], dtype=np.float64),
        np.asarray([float(p["segment"][1]) for p in preds], dtype=np.float64),
        np.asarray([int(p["label_id"]) for p in preds], dtype=np.int64),
        np.asarray([float(p["score"] if "score" in p else p["scores"]) for p in preds], dtype=np.float64),
    )


def _segment_iou(ps: np.ndarray, pe: np.ndarray, gs: np.ndarray, ge: np.ndarray) -> np.ndarray:
    """tIoU of each prediction (P, 1) with its padded ground truth (P, G); the reference's operation order."""
    inter = (np.minimum(pe, ge) - np.maximum(ps, gs)).clip(0)
    union = (ge - gs) + (pe - ps) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def _interpolated_ap(tp: np.ndarray, npos: float) -> np.ndarray:
    """VOC 2011 interpolated AP per threshold row from the ranked true-positive flags tp (T, n)."""
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_cum = np.cumsum(~tp, axis=1, dtype=np.float64)
    rec = tp_cum / npos
    prec = tp_cum / (tp_cum + fp_cum)
    zeros, ones = np.zeros((tp.shape[0], 1)), np.ones((tp.shape[0], 1))
    mprec = np.hstack([zeros, prec, zeros])
    mrec = np.hstack([zeros, rec, ones])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]  # precision envelope from the right
    step = mrec[:, 1:] - mrec[:, :-1]  # zero where recall does not change, so those points add nothing
    return np.sum(step * mprec[:, 1:], axis=1)


# -- numpy 1.23's argsort ------------------------------------------------------------------------------------------
TIE_ORDERS = ("numpy123", "stable")
_SMALL = 16  # numpy's introsort insertion-sorts partitions of at most this many elements


def _partition(v: np.ndarray, idx: np.ndarray, pl: int, pr: int) -> int:
    """One introsort partition of idx[pl..pr] (in place), as numpy's `aquicksort_`; returns the pivot's place.

    Median of three (pl, middle, pr) sorted in place, the pivot parked at pr - 1, then the two scans: from the left
    stop at values not below the pivot, from the right at values not above it, swap the k-th stops of both while
    they have not crossed. The stops are found at once from the values before any swap; at the crossing the left
    scan ends at the k-th left stop or, if that lies beyond, at the previous right stop (now holding a larger value).
    """
    pm = pl + ((pr - pl) >> 1)
    for a, b in ((pm, pl), (pr, pm), (pm, pl)):
        if v[idx[a]] < v[idx[b]]:
            idx[a], idx[b] = idx[b], idx[a]
    vp = v[idx[pm]]
    idx[pm], idx[pr - 1] = idx[pr - 1], idx[pm]
    vals = v[idx[pl:pr]]  # places pl .. pr - 1
    left = pl + 1 + np.flatnonzero(~(vals[1:] < vp))  # ascending; ends at pr - 1 (the pivot)
    right = pl + np.flatnonzero(~(vp < vals[:-1]))[::-1]  # descending; ends at pl (not above the pivot)
    m = min(len(left), len(right))
    k = int(np.argmax(left[:m] >= right[:m]))  # the first crossing (there always is one)
    pi = int(left[k]) if k == 0 else min(int(left[k]), int(right[k - 1]))
    idx[left[:k]], idx[right[:k]] = idx[right[:k]], idx[left[:k]]
    idx[pi], idx[pr - 1] = idx[pr - 1], idx[pi]
    return pi


def _heapsort(v: np.ndarray, part: np.ndarray) -> np.ndarray:
    """numpy's `aheapsort_` of the indices `part` by v (introsort's fallback when partitions stay unbalanced)."""
    a = [0, *part.tolist()]  # 1-based heap
    n = len(part)

    def sift(i: int, n: int, tmp: int) -> None:
        j = 2 * i
        while j <= n:
            if j < n and v[a[j]] < v[a[j + 1]]:
                j += 1
            if not v[tmp] < v[a[j]]:
                break
            a[i], i, j = a[j], j, 2 * j
        a[i] = tmp

    for start in range(n >> 1, 0, -1):
        sift(start, n, a[start])
    while n > 1:
        tmp, a[n] = a[n], a[1]
        n -= 1
        sift(1, n, tmp)
    return np.asarray(a[1:], dtype=np.int64)


def argsort_numpy123(v: np.ndarray) -> np.ndarray:
    """`np.argsort(v)` as numpy <= 1.23 computes it for float64 without NaN (its default kind, introsort): the same
    order among equal values, which later numpy versions (other sorting kernels) and stable sorts do not give.

    Introsort: median-of-3 quicksort keeping the larger side for later, insertion sort (stable) for partitions of
    at most 16 elements, heapsort for a partition popped after 2 * floor(log2 n) levels."""
    n = len(v)
    idx = np.arange(n, dtype=np.int64)
    if n < 2:
        return idx
    stack: list[tuple[int, int, int]] = []
    pl, pr, depth = 0, n - 1, 2 * (n.bit_length() - 1)
    while True:
        if depth < 0:
            idx[pl : pr + 1] = _heapsort(v, idx[pl : pr + 1])
        else:
            while pr - pl > _SMALL - 1:
                pi = _partition(v, idx, pl, pr)
                depth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            part = idx[pl : pr + 1]
            idx[pl : pr + 1] = part[np.argsort(v[part], kind="stable")]
        if not stack:
            return idx
        pl, pr, depth = stack.pop()


def _unique(v: np.ndarray) -> np.ndarray:
    """np.unique of a 1-D array without NaN; its first call imports numpy.ma (a tenth of `eval`'s numpy import)."""
    s = np.sort(v)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


def _has_ties(v: np.ndarray) -> bool:
    s = np.sort(v)
    return bool((s[1:] == s[:-1]).any())


def _descending(v: np.ndarray, tie_order: str) -> np.ndarray:
    """The reference's `argsort(v)[::-1]`: only equal values need the slow exact order."""
    if tie_order == "numpy123" and len(v) > _SMALL and _has_ties(v) and not np.isnan(v).any():
        return argsort_numpy123(v)[::-1]
    return np.argsort(v, kind="stable")[::-1]  # no ties, or insertion sort (stable) only: the same order


# -- the metric ---------------------------------------------------------------------------------------------------
def evaluate(
    annotations: Mapping,
    predictions: Mapping,
    split: str | None = "test",
    tiou_thresholds: np.ndarray = DEFAULT_TIOU,
    *,
    tie_order: str = "numpy123",
) -> EvalResult:
    """UnAV-100 mAP of `predictions` ({vid: [{segment, label_id, score}]}, or wrapped in "database"/"results").

    `tie_order` ranks equal scores (and equal tIoUs) as the reference does under the numpy it requires ("numpy123",
    numpy < 1.24's introsort: reference-exact) or as a stable sort, reversed ("stable": later in the file first)."""
    if tie_order not in TIE_ORDERS:
        raise ValueError(f"tie_order must be one of {', '.join(TIE_ORDERS)}, not {tie_order!r}")
    thr = np.asarray(tiou_thresholds, dtype=np.float64)
    n_thr = len(thr)
    video_index: dict[str, int] = {}
    g_vid, g_start, g_end, g_label = _ground_truth(database_of(annotations), split, video_index)
    p_vid, p_start, p_end, p_label, p_score = _flat_predictions(_prediction_db(predictions), video_index)

    if len(g_vid) and not np.isin(p_vid, g_vid).any():
        log.warning("no predictions for any video of split %r: its mAP is 0", split)
    class_ids = _unique(g_label)  # sorted: column k of the AP table is class_ids[k]
    n_cls = len(class_ids)
    ap = np.zeros((n_thr, n_cls))
    if n_cls == 0:
        names = sorted({str(v.get("subset")).lower() for v in database_of(annotations).values() if v.get("subset")})
        raise DataError(f"no ground-truth events in split {split!r} (splits: {', '.join(names) or 'none'})")
    g_cls = np.searchsorted(class_ids, g_label)
    # pandas-replace semantics: known ids -> their index, unknown ids keep their value
    pos = np.searchsorted(class_ids, p_label).clip(max=n_cls - 1)
    p_cls = np.where(class_ids[pos] == p_label, pos, p_label)
    in_range = (p_cls >= 0) & (p_cls < n_cls)

    # rank each class's predictions as the reference: argsort of the class's scores in file order, reversed
    ranked_parts, class_bounds = [], [0]
    for k in range(n_cls):
        idx = np.flatnonzero(in_range & (p_cls == k))
        ranked_parts.append(idx[_descending(p_score[idx], tie_order)])
        class_bounds.append(class_bounds[-1] + len(idx))
    ranked = np.concatenate(ranked_parts) if ranked_parts else np.zeros(0, np.int64)

    tp = _match(ranked, p_vid, p_start, p_end, p_cls, g_vid, g_start, g_end, g_cls, thr, len(video_index), tie_order)

    npos = np.bincount(g_cls, minlength=n_cls)
    for k in range(n_cls):
        lo, hi = class_bounds[k], class_bounds[k + 1]
        if hi > lo:
            ap[:, k] = _interpolated_ap(tp[:, lo:hi], float(npos[k]))
    m_ap = ap.mean(axis=1)
    return EvalResult(thr, m_ap, float(m_ap.mean()), ap, class_ids)


def _ranked_match(
    annotations: Mapping, predictions: Mapping, split: str | None, tiou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """The matching of `ranked_hits`: (ranked order of the flat predictions (R,), their label ids (P,) and scores
    (P,) in input order, hits (R,) in ranked order, true events per label id)."""
    video_index: dict[str, int] = {}
    g_vid, g_start, g_end, g_label = _ground_truth(database_of(annotations), split, video_index)
    p_vid, p_start, p_end, p_label, p_score = _flat_predictions(_prediction_db(predictions), video_index)
    parts = [np.flatnonzero(p_label == k) for k in np.unique(p_label)]
    ranked = np.concatenate([idx[_descending(p_score[idx], "stable")] for idx in parts] or [np.zeros(0, np.int64)])
    thr = np.asarray([tiou], dtype=np.float64)
    tp = _match(ranked, p_vid, p_start, p_end, p_label, g_vid, g_start, g_end, g_label, thr, len(video_index))
    counts = dict(zip(*np.unique(g_label, return_counts=True), strict=True))
    return ranked, p_label, p_score, tp[0], {int(k): int(v) for k, v in counts.items()}


def ranked_hits(
    annotations: Mapping, predictions: Mapping, split: str | None, tiou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """One operating point's matching, by the evaluator's rule at one tIoU: per class, predictions in descending
    score each take the unmatched true event of their video with the highest tIoU >= `tiou`. Classes are the
    label ids as they are (no pandas mapping), so predictions of classes absent from the split are false positives.

    Returns, in ranked order (class by class, descending score within a class): label ids (R,), scores (R,) and
    hits (R,) bool, plus the number of true events per label id. Ground truth is deduplicated as for mAP."""
    ranked, p_label, p_score, hits, counts = _ranked_match(annotations, predictions, split, tiou)
    return p_label[ranked], p_score[ranked], hits, counts


def prediction_hits(
    annotations: Mapping, predictions: Mapping, split: str | None, tiou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """`ranked_hits`' matching seen from each prediction, in the predictions' own order (video by video as given):
    hits (P,) bool, the best tIoU (P,) with any true event of the prediction's class in its video (0 when none),
    and the number of true events per label id."""
    ranked, p_label, _, ranked_tp, counts = _ranked_match(annotations, predictions, split, tiou)
    hits = np.zeros(len(p_label), dtype=bool)
    hits[ranked] = ranked_tp
    video_index: dict[str, int] = {}
    g_vid, g_start, g_end, g_label = _ground_truth(database_of(annotations), split, video_index)
    p_vid, p_start, p_end, _, _ = _flat_predictions(_prediction_db(predictions), video_index)
    same = (p_vid[:, None] == g_vid[None, :]) & (p_label[:, None] == g_label[None, :])  # (P, G)
    tious = _segment_iou(p_start[:, None], p_end[:, None], g_start[None, :], g_end[None, :])  # (P, G)
    best = np.where(same, np.nan_to_num(tious), 0.0).max(axis=1, initial=0.0)  # (P,)
    return hits, best, counts


def _match(
    ranked: np.ndarray,
    p_vid: np.ndarray,
    p_start: np.ndarray,
    p_end: np.ndarray,
    p_cls: np.ndarray,
    g_vid: np.ndarray,
    g_start: np.ndarray,
    g_end: np.ndarray,
    g_cls: np.ndarray,
    thr: np.ndarray,
    n_videos: int,
    tie_order: str = "stable",
) -> np.ndarray:
    """Greedy matching. Returns tp (T, R) bool for the predictions in `ranked` order (class by class)."""
    n_thr, n_rank = len(thr), len(ranked)
    tp = np.zeros((n_thr, n_rank), dtype=bool)
    if n_rank == 0 or len(g_vid) == 0:
        return tp

    # ground-truth groups = (class, video) pairs, each padded to G columns in annotation order
    g_key = g_cls * n_videos + g_vid
    g_order = np.argsort(g_key, kind="stable")
    keys, g_first, g_count = np.unique(g_key[g_order], return_index=True, return_counts=True)
    n_grp, width = len(keys), int(g_count.max())
    col = np.arange(len(g_order)) - np.repeat(g_first, g_count)
    grp_of_gt = np.repeat(np.arange(n_grp), g_count)
    gs = np.full((n_grp, width), np.nan)
    ge = np.full((n_grp, width), np.nan)
    gs[grp_of_gt, col] = g_start[g_order]
    ge[grp_of_gt, col] = g_end[g_order]

    # each ranked prediction's group (-1: no ground truth of its class in its video -> false positive)
    r_key = p_cls[ranked] * n_videos + p_vid[ranked]
    at = np.searchsorted(keys, r_key).clip(max=n_grp - 1)
    r_grp = np.where(keys[at] == r_key, at, -1)
    has = np.flatnonzero(r_grp >= 0)  # positions in `ranked`
    if has.size == 0:  # no prediction in a video of the split with ground truth of its class: all false positives
        return tp
    grp = r_grp[has]
    n = g_count[grp]
    tiou = _segment_iou(
        p_start[ranked[has]][:, None], p_end[ranked[has]][:, None], gs[grp], ge[grp]
    )  # (H, G); padding is NaN and never eligible (masked by `valid`)
    valid = np.arange(width)[None, :] < n[:, None]  # (H, G)

    # preference order among a prediction's ground truth: tiou.argsort()[::-1] over its n entries, as the reference
    pref = np.full(tiou.shape, width, dtype=np.int64)
    for size in _unique(n):
        rows = np.flatnonzero(n == size)
        order = np.argsort(tiou[rows, :size], axis=1, kind="stable")[
            :, ::-1
        ]  # (r, size) ground-truth columns, preferred first
        pref[rows[:, None], order] = np.arange(size)[None, :]
        if tie_order == "numpy123" and size > _SMALL:  # equal tIoUs among many ground truths: numpy 1.23's order
            for r in rows:
                pref[r, _descending(tiou[r, :size], tie_order)] = np.arange(size)

    # round k = the k-th ranked prediction of every group; within a round groups are independent
    order_in_grp = np.argsort(grp, kind="stable")  # ranked order is kept within each group
    _, first, counts = np.unique(grp[order_in_grp], return_index=True, return_counts=True)
    round_of = np.empty(len(grp), dtype=np.int64)
    round_of[order_in_grp] = np.arange(len(grp)) - np.repeat(first, counts)

    locked = np.zeros((n_grp, n_thr, width), dtype=bool)
    by_round = np.argsort(round_of, kind="stable")
    bounds = np.searchsorted(round_of[by_round], np.arange(round_of.max() + 2))
    for k in range(len(bounds) - 1):
        rows = by_round[bounds[k] : bounds[k + 1]]
        g = grp[rows]
        # eligible: not below the threshold (NaN tIoU counts, as in the reference), unmatched, real
        elig = ~(tiou[rows][:, None, :] < thr[None, :, None]) & ~locked[g] & valid[rows][:, None, :]  # (r, T, G)
        choice = np.where(elig, pref[rows][:, None, :], width).argmin(axis=2)  # (r, T)
        hit = elig.any(axis=2)  # (r, T)
        rr, tt = np.nonzero(hit)
        locked[g[rr], tt, choice[rr, tt]] = True
        tp[:, has[rows]] = hit.T
    return tp


def evaluate_files(predictions: Path, annotations: Path, split: str) -> MapScores:
    """A predictions file scored against an annotations file on `split` (`avdet eval --predictions`; no torch)."""
    ann = load_annotations(annotations, split)  # only what is scored is validated: a cheap start
    return MapScores(split, evaluate(ann, load_predictions(predictions, ann), split=split))
