"""UnAV-100 mAP: the published reference numbers, a loop-by-loop transcription as oracle, and input validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avdet.errors import DataError
from avdet.pipeline.data.annotations import load_annotations
from avdet.pipeline.metrics.mean_ap import (
    DEFAULT_TIOU,
    argsort_numpy123,
    evaluate,
    events_to_predictions,
    load_predictions,
)
from avdet.pipeline.types import Event


# -- oracle: ANETdetection.compute_average_precision_detection as loops -------------------------------------------
def _stable_argsort(v: np.ndarray) -> np.ndarray:
    return np.argsort(v, kind="stable")


def _oracle_ap(gt: list[tuple], preds: list[tuple], thresholds: np.ndarray, argsort=_stable_argsort) -> np.ndarray:
    """gt: (video, start, end); preds: (video, start, end, score) of one class, in file order."""
    ap = np.zeros(len(thresholds))
    if not preds:
        return ap
    # the reference's argsort()[::-1]; ties as `argsort` orders them (default: a stable sort reversed)
    order = argsort(np.array([p[3] for p in preds]))[::-1]
    preds = [preds[i] for i in order]
    lock = np.full((len(thresholds), len(gt)), -1)
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros((len(thresholds), len(preds)))
    for idx, (vid, ps, pe, _) in enumerate(preds):
        mine = [j for j, g in enumerate(gt) if g[0] == vid]
        if not mine:
            fp[:, idx] = 1
            continue
        gs = np.array([gt[j][1] for j in mine])
        ge = np.array([gt[j][2] for j in mine])
        inter = (np.minimum(pe, ge) - np.maximum(ps, gs)).clip(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            tiou = inter / ((ge - gs) + (pe - ps) - inter)
        for t, thr in enumerate(thresholds):
            for jdx in argsort(tiou)[::-1]:
                if tiou[jdx] < thr:
                    fp[t, idx] = 1
                    break
                if lock[t, mine[jdx]] >= 0:
                    continue
                tp[t, idx] = 1
                lock[t, mine[jdx]] = idx
                break
            if fp[t, idx] == 0 and tp[t, idx] == 0:
                fp[t, idx] = 1
    tp_c, fp_c = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    for t in range(len(thresholds)):
        rec, prec = tp_c[t] / len(gt), tp_c[t] / (tp_c[t] + fp_c[t])
        mprec = np.hstack([[0], prec, [0]])
        mrec = np.hstack([[0], rec, [1]])
        for i in range(len(mprec) - 1)[::-1]:
            mprec[i] = max(mprec[i], mprec[i + 1])
        changed = np.where(mrec[1:] != mrec[:-1])[0] + 1
        ap[t] = np.sum((mrec[changed] - mrec[changed - 1]) * mprec[changed])
    return ap


def _oracle_map(annotations: dict, predictions: dict, split: str, argsort=_stable_argsort) -> np.ndarray:
    gt_by_class: dict[int, list] = {}
    for vid, v in annotations["database"].items():
        if v["subset"] != split:
            continue
        kept: list[tuple] = []
        for a in v["annotations"]:
            s, e, lab = a["segment"][0], a["segment"][1], a["label_id"]
            if not any(abs(s - k[0]) <= 1e-3 and abs(e - k[1]) <= 1e-3 and lab == k[2] for k in kept):
                kept.append((s, e, lab))
        for s, e, lab in kept:
            gt_by_class.setdefault(lab, []).append((vid, s, e))
    pred_by_class: dict[int, list] = {}
    for vid, ps in predictions["database"].items():
        for p in ps:
            pred_by_class.setdefault(p["label_id"], []).append((vid, *p["segment"], p["score"]))
    aps = [_oracle_ap(gt_by_class[c], pred_by_class.get(c, []), DEFAULT_TIOU, argsort) for c in sorted(gt_by_class)]
    return np.mean(aps, axis=0)


def _random_dataset(rng: np.random.Generator, n_videos: int, n_cls: int, ties: bool):
    db, preds = {}, {}
    for v in range(n_videos):
        vid = f"-v{v}"  # ids starting with "-" exist in UnAV-100
        anns = []
        for _ in range(int(rng.integers(1, 5))):
            s = float(np.round(rng.uniform(0, 40), 2))
            anns.append(
                {"segment": [s, s + float(np.round(rng.uniform(0.5, 15), 2))], "label_id": int(rng.integers(n_cls))}
            )
        if rng.random() < 0.3:
            anns.append(dict(anns[0], segment=[anns[0]["segment"][0] + 5e-4, anns[0]["segment"][1]]))  # duplicate
        db[vid] = {"duration": 60.0, "subset": "test" if v % 5 else "train", "annotations": anns}
        rows = []
        for _ in range(int(rng.integers(0, 12))):
            if anns and rng.random() < 0.6:  # near a true event
                a = anns[int(rng.integers(len(anns)))]
                s = max(0.0, a["segment"][0] + float(rng.normal(0, 1.5)))
                e = max(s, a["segment"][1] + float(rng.normal(0, 1.5)))
                lab = a["label_id"] if rng.random() < 0.8 else int(rng.integers(n_cls))
            else:
                s = float(rng.uniform(0, 50))
                e, lab = s + float(rng.uniform(0.1, 10)), int(rng.integers(n_cls))
            score = float(np.round(rng.random(), 1)) if ties else float(rng.random())
            rows.append({"segment": [s, e], "label_id": lab, "score": score})
        preds[vid] = rows
    return {"database": db}, {"database": preds}


# -- the published reference numbers --------------------------------------------------------------------------------
@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_reproduces_reference_evaluator_on_unav100_test(golden_dir, shared_data_dir):
    ann = load_annotations(shared_data_dir / "unav100_annotations.json")
    preds = load_predictions(golden_dir / "eval_predictions.json", ann)
    expected = json.loads((golden_dir / "eval_expected.json").read_text())
    result = evaluate(ann, preds, split="test", tie_order="stable")  # the fixture was made under numpy 2.x
    np.testing.assert_allclose(result.tiou_thresholds, expected["tiou_thresholds"], atol=1e-12)
    np.testing.assert_allclose(result.mAP, expected["mAP"], rtol=0, atol=1e-6)
    assert result.average_mAP == pytest.approx(expected["average_mAP"], abs=1e-6)
    assert result.ap.shape == (9, 100) and result.class_ids.tolist() == list(range(100))
    assert result.as_dict() == {
        "tiou_thresholds": [float(t) for t in result.tiou_thresholds],
        "mAP": [float(m) for m in result.mAP],
        "average_mAP": result.average_mAP,
    }
    # the reference reads "scores"; the raw (unvalidated) dicts work too, wrapped or not
    raw = json.loads((golden_dir / "eval_predictions.json").read_text())
    renamed = {vid: [{**p, "scores": p.pop("score")} for p in ps] for vid, ps in raw["database"].items()}
    np.testing.assert_array_equal(evaluate(ann, {"results": renamed}, tie_order="stable").mAP, result.mAP)
    np.testing.assert_array_equal(evaluate(ann, renamed, tie_order="stable").mAP, result.mAP)


# -- oracle and hand-computed cases ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ties", [False, True])
def test_matches_loop_transcription_of_the_reference(ties):
    rng = np.random.default_rng(7 if ties else 8)
    for _ in range(6):
        ann, preds = _random_dataset(rng, n_videos=25, n_cls=4, ties=ties)
        got = evaluate(ann, preds, split="test", tie_order="stable")
        np.testing.assert_allclose(got.mAP, _oracle_map(ann, preds, "test"), rtol=0, atol=1e-12)


def test_matches_loop_transcription_with_numpy123_ties():
    """The default order: the transcription with numpy 1.23's argsort (checked against numpy 1.23.5 itself by
    benchmarks/bench_eval.py --check-argsort) gives the same numbers; the stable order does not, on these ties."""
    rng = np.random.default_rng(17)
    differs = 0
    for _ in range(6):
        ann, preds = _random_dataset(rng, n_videos=40, n_cls=2, ties=True)
        got = evaluate(ann, preds, split="test")
        np.testing.assert_allclose(got.mAP, _oracle_map(ann, preds, "test", argsort_numpy123), rtol=0, atol=1e-12)
        differs += not np.allclose(got.mAP, evaluate(ann, preds, split="test", tie_order="stable").mAP, atol=1e-12)
    assert differs > 0


def _single(preds: list[dict], anns: list[dict] | None = None) -> tuple[dict, dict]:
    anns = anns or [{"segment": [0.0, 10.0], "label_id": 0}, {"segment": [20.0, 30.0], "label_id": 0}]
    return {"database": {"v": {"duration": 40.0, "subset": "test", "annotations": anns}}}, {"database": {"v": preds}}


def test_hand_computed_average_precision():
    ann, preds = _single(
        [
            {"segment": [0.0, 10.0], "label_id": 0, "score": 0.9},  # tIoU 1 with the first event
            {"segment": [0.0, 9.0], "label_id": 0, "score": 0.8},  # the first event is taken: false positive
            {"segment": [22.0, 30.0], "label_id": 0, "score": 0.7},  # tIoU 0.8 with the second event
        ]
    )
    result = evaluate(ann, preds)
    # tIoU <= 0.8: recall 0.5, 0.5, 1 / precision 1, 0.5, 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3; at 0.9: AP = 0.5 * 1
    want = np.array([0.5 + 0.5 * 2 / 3] * 8 + [0.5])
    np.testing.assert_allclose(result.mAP, want, rtol=0, atol=1e-12)
    assert result.average_mAP == pytest.approx(want.mean(), abs=1e-12)


def test_greedy_matching_prefers_the_best_overlap_and_each_event_once():
    anns = [{"segment": [0.0, 10.0], "label_id": 0}, {"segment": [2.0, 12.0], "label_id": 0}]
    # the prediction overlaps [2, 12] best (tIoU 1) and must take it, leaving [0, 10] for the second one
    ann, preds = _single(
        [
            {"segment": [2.0, 12.0], "label_id": 0, "score": 0.9},
            {"segment": [0.5, 10.0], "label_id": 0, "score": 0.5},
        ],
        anns,
    )
    assert evaluate(ann, preds).mAP[:8] == pytest.approx([1.0] * 8)


def test_duplicates_absent_classes_other_splits_and_empty_predictions():
    anns = [
        {"segment": [0.0, 10.0], "label_id": 2},
        {"segment": [0.0005, 10.0005], "label_id": 2},  # a duplicate within 1e-3 s: dropped
        {"segment": [0.0, 10.0], "label_id": 0},  # same segment, other class: kept
    ]
    ann, preds = _single([{"segment": [0.0, 10.0], "label_id": 2, "score": 0.9}], anns)
    ann["database"]["w"] = {"duration": 9.0, "subset": "train", "annotations": [{"segment": [0, 5], "label_id": 1}]}
    result = evaluate(ann, preds)
    assert result.class_ids.tolist() == [0, 2]  # class 1 is only in the train split
    np.testing.assert_allclose(result.ap, [[0.0, 1.0]] * 9)  # the duplicate would have halved class 2's recall
    # a prediction on a video of another split is a false positive
    preds["database"]["w"] = [{"segment": [0.0, 10.0], "label_id": 2, "score": 0.95}]
    assert evaluate(ann, preds).ap[0, 1] == pytest.approx(0.5)
    assert evaluate(ann, {"database": {}}).average_mAP == 0.0
    with pytest.raises(DataError, match="no ground-truth events in split 'validation'"):
        evaluate(ann, preds, split="validation")


def test_events_to_predictions_round_trip():
    events = {"v": [Event("dog", 0, 0.0, 10.0, 0.9), Event("dog", 0, 22.0, 30.0, 0.7)]}
    doc = events_to_predictions(events)
    assert doc["database"]["v"][0] == {"segment": [0.0, 10.0], "label_id": 0, "label": "dog", "score": 0.9}
    ann, _ = _single([])
    assert evaluate(ann, doc).mAP[0] == pytest.approx(1.0)


# -- validation ---------------------------------------------------------------------------------------------------
def _write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    ("pred", "message"),
    [
        ({"segment": [-1.0, 2.0], "label_id": 0, "score": 0.5}, "negative segment start -1.0"),
        ({"segment": [5.0, 2.0], "label_id": 0, "score": 0.5}, r"reversed segment \[5.0, 2.0\]"),
        ({"segment": [1.0], "label_id": 0, "score": 0.5}, "segment must be"),
        ({"segment": [1.0, "x"], "label_id": 0, "score": 0.5}, "segment must be"),
        ({"segment": [1.0, 2.0], "label_id": 0, "score": math.nan}, "score must be a finite number, not nan"),
        ({"segment": [1.0, 2.0], "label_id": 0}, "score must be a finite number, not None"),
        ({"segment": [1.0, 2.0], "label_id": 3, "score": 0.5}, r"label_id 3 out of range 0\.\.2"),
        ({"segment": [1.0, 2.0], "label_id": -1, "score": 0.5}, "label_id -1 out of range"),
        ({"segment": [1.0, 2.0], "label_id": 1.5, "score": 0.5}, "label_id 1.5 out of range"),
        ("not an object", "expected an object"),
    ],
)
def test_bad_predictions_are_one_line_errors_naming_the_file(tmp_path, pred, message):
    anns = [{"segment": [0.0, 10.0], "label_id": 0}, {"segment": [0.0, 10.0], "label_id": 2}]
    ann, _ = _single([], anns)
    path = _write(tmp_path, "preds.json", {"database": {"v": [pred]}})
    with pytest.raises(DataError, match=message) as err:
        load_predictions(path, ann)
    assert str(err.value).startswith(f"{path}: video 'v' prediction 0: ") and "\n" not in str(err.value)


def test_bad_prediction_files(tmp_path):
    ann, _ = _single([])
    cases = [
        ({"database": {"nope": []}}, "unknown video id 'nope'"),
        ({"database": {"v": {}}}, "expected a list of predictions"),
        ({"database": [1]}, '"database" must map video ids'),
        ([1, 2], "expected the UnAV-100 results format"),
        ("{broken", "not valid JSON"),
        ('{"database": {"v": [{"segment": [0, NaN], "label_id": 0, "score": 1}]}}', "segment must be"),
    ]
    for data, message in cases:
        path = _write(tmp_path, "p.json", data)
        with pytest.raises(DataError, match=message) as err:
            load_predictions(path, ann)
        assert str(err.value).startswith(path) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="predictions file not found"):
        load_predictions(tmp_path / "missing.json", ann)
    # label ids are checked against num_classes when given (a model's class count)
    ok = _write(tmp_path, "ok.json", {"database": {"v": [{"segment": [0, 1], "label_id": 50, "scores": 0.5}]}})
    assert load_predictions(ok, ann, num_classes=100)["v"][0] == {"segment": [0.0, 1.0], "label_id": 50, "score": 0.5}


def test_bad_annotation_files(tmp_path):
    cases = [
        ({"version": 1}, 'a "database" mapping'),
        ({"database": {"v": {"annotations": []}}}, 'missing "subset"'),
        ({"database": {"v": {"subset": "test", "annotations": [{"segment": [3, 1], "label_id": 0}]}}}, "reversed"),
        ({"database": {"v": {"subset": "test", "annotations": [{"segment": [0, 1], "label_id": "a"}]}}}, "label_id"),
        ({"database": {"v": {"subset": "test", "duration": -1}}}, "duration must be"),
    ]
    for data, message in cases:
        path = _write(tmp_path, "ann.json", data)
        with pytest.raises(DataError, match=message) as err:
            load_annotations(path)
        assert str(err.value).startswith(path) and "\n" not in str(err.value)


# -- the reference's tie order under numpy < 1.24 ------------------------------------------------------------------
@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_reproduces_reference_evaluator_under_numpy123(golden_dir, shared_data_dir):
    """eval_expected_numpy123.json: the reference as it runs under the numpy it requires; avdet's default order."""
    ann = load_annotations(shared_data_dir / "unav100_annotations.json")
    preds = load_predictions(golden_dir / "eval_predictions.json", ann)
    expected = json.loads((golden_dir / "eval_expected_numpy123.json").read_text())
    result = evaluate(ann, preds, split="test")
    np.testing.assert_allclose(result.mAP, expected["mAP"], rtol=0, atol=1e-8)
    assert result.average_mAP == pytest.approx(expected["average_mAP"], abs=1e-8)
    stable = evaluate(ann, preds, split="test", tie_order="stable")
    assert np.abs(stable.mAP - np.asarray(expected["mAP"])).max() > 1e-7  # the tie order shows in these numbers


def test_argsort_numpy123_hand_checked():
    # 17 equal values: one partition (pivot = middle, parked at 15; the scans swap places 1..7 with 14..8 and the
    # pivot lands at 8), then insertion sorts of both halves; numpy 1.23.5 gives exactly this
    np.testing.assert_array_equal(
        argsort_numpy123(np.ones(17)), [0, 14, 13, 12, 11, 10, 9, 15, 8, 6, 5, 4, 3, 2, 1, 7, 16]
    )
    np.testing.assert_array_equal(  # numpy 1.23.5's np.array([1., 0.] * 9).argsort()
        argsort_numpy123(np.array([1.0, 0.0] * 9)), [17, 1, 15, 3, 5, 13, 7, 9, 11, 14, 12, 0, 16, 6, 4, 2, 10, 8]
    )
    np.testing.assert_array_equal(  # numpy 1.23.5's np.full(20, 0.5).argsort()
        argsort_numpy123(np.full(20, 0.5)), [0, *range(17, 0, -1), 18, 19]
    )
    for v in (np.ones(17), np.array([1.0, 0.0] * 9), np.full(20, 0.5)):
        assert not np.array_equal(argsort_numpy123(v), np.argsort(v, kind="stable"))  # a stable sort fails here
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 16, 17, 100, 1000):  # always a sorting permutation; up to 16 elements an insertion sort
        v = np.round(rng.random(n), 1)
        order = argsort_numpy123(v)
        assert sorted(order.tolist()) == list(range(n)) and np.all(np.diff(v[order]) >= 0)
        if n <= 16:
            np.testing.assert_array_equal(order, np.argsort(v, kind="stable"))


def test_numpy123_order_also_ranks_equal_tious():
    """18 ground truths of one class (more than numpy's insertion-sort size): the first prediction has tIoU 0.1
    with the first five. numpy 1.23's tiou.argsort()[::-1] prefers ground truth 0 (a stable order: 4), so the second
    prediction, exactly ground truth 0, is a false positive at tIoU 0.1 under the reference's order."""
    anns = [{"segment": [10.0 * i, 10.0 * i + 5], "label_id": 0} for i in range(18)]
    ann, preds = _single(
        [
            {"segment": [0.0, 50.0], "label_id": 0, "score": 0.9},
            {"segment": [0.0, 5.0], "label_id": 0, "score": 0.8},
        ],
        anns,
    )
    ref = evaluate(ann, preds, split="test")
    stable = evaluate(ann, preds, split="test", tie_order="stable")
    assert ref.ap[0, 0] == pytest.approx(1 / 18) and stable.ap[0, 0] == pytest.approx(2 / 18)
    np.testing.assert_allclose(ref.ap[1:, 0], 1 / 36)
    np.testing.assert_allclose(stable.ap[1:, 0], 1 / 36)
    with pytest.raises(ValueError, match="tie_order"):
        evaluate(ann, preds, tie_order="numpy2")


def test_annotation_check_at_once_agrees_with_the_walk():
    """The numpy check of a split's events (`_all_valid`) passes exactly what the one-by-one walk passes: each bad
    case is left to the walk, which names it; first problems come in file order."""
    from avdet.pipeline.data.annotations import _all_valid, validate_annotations

    def db(*events, duration=10.0):
        train = {"subset": "train", "annotations": [{"segment": [5, 1], "label_id": 0}]}
        return {"database": {"a": train, "v": {"subset": "test", "duration": duration, "annotations": list(events)}}}

    good = [
        {"segment": [0, 1.5], "label_id": 3},
        {"segment": (2, 2), "label_id": 4.0},
        {"segment": [0, 1], "label_id": 0},
    ]
    assert _all_valid(db(*good)["database"], "test")
    assert validate_annotations(db(*good), split="test")  # the bad train event is not read for the test split
    assert not _all_valid(db(*good)["database"], None)
    bad = [
        ({"segment": [0, 1], "label_id": math.inf}, "label_id"),
        ({"segment": [0, 1], "label_id": 1.5}, "label_id"),
        ({"segment": [0, 1], "label_id": True}, "label_id"),
        ({"segment": [0, 1], "label_id": -1}, "label_id"),
        ({"segment": [0, 1], "label_id": 10**400}, None),  # beyond float range, yet a valid integer id
        ({"segment": [0, 1, 2], "label_id": 0}, "segment must be"),
        ({"segment": [0, math.nan], "label_id": 0}, "segment must be"),
        ({"segment": [False, 1], "label_id": 0}, "segment must be"),
        ({"segment": [-0.5, 1], "label_id": 0}, "negative segment start"),
        ({"label_id": 0}, "segment must be"),
        ("event", "expected an object"),
    ]
    for event, message in bad:
        assert not _all_valid(db(*good, event)["database"], "test"), event
        if message is None:
            assert validate_annotations(db(*good, event), split="test")
        else:
            with pytest.raises(DataError, match=message):
                validate_annotations(db(*good, event), split="test")
    for duration in (-1.0, math.inf, "10", None):
        assert not _all_valid(db(*good, duration=duration)["database"], "test")
    two = {"u": {"subset": "test", "annotations": [{"segment": [2, 1], "label_id": 0}]}, "v": {"subset": "test"}}
    two["v"]["duration"] = -1.0
    with pytest.raises(DataError, match="video 'u' event 0: reversed"):  # the first problem in file order
        validate_annotations({"database": two}, split="test")
