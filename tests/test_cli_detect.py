"""`avdet detect`, `avdet eval` and `avdet plot` end to end on a tiny trained model, and their bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avdet.cli import app
from conftest import SampleSet

runner = CliRunner()


def _test_videos(sample_set: SampleSet) -> list[Path]:
    db = json.loads(sample_set.annotations.read_text())["database"]
    ids = sorted(v for v, item in db.items() if item["subset"] == "test")
    return [sample_set.root / "videos" / f"{v}.mp4" for v in ids]


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_detect_writes_json_srt_vtt_and_plot(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    video = _test_videos(sample_set)[0]
    ckpt = trained_run / "best.ckpt"
    res = _invoke(
        "detect",
        video,
        "--checkpoint",
        ckpt,
        "--cache",
        sample_set.cache,
        "--out",
        tmp_path / "events.json",
        "--plot",
        tmp_path / "timeline.png",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "events.json").read_text())
    assert doc["video"] == video.stem and doc["model"] == "loco" and doc["duration"] > 5
    starts = [e["start"] for e in doc["events"]]
    assert doc["events"] and starts == sorted(starts)
    assert all(0 <= e["start"] < e["end"] <= doc["duration"] + 1e-6 for e in doc["events"])
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    # The file holds the library's events for this video (above the checkpoint's threshold), not just some events.
    from avdet.pipeline.detect import Detector

    detector = Detector(ckpt, cache=sample_set.cache)
    (det,) = detector.detect([video])
    threshold = detector.checkpoint.postprocess.output_threshold
    want = sorted(
        (e.label_id, round(e.start, 3), round(e.end, 3), round(e.score, 4)) for e in det.events if e.score >= threshold
    )
    got = sorted((e["label_id"], round(e["start"], 3), round(e["end"], 3), round(e["score"], 4)) for e in doc["events"])
    assert got == want
    for fmt in ("srt", "vtt"):
        res = _invoke(
            "detect", video, "--checkpoint", ckpt, "--cache", sample_set.cache, "--out", tmp_path / f"events.{fmt}"
        )
        assert res.exit_code == 0, res.output
    assert (tmp_path / "events.vtt").read_text().startswith("WEBVTT")
    assert "00:00:" in (tmp_path / "events.srt").read_text()
    res = _invoke(
        "plot", tmp_path / "events.json", "--out", tmp_path / "gt.png", "--annotations", sample_set.annotations
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "gt.png").is_file()


def test_detect_several_videos_to_a_folder_and_batched_equals_single(
    trained_run: Path, sample_set: SampleSet, tmp_path: Path
) -> None:
    videos = _test_videos(sample_set)[:3]
    ckpt = trained_run / "best.ckpt"
    for name, batch in (("single", 1), ("batched", 3)):
        res = _invoke(
            "detect",
            *videos,
            "--checkpoint",
            ckpt,
            "--cache",
            sample_set.cache,
            "--out",
            tmp_path / name,
            "--batch-size",
            batch,
        )
        assert res.exit_code == 0, res.output
    for v in videos:
        a = json.loads((tmp_path / "single" / f"{v.stem}.json").read_text())["events"]
        b = json.loads((tmp_path / "batched" / f"{v.stem}.json").read_text())["events"]
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x["label_id"] == y["label_id"]
            assert x["start"] == pytest.approx(y["start"], abs=1e-4)
            assert x["end"] == pytest.approx(y["end"], abs=1e-4)
            assert x["score"] == pytest.approx(y["score"], abs=1e-5)


def test_detect_bad_video_in_batch_others_go_on(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    good = _test_videos(sample_set)[0]
    res = _invoke(
        "detect",
        bad,
        good,
        "--checkpoint",
        trained_run / "best.ckpt",
        "--cache",
        sample_set.cache,
        "--out",
        tmp_path / "out",
    )
    assert res.exit_code == 1
    assert "bad.mp4" in res.output
    assert (tmp_path / "out" / f"{good.stem}.json").is_file()
    assert not (tmp_path / "out" / "bad.json").exists()


@pytest.mark.parametrize("out", ["x.txt", "a_file/x.json"])
def test_detect_bad_output_path(trained_run: Path, sample_set: SampleSet, tmp_path: Path, out: str) -> None:
    (tmp_path / "a_file").write_text("")  # a file where the output folder would go (a missing folder is created)
    video = _test_videos(sample_set)[0]
    res = _invoke("detect", video, "--checkpoint", trained_run / "best.ckpt", "--out", tmp_path / out)
    assert res.exit_code != 0
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not list(tmp_path.rglob("x.*"))


def test_detect_not_a_checkpoint(sample_set: SampleSet, tmp_path: Path) -> None:
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"\x00" * 100)
    res = _invoke("detect", _test_videos(sample_set)[0], "--checkpoint", fake)
    assert res.exit_code != 0 and "fake.ckpt" in res.output


def test_eval_checkpoint_prints_table_and_writes_json(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    res = _invoke(
        "eval",
        "--checkpoint",
        trained_run / "best.ckpt",
        "--split",
        "test",
        "--json",
        tmp_path / "m.json",
        "--save-predictions",
        tmp_path / "p.json",
    )
    assert res.exit_code == 0, res.output
    assert "Avg." in res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["mAP"]) == 9 and metrics["tiou_thresholds"][0] == pytest.approx(0.1)
    assert 0.0 < metrics["average_mAP"] <= 1.0
    preds = json.loads((tmp_path / "p.json").read_text())
    assert preds["database"]
    # The printed/saved scores are the evaluator's on the saved predictions, not just well-formed numbers.
    from avdet.pipeline.data.annotations import load_annotations
    from avdet.pipeline.metrics.mean_ap import evaluate

    direct = evaluate(load_annotations(sample_set.annotations), preds, split="test")
    # (the JSON rounds to 6 decimals: no float noise)
    assert metrics["average_mAP"] == pytest.approx(direct.average_mAP, abs=5e-7)
    assert metrics["mAP"] == pytest.approx(list(direct.mAP), abs=5e-7)


def test_eval_checkpoint_beats_untrained_model(trained_run: Path, tmp_path: Path) -> None:
    from avdet.pipeline.evaluate import evaluate_checkpoint

    trained = evaluate_checkpoint(trained_run / "best.ckpt", split="test").result
    ckpt = torch.load(trained_run / "best.ckpt", map_location="cpu", weights_only=True)
    from avdet.pipeline.checkpoint import build_model_from, save_checkpoint

    torch.manual_seed(0)
    model, _ = build_model_from(ckpt["model"])
    ckpt["state_dict"] = model.state_dict()
    for key in ("format", "version", "avdet_version"):
        ckpt.pop(key)
    save_checkpoint(tmp_path / "untrained.ckpt", ckpt)
    untrained = evaluate_checkpoint(tmp_path / "untrained.ckpt", split="test").result
    # Measured: trained 0.498, untrained 0.019 (test Avg. mAP); bands so that half the trained mAP fails.
    assert 0.44 < trained.average_mAP < 0.56 and untrained.average_mAP < 0.1, (
        trained.average_mAP,
        untrained.average_mAP,
    )


def test_eval_predictions_golden(golden_dir: Path, shared_data_dir: Path, tmp_path: Path) -> None:
    res = _invoke(
        "eval",
        "--predictions",
        golden_dir / "eval_predictions.json",
        "--annotations",
        shared_data_dir / "unav100_annotations.json",
        "--split",
        "test",
        "--json",
        tmp_path / "m.json",
    )
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "m.json").read_text())
    want = json.loads((golden_dir / "eval_expected.json").read_text())
    want_avg = want.get("average_mAP", want.get("avg_mAP"))
    assert got["average_mAP"] == pytest.approx(want_avg, abs=1e-6)


def test_eval_bad_predictions_file(sample_set: SampleSet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"database": {"no-such-video": [{"segment": [1, 2], "label_id": 0, "score": 0.5}]}}))
    res = _invoke("eval", "--predictions", bad, "--annotations", sample_set.annotations)
    assert res.exit_code != 0 and "bad.json" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


# -- the operating point, the Python API, streams and round trips -------------------------------------------------
def _rows(events: list[dict]) -> list[tuple]:
    return [(e["label"], e["label_id"], e["start"], e["end"], e["score"]) for e in events]


def test_python_api_gives_the_cli_events(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    import avdet
    from avdet.pipeline.io.writers import events_document

    video, ckpt = _test_videos(sample_set)[0], trained_run / "best.ckpt"
    for name, options, flags in (("default", {}, []), ("global", {"threshold": 0.2}, ["--threshold", "0.2"])):
        res = _invoke(
            "detect",
            video,
            "--checkpoint",
            ckpt,
            "--cache",
            sample_set.cache,
            "--out",
            tmp_path / f"{name}.json",
            *flags,
        )
        assert res.exit_code == 0, res.output
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        events = avdet.load(ckpt, cache=sample_set.cache, **options).detect(video).events
        assert _rows(doc["events"]) == _rows(events_document("v", 1.0, "m", events)["events"])
    point = json.loads((tmp_path / "default.json").read_text())["operating_point"]
    classes = torch.load(ckpt, weights_only=True)["classes"]
    assert point["mode"] == "calibrated" and point["split"] == "validation" and list(point["thresholds"]) == classes
    assert json.loads((tmp_path / "global.json").read_text())["operating_point"]["thresholds"] == dict.fromkeys(
        classes, 0.2
    )
    every = avdet.load(ckpt, cache=sample_set.cache, all_events=True).detect(video).events
    shown = avdet.load(ckpt, cache=sample_set.cache).detect(video).events
    assert len(every) > len(shown) and set(shown) <= set(every)
    assert all(e.score >= point["thresholds"][e.label] for e in shown)


def test_detect_to_standard_output(trained_run: Path, sample_set: SampleSet, tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    video, ckpt = _test_videos(sample_set)[0], trained_run / "best.ckpt"
    common = (video, "--checkpoint", ckpt, "--cache", sample_set.cache)
    res = _invoke("detect", *common, "--out", "-")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["video"] == video.stem
    res = _invoke("detect", *common, "--format", "srt")
    assert res.exit_code == 0 and res.stdout.startswith("1\n00:00:"), res.stdout
    several = _invoke(
        "detect", *_test_videos(sample_set)[:2], "--checkpoint", ckpt, "--cache", sample_set.cache, "--out", "-"
    )
    assert [json.loads(line)["video"] for line in several.stdout.splitlines()] == [
        v.stem for v in _test_videos(sample_set)[:2]
    ]
    assert list(tmp_path.iterdir()) == []  # no file named "-"
    # /dev/stdout is a link to this process's descriptor: written in place, never renamed over
    cmd = [sys.executable, "-m", "avdet", "detect", *map(str, common), "--out", "/dev/stdout", "--format", "vtt"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("WEBVTT") and Path("/dev/stdout").is_symlink()


def test_detect_json_evaluates_like_the_checkpoint(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    ckpt = trained_run / "best.ckpt"
    videos = _test_videos(sample_set)
    res = _invoke(
        "detect", *videos, "--checkpoint", ckpt, "--cache", sample_set.cache, "--all", "--out", tmp_path / "all"
    )
    assert res.exit_code == 0, res.output
    res = _invoke(
        "eval",
        "--predictions",
        tmp_path / "all",
        "--annotations",
        sample_set.annotations,
        "--json",
        tmp_path / "a.json",
    )
    assert res.exit_code == 0, res.output
    res = _invoke(
        "eval", "--checkpoint", ckpt, "--json", tmp_path / "b.json", "--save-predictions", tmp_path / "p.json"
    )
    assert res.exit_code == 0, res.output
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["average_mAP"] == pytest.approx(b["average_mAP"], abs=1e-12) and a["mAP"] == pytest.approx(
        b["mAP"], abs=1e-12
    )
    one = tmp_path / "all" / f"{videos[0].stem}.json"
    res = _invoke("eval", "--predictions", one, "--annotations", sample_set.annotations)
    assert res.exit_code == 0, res.output
    (tmp_path / "odd.json").write_text("[1, 2]")
    res = _invoke("eval", "--predictions", tmp_path / "odd.json", "--annotations", sample_set.annotations)
    assert res.exit_code != 0 and "results format" in res.output and "avdet detect" in res.output
