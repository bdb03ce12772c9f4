"""The operating point: matching at one tIoU, per-class thresholds chosen for event-level F1, overlap suppression,
and the writes `detect` relies on (streams, files that are not regular files). No model: small hand-made data."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import DataError
from avdet.pipeline.io.atomic import atomic_path, is_special, write_text_atomic
from avdet.pipeline.metrics.mean_ap import _interpolated_ap, evaluate, events_to_predictions, ranked_hits
from avdet.pipeline.operating_point import (
    apply_operating_point,
    choose_thresholds,
    event_counts,
    operating_point_for,
    suppress_overlaps,
)
from avdet.pipeline.types import Event, OperatingPoint


def _annotations(truth: dict[str, list[tuple[int, float, float]]], subset: str = "validation") -> dict:
    return {
        "database": {
            vid: {
                "subset": subset,
                "duration": 60.0,
                "annotations": [{"segment": [s, e], "label": f"c{k}", "label_id": k} for k, s, e in events],
            }
            for vid, events in truth.items()
        }
    }


def test_ranked_hits_give_the_evaluators_ap_at_one_tiou() -> None:
    rng = np.random.default_rng(0)
    truth, preds = {}, {}
    for v in range(8):
        starts = rng.uniform(0, 50, 4)
        truth[f"v{v}"] = [(int(rng.integers(3)), s, s + rng.uniform(2, 8)) for s in starts]
        preds[f"v{v}"] = [
            Event(f"c{k}", k, s + rng.normal(0, 1), e + rng.normal(0, 1), float(rng.uniform()))
            for k, s, e in truth[f"v{v}"] * 3
        ]
    ann = _annotations(truth, "test")
    labels, scores, hits, npos = ranked_hits(ann, events_to_predictions(preds), "test", 0.5)
    want = evaluate(ann, events_to_predictions(preds), "test", np.array([0.5]), tie_order="stable").ap[0]
    got = [_interpolated_ap(hits[labels == k][None, :], npos[k])[0] for k in range(3)]
    assert np.allclose(got, want)
    assert all(np.all(np.diff(scores[labels == k]) <= 0) for k in range(3))  # descending within a class
    assert hits.sum() > 0 and not hits.all()


def test_suppression_is_per_class_and_keeps_the_best() -> None:
    events = [
        Event("a", 0, 0, 10, 0.5),
        Event("a", 0, 1, 10, 0.9),
        Event("b", 1, 0, 10, 0.4),
        Event("a", 0, 20, 25, 0.2),
    ]
    kept = suppress_overlaps(events, 0.0)
    assert kept == [events[1], events[2], events[3]]
    assert suppress_overlaps(events, None) == sorted(events, key=lambda e: -e.score)
    assert suppress_overlaps(events, 0.95) == sorted(events, key=lambda e: -e.score)  # tIoU 0.9 < 0.95: both kept


def test_thresholds_maximise_f1_per_class_with_a_pooled_fallback() -> None:
    # class 0: 6 true events found at 0.8 each, plus wrong candidates at 0.5 -> best threshold between 0.5 and 0.8
    # class 1: 2 true events only (rare) -> the pooled threshold
    truth = {f"v{i}": [(0, 10.0 * i, 10.0 * i + 5)] for i in range(6)}
    truth["v0"] += [(1, 30.0, 35.0)]
    truth["v1"] += [(1, 30.0, 35.0)]
    cands = {vid: [Event("c0", 0, s, e, 0.8) for _, s, e in evs if _ == 0] for vid, evs in truth.items()}
    for vid in cands:
        cands[vid] += [Event("c0", 0, 50.0, 55.0, 0.5), Event("c1", 1, 30.0, 35.0, 0.3)]
    point = choose_thresholds(_annotations(truth), cands, 2, "validation")
    assert point.mode == "calibrated" and point.split == "validation" and point.tiou == 0.5
    assert point.thresholds[0] == pytest.approx(0.65)
    assert point.fallback == (1,)
    shown = {v: apply_operating_point(e, point) for v, e in cands.items()}
    counts = event_counts(_annotations(truth), shown, "validation")
    assert point.validation["f1"] == pytest.approx(counts.f1)
    assert counts.hits == 6 and counts.precision == 1.0
    everything = event_counts(_annotations(truth), cands, "validation")
    assert counts.f1 > everything.f1


def test_operating_point_choices_and_payload() -> None:
    calibrated = OperatingPoint("calibrated", (0.3, 0.6), 0.25, "validation", 0.5, (1,), {"f1": 0.5})
    assert operating_point_for(calibrated, 2, 0.1) is calibrated
    assert operating_point_for(calibrated, 2, 0.1, threshold=0.2).thresholds == (0.2, 0.2)
    assert operating_point_for(calibrated, 2, 0.1, threshold=0).mode == "all"
    assert operating_point_for(None, 2, 0.1).thresholds == (0.1, 0.1)
    assert OperatingPoint.from_payload(calibrated.to_payload(), 2) == calibrated
    assert calibrated.record(["dog", "car"])["thresholds"] == {"dog": 0.3, "car": 0.6}
    with pytest.raises(ValueError, match="2 thresholds for 3 classes"):
        OperatingPoint.from_payload(calibrated.to_payload(), 3)
    events = [Event("dog", 0, 0, 1, 0.35), Event("car", 1, 0, 1, 0.35)]
    assert apply_operating_point(events, calibrated) == events[:1]


def test_writes_never_rename_over_a_fifo_or_a_descriptor_link(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, "hello\n")
    reader.join(5)
    assert got == ["hello\n"] and fifo.is_fifo()
    assert is_special("/dev/stdout") and is_special("/dev/null") and not is_special(tmp_path / "new.json")
    with pytest.raises(DataError, match="not a regular file"), atomic_path(fifo):
        pass
    # a symlink to a regular file stays a symlink; its file gets the content
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old")
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "pipe", "real.json"]
