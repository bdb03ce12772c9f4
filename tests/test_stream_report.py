"""Telling the user whether fusion earns its second stream (pipeline/stream_report.py): chance, the one-stream
floors' verdict, and which stream drove each detected event (detect --explain-streams)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_loco_switches import build

from avdet.errors import DataError
from avdet.pipeline.io.writers import write_events
from avdet.pipeline.metrics.mean_ap import evaluate, events_to_predictions
from avdet.pipeline.stream_report import StreamReport, can_remove_streams, chance_map, explain_streams
from avdet.pipeline.types import Event, stream_driver

CLASSES = ["a", "b", "c"]


def _annotations() -> dict:
    database = {
        f"v{i}": {
            "duration": 20.0,
            "subset": "validation",
            "annotations": [{"segment": [2.0 + i, 6.0 + i], "label": CLASSES[i % 3], "label_id": i % 3}],
        }
        for i in range(6)
    }
    return {"database": database}


def test_chance_is_far_below_a_perfect_detector() -> None:
    ann = _annotations()
    chance = chance_map(ann, "validation", CLASSES)
    perfect = {
        vid: [Event(CLASSES[a["label_id"]], a["label_id"], *a["segment"], 1.0) for a in entry["annotations"]]
        for vid, entry in ann["database"].items()
    }
    assert evaluate(ann, events_to_predictions(perfect), split="validation").average_mAP > 0.99
    assert 0.0 < chance < 0.3
    assert chance == chance_map(ann, "validation", CLASSES)  # seeded: the same every time


def test_report_says_whether_fusion_beats_the_better_stream() -> None:
    ahead = StreamReport("validation", fused=0.60, audio=0.55, visual=0.20, chance=0.02).text()
    assert "beats the better single stream (audio) by 5.0" in ahead and "chance 2.0" in ahead
    behind = StreamReport("validation", fused=0.40, audio=0.30, visual=0.45, chance=0.02).text()
    assert "does NOT beat the better single stream (visual): -5.0" in behind


def test_only_a_two_stream_model_trained_with_modality_dropout_can_be_scored_one_stream_alone() -> None:
    def ckpt(model):
        return SimpleNamespace(model=model, modality=model.cfg.modality)

    assert can_remove_streams(ckpt(build(modality_dropout=0.5))) is None
    assert "modality dropout" in can_remove_streams(ckpt(build()))
    assert "no second stream" in can_remove_streams(ckpt(build(modality="audio", lcf="none")))


def _fake_candidates(ckpt, feats, device) -> dict[str, list[Event]]:
    """Candidates as a LoCo would give them: what it finds depends on which stream was removed."""
    removed = ckpt.model.removed_stream
    found = {
        None: [Event("a", 0, 1.0, 5.0, 0.9), Event("b", 1, 8.0, 12.0, 0.8)],
        "visual": [Event("a", 0, 1.2, 5.1, 0.85), Event("b", 1, 8.0, 12.0, 0.1)],  # audio alone
        "audio": [Event("a", 0, 1.0, 5.0, 0.2), Event("b", 1, 14.0, 18.0, 0.7)],  # visual alone; b elsewhere
    }[removed]
    return {"v0": found}


def test_explain_streams_scores_each_event_with_one_stream_and_says_which_drove_it() -> None:
    model = build(modality_dropout=0.5)
    ckpt = SimpleNamespace(model=model, modality="audio_visual")
    shown = {"v0": _fake_candidates(ckpt, [], "cpu")["v0"]}
    out = explain_streams(_fake_candidates, ckpt, [], shown, "cpu")["v0"]
    assert model.removed_stream is None  # restored
    assert out[0].streams == (0.85, 0.2) and out[1].streams == (0.1, 0.0)  # b is not found by the visual alone
    buf = io.StringIO()
    write_events(buf, "json", video="v0.mp4", duration=20.0, model="m", events=out)
    events = {e["label"]: e for e in json.loads(buf.getvalue())["events"]}
    assert events["a"]["streams"] == {"audio": 0.85, "visual": 0.2, "driven_by": "audio"}
    assert events["b"]["streams"]["driven_by"] == "both"  # neither stream alone keeps half of 0.8
    plain = io.StringIO()
    write_events(plain, "json", video="v0.mp4", duration=20.0, model="m", events=shown["v0"])
    assert all("streams" not in e for e in json.loads(plain.getvalue())["events"])  # optional field


def test_stream_driver() -> None:
    assert stream_driver(0.8, 0.7, 0.1) == "audio"
    assert stream_driver(0.8, 0.1, 0.5) == "visual"
    assert stream_driver(0.8, 0.3, 0.3) == "both"


@pytest.mark.slow
def test_detect_refuses_explain_streams_without_modality_dropout(trained_run: Path, sample_set) -> None:
    from avdet.pipeline.detect import Detector

    with pytest.raises(DataError, match="modality dropout"):
        Detector(trained_run / "best.ckpt", cache=sample_set.cache, explain_streams=True)


@pytest.mark.slow
def test_trained_with_modality_dropout_reports_floors_and_explains_events(sample_set, tmp_path: Path) -> None:
    """End to end: the trainer switches LCF on at lcf_start_epoch, the run's stream report scores each stream
    alone against chance, and detect explains its events."""
    from avdet.pipeline.config import load_config
    from avdet.pipeline.detect import Detector
    from avdet.pipeline.stream_report import stream_report
    from avdet.pipeline.train import train

    overrides = sample_set.overrides(
        train__warmup_epochs=1, train__epochs=2, train__eval_start=0, model__modality_dropout=0.5
    )
    cfg = load_config("tiny", [*overrides, "model.lcf_start_epoch=2"])
    result = train(cfg, tmp_path / "run")
    lcf = [h["loss_lcf"] for h in result.history]
    assert lcf[0] == 0 and lcf[1] == 0 and lcf[2] > 0  # the trainer calls set_epoch: LCF from epoch 2 on
    report = stream_report(tmp_path / "run" / "best.ckpt")
    assert 0 <= report.chance < 0.2 and {report.fused, report.audio, report.visual} != {report.fused}
    from avdet import cli

    cli._print_stream_report(tmp_path / "run")  # what `avdet train` ends with
    written = json.loads((tmp_path / "run" / "streams.json").read_text())
    assert written["fused"] == report.fused and "better single stream" in written["summary"]
    video = sorted((sample_set.root / "videos").glob("*.mp4"))[0]
    events = Detector(tmp_path / "run" / "best.ckpt", cache=sample_set.cache, threshold=0.0).detect(video).events
    explained = (
        Detector(tmp_path / "run" / "best.ckpt", cache=sample_set.cache, threshold=0.0, explain_streams=True)
        .detect(video)
        .events
    )
    assert [(e.label, e.start, e.score) for e in explained] == [(e.label, e.start, e.score) for e in events]
    assert all(e.streams is not None and len(e.streams) == 2 for e in explained) and explained
