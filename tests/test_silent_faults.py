"""Tests written against faults that used to pass the suite silently (issue 26, item 7): each was planted by hand
once, watched to fail here, and reverted. The fault each test catches is named in its docstring."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from avdet.pipeline.operating_point import apply_operating_point, best_cut, choose_thresholds, class_thresholds
from avdet.pipeline.types import Event

AVDET = [sys.executable, "-m", "avdet"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared machine: more threads only wait
    yield
    torch.set_num_threads(before)


# -- choosing the operating point ------------------------------------------------------------------------------------
def _two_classes() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """Class 0: 6 hits at 0.8, 6 misses at 0.5; class 1: 6 hits at 0.3, 6 misses at 0.1 (ranked by score)."""
    rows = [(0, 0.8, 1)] * 6 + [(0, 0.5, 0)] * 6 + [(1, 0.3, 1)] * 6 + [(1, 0.1, 0)] * 6
    labels, scores, hits = (np.array(col) for col in zip(*rows, strict=True))
    return labels, scores.astype(float), hits.astype(bool), {0: 6, 1: 6}


def test_each_class_gets_its_own_cut_not_the_pooled_one() -> None:
    """Fault: every class given the pooled cut. Here the pooled cut (0.2, between 0.3 and 0.1) differs from class
    0's own best cut (0.65), so a class that took the pooled one would show its 6 wrong candidates at 0.5."""
    labels, scores, hits, true_events = _two_classes()
    thresholds, fallback = class_thresholds(labels, scores, hits, true_events, 2, min_events=5)
    assert thresholds == pytest.approx((0.65, 0.2))
    assert fallback == ()
    pooled, _ = best_cut(scores, hits, 12)
    assert pooled == pytest.approx(0.2) and thresholds[0] != pytest.approx(pooled)
    # a rare class (fewer true events than min_events) does take the pooled cut
    rare, fallback = class_thresholds(labels, scores, hits, true_events, 2, min_events=7)
    assert rare == pytest.approx((0.2, 0.2)) and fallback == (0, 1)


def test_a_cut_never_splits_tied_scores() -> None:
    """Fault: a cut between two equal scores. Keeping 0.9 and one of the two 0.8s would be F1 1.0, but a threshold
    keeps all of a tie: the best real cut keeps all three (F1 0.8) at the midpoint below the tie."""
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    hits = np.array([True, True, False, False])
    threshold, f1 = best_cut(scores, hits, 2)
    assert threshold == pytest.approx(0.45) and f1 == pytest.approx(0.8)
    kept = scores >= threshold
    assert 2 * (hits & kept).sum() / (kept.sum() + 2) == pytest.approx(f1)  # the F1 it reports is what it keeps


def test_calibrated_thresholds_through_choose_thresholds_are_per_class() -> None:
    """The same fault through the whole choice (suppression, matching as mAP matches)."""
    truth, cands = {}, {}
    for i in range(6):
        truth[f"v{i}"] = [(0, 0.0, 5.0), (1, 20.0, 25.0)]
        cands[f"v{i}"] = [
            Event("a", 0, 0.0, 5.0, 0.8),
            Event("a", 0, 40.0, 45.0, 0.5),
            Event("b", 1, 20.0, 25.0, 0.3),
            Event("b", 1, 60.0, 65.0, 0.1),
        ]
    database = {
        vid: {
            "subset": "validation",
            "duration": 100.0,
            "annotations": [{"label_id": k, "label": "ab"[k], "segment": [s, e]} for k, s, e in evs],
        }
        for vid, evs in truth.items()
    }
    point = choose_thresholds({"database": database}, cands, 2, "validation")
    assert point.thresholds == pytest.approx((0.65, 0.2)) and point.fallback == ()
    shown = apply_operating_point(cands["v0"], point)
    assert sorted(e.score for e in shown) == [0.3, 0.8]


# -- the events of a long video's later windows ---------------------------------------------------------------------
def _point_model():
    """The tiny LoCo with its output replaced by a point detector: class 0 fires (logit 8) exactly at the rows
    whose first visual feature is large, with offsets of one row either side; nothing else scores."""
    from test_inference import tiny_model

    model = tiny_model("tiny")
    real = model.forward

    def forward(audio, visual, mask):
        out = real(audio, visual, mask)
        hot = (visual[..., 0] > 50).float()  # (B, T) rows that hold an event
        logits = []
        for level, lg in enumerate(out.cls_logits):
            fired = torch.full_like(lg, -12.0)
            if level == 0:
                fired[..., 0] = torch.where(hot[:, : lg.shape[1]] > 0, 8.0, -12.0)
            logits.append(fired)
        offsets = [torch.ones_like(o) for o in out.offsets]
        return replace(out, cls_logits=logits, offsets=offsets)

    model.forward = forward
    return model


def _centres(model, length: int, rows: list[int]) -> list[float]:
    from test_inference import CLASSES, items

    from avdet.pipeline.data.dense import collate
    from avdet.pipeline.inference import predict
    from avdet.pipeline.postprocess import PostprocessConfig

    (video,) = items([length])
    video["visual"] = torch.zeros_like(video["visual"])
    for r in rows:
        video["visual"][r, 0] = 100.0
    cfg = PostprocessConfig(nms_method="none", duration_thresh=0.0)
    events = predict(model, [collate([video])], cfg, CLASSES)["v0"]
    return sorted((e.start + e.end) / 2 for e in events)


def test_events_of_every_window_of_a_long_video_land_on_their_rows() -> None:
    """Fault: the windows after the first shifted by a row (a start offset off by one, in the cut or in the
    shift back). A point detector fires at known rows in every window of a 300-row video (windows of 64 rows):
    each event must sit where the same row's event sits in a short, one-window video."""
    from avdet.pipeline.inference import plan_windows

    model = _point_model()
    short = _centres(model, 40, [5, 30])  # one window: row r's event centre = a + b * r
    slope = (short[1] - short[0]) / 25
    at = short[0] - 5 * slope
    rows = [3, 61, 95, 130, 170, 207, 251, 290]  # (not the last rows: events there are cut at the end)
    windows = plan_windows(300, 64, align=8)
    assert len(windows) > 4
    owners = {next(i for i, (_, lo, hi) in enumerate(windows) if lo <= r < hi) for r in rows}
    assert len(owners) >= 5, "the rows should fall in many different windows"
    got = _centres(model, 300, rows)
    assert got == pytest.approx([at + slope * r for r in rows], abs=1e-4)


# -- eval --predictions honours --split -------------------------------------------------------------------------------
@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_eval_predictions_scores_only_the_split_asked_for(tmp_path: Path) -> None:
    """Fault: `eval --predictions` scoring another split (or all of them) than --split. One test and one validation
    event; the predictions find the test one only: test scores 100, validation 0 (all splits together: 50), on
    both command paths (the fast one in entry.py and Typer's)."""
    database = {
        "t1": {"subset": "test", "duration": 20.0, "annotations": [{"label_id": 0, "label": "a", "segment": [2, 8]}]},
        "v1": {
            "subset": "validation",
            "duration": 20.0,
            "annotations": [{"label_id": 0, "label": "a", "segment": [2, 8]}],
        },
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"database": database}))
    preds = tmp_path / "preds.json"
    guess = {"label_id": 0, "label": "a", "score": 0.9}
    preds.write_text(
        json.dumps({"database": {"t1": [{**guess, "segment": [2, 8]}]}})  # (a prediction of another split's video
    )  # counts as a false positive, as in the reference evaluator: none here, so each split scores 0 or 100)
    for split, want in (("test", 100.0), ("validation", 0.0)):
        base = [*AVDET, "eval", "--predictions", str(preds), "--annotations", str(ann), "--split", split, "--json"]
        for argv in (base, [*base[:-1], "--batch-size", "1", "--json"]):  # the second goes through Typer
            res = subprocess.run(argv, capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            report = json.loads(res.stdout)
            assert 100 * report["average_mAP"] == pytest.approx(want), (argv, report)


# -- the feature store's failure records ----------------------------------------------------------------------------
def _failure(store, extractor: str, name: str) -> None:
    store.record(
        video_key=f"path:/v/{name}.mp4",
        extractor=extractor,
        video_id=name,
        path=f"/v/{name}.mp4",
        status="failed",
        reason="moov atom not found",
    )


def test_prune_keeps_failure_records_unless_asked(tmp_path: Path) -> None:
    """Fault: `cache prune --recipe/--extractor` forgetting the failure records of the recipes it keeps (the next
    extract would then retry known-bad files without a word). Only --failed forgets them."""
    from test_cache import _features

    from avdet.pipeline.cache import cache_entries, prune_cache
    from avdet.pipeline.io.store import FeatureStore

    root = tmp_path / "cache"
    store = FeatureStore(root)
    old = store.register_spec({"name": "lite", "step_s": 0.5})
    new = store.register_spec({"name": "lite", "step_s": 0.32})
    store.save("aa11", old, _features(5))
    store.record(video_key="aa11", extractor=old, video_id="v1", path="/v/v1.mp4", status="done", rows=5)
    _failure(store, new, "bad")
    report = prune_cache(root, recipes=[old])
    assert report.failed_forgotten == 0
    assert [e.video_id for e in cache_entries(root, status="failed")] == ["bad"]
    assert prune_cache(root, failed=True, dry_run=True).failed_forgotten == 1
    assert [e.video_id for e in cache_entries(root, status="failed")] == ["bad"]  # a dry run forgets nothing
    assert prune_cache(root, failed=True).failed_forgotten == 1
    assert cache_entries(root, status="failed") == []


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_a_repaired_video_leaves_no_failure_row(tmp_path: Path) -> None:
    """Fault: the old failure row of a video that failed, was repaired (same path, new content) and extracted,
    left in the index: `cache failed` would list a video that is fine, and `cache list` count it twice."""
    from avdet.pipeline.cache import cache_entries, cache_summary
    from avdet.pipeline.extract import ExtractOptions, extract_videos
    from conftest import make_clip

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated download")
    cache = tmp_path / "cache"
    (first,) = extract_videos([video], cache, ExtractOptions())
    assert first.status == "failed"
    assert [e.video_id for e in cache_entries(cache, status="failed")] == ["clip"]
    make_clip(video, 2.0)  # the user fetched the file again
    (second,) = extract_videos([video], cache, ExtractOptions())
    assert second.status == "done"
    assert cache_entries(cache, status="failed") == []
    (row,) = cache_summary(cache)
    assert (row.done, row.failed) == (1, 0)
