"""The HTML report's data and files (no browser: tests/test_report_browser.py opens the pages in Chromium)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avdet.cli import app
from avdet.errors import DataError
from avdet.pipeline.metrics.mean_ap import events_to_predictions, prediction_hits, ranked_hits
from avdet.pipeline.report import (
    Meta,
    VideoReport,
    match,
    page_data,
    render,
    report_from_files,
    video_src,
    write_report,
)
from avdet.pipeline.types import Event

TRUTH = [Event("dog", 0, 1.0, 3.0, 1.0), Event("dog", 0, 6.0, 8.0, 1.0), Event("car", 1, 4.0, 5.0, 1.0)]
EVENTS = [
    Event("dog", 0, 1.1, 3.1, 0.9),  # matches dog 1-3 (tIoU 0.9 / 2.1)
    Event("dog", 0, 1.2, 2.9, 0.5),  # a duplicate: the true event is taken
    Event("car", 1, 6.0, 8.0, 0.7),  # the wrong class there
    Event("cat </script><b>", 2, 0.0, 0.5, 0.2),
]


def blob(html: str) -> dict:
    """The JSON data of a written page."""
    found = re.search(r'<script type="application/json" id="avdet-data">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))


def test_match_is_the_evaluators_matching() -> None:
    m = match("v", EVENTS, TRUTH)
    assert m.matched == [True, False, False, False]
    assert m.tiou == [pytest.approx(round(1.9 / 2.1, 3)), pytest.approx(round(1.7 / 2.0, 3)), 0.0, 0.0]
    s = m.scores()
    assert (s["hits"], s["detections"], s["true_events"]) == (1, 4, 3)
    assert s["precision"] == pytest.approx(0.25) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 / 7)


def test_prediction_hits_agree_with_ranked_hits() -> None:
    rng = np.random.default_rng(0)
    truth = {"database": {}}
    events = {}
    for v in range(4):
        starts = rng.uniform(0, 50, 6)
        truth["database"][f"v{v}"] = {
            "subset": "test",
            "annotations": [
                {"segment": [s, s + 3], "label_id": int(k)} for s, k in zip(starts, rng.integers(0, 3, 6), strict=False)
            ],
        }
        events[f"v{v}"] = [
            Event(str(k), int(k), float(s), float(s) + 2.5, float(p))
            for s, k, p in zip(rng.uniform(0, 50, 20), rng.integers(0, 3, 20), rng.uniform(0, 1, 20), strict=False)
        ]
    preds = events_to_predictions(events)
    hits, best, npos = prediction_hits(truth, preds, "test")
    labels, scores, ranked, npos2 = ranked_hits(truth, preds, "test")
    assert npos == npos2 and hits.sum() == ranked.sum() > 0
    flat = [e for v in events.values() for e in v]
    for k in range(3):  # per class, the same scores are hits
        mine = sorted(e.score for e, h in zip(flat, hits, strict=False) if h and e.label_id == k)
        assert mine == sorted(scores[(labels == k) & ranked].tolist())
    assert (best[hits] >= 0.5).all() and ((best >= 0) & (best <= 1)).all()


def test_page_data_and_escaping(tmp_path: Path) -> None:
    video = tmp_path / "my clips" / "a b#1.mp4"
    video.parent.mkdir()
    video.write_bytes(b"")
    report = VideoReport("a b#1", 9.0, EVENTS, TRUTH, video, "loco", {"mode": "all", "overlap_iou": None})
    page = tmp_path / "out" / "r.html"
    page.parent.mkdir()
    data = page_data(report, page, Meta(command="avdet report x"))
    assert data["src"] == "../my%20clips/a%20b%231.mp4"
    assert [e["start"] for e in data["events"]] == sorted(e.start for e in EVENTS)
    assert {e["label"]: e["matched"] for e in data["events"]}["cat </script><b>"] is False
    assert data["scores"]["f1"] == pytest.approx(2 / 7) and data["truth"][0]["score"] is None
    html = render("report.html", data)
    assert html.count("</script>") == 2  # the data blob's and the code's: no label can close a script
    assert "<b>" not in html.split('id="avdet-data">')[1].split("</script>")[0]
    assert blob(html)["events"] == data["events"]


def test_video_src_is_relative_to_the_page(tmp_path: Path) -> None:
    assert video_src(tmp_path / "v" / "x.mp4", tmp_path / "r.html") == "v/x.mp4"
    assert video_src(tmp_path / "x.mp4", tmp_path / "deep" / "er" / "r.html") == "../../x.mp4"


def _events_json(folder: Path, video: str, events: list[Event], duration: float = 9.0) -> Path:
    from avdet.pipeline.io.writers import write_events_file

    path = folder / f"{video}.json"
    write_events_file(path, events, video=video, duration=duration, model="loco", operating_point={"mode": "all"})
    return path


def _annotations(path: Path, videos: dict[str, list[Event]]) -> Path:
    db = {
        v: {
            "subset": "test",
            "duration": 9.0,
            "annotations": [{"segment": [g.start, g.end], "label": g.label, "label_id": g.label_id} for g in truth],
        }
        for v, truth in videos.items()
    }
    path.write_text(json.dumps({"database": db}))
    return path


def test_folder_gives_index_and_pages(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    _events_json(events, "b", EVENTS)
    _events_json(events, "a", EVENTS[:1])
    _events_json(events, "index", [])  # a video named like the index keeps its own page
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"")
    (videos / "b.webm").write_bytes(b"")
    ann = _annotations(tmp_path / "ann.json", {"a": TRUTH, "b": TRUTH, "index": []})
    index, reports = report_from_files(events, tmp_path / "report", videos=videos, annotations=ann)
    assert index == tmp_path / "report" / "index.html"
    assert sorted(p.name for p in index.parent.iterdir()) == ["a.html", "b.html", "index.html", "index_.html"]
    rows = blob(index.read_text())["rows"]
    assert [(r["video"], r["href"], r["events"], r["true_events"]) for r in rows] == [
        ("a", "a.html", 1, 3),
        ("b", "b.html", 4, 3),
        ("index", "index_.html", 0, 0),
    ]
    assert rows[1]["scores"]["f1"] == pytest.approx(2 / 7) and rows[0]["scores"]["precision"] == 1.0
    pooled = blob(index.read_text())["pooled"]
    assert (pooled["hits"], pooled["detections"], pooled["true_events"]) == (2, 5, 6)
    a = blob((index.parent / "a.html").read_text())
    assert a["src"] == "../videos/a.mp4" and a["nav"] == {"index": "index.html", "next": "b.html"}
    assert blob((index.parent / "b.html").read_text())["src"] == "../videos/b.webm"
    assert [r.video_path for r in reports][2] is None  # no such video file: a timeline-only page
    assert not list(index.parent.glob("*.tmp-*"))


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    ev = _events_json(tmp_path, "a", EVENTS)
    ann = _annotations(tmp_path / "ann.json", {"other": TRUTH})
    with pytest.raises(DataError, match=r"ann.json: video 'a' .* is not in the annotations"):
        report_from_files(ev, tmp_path / "r.html", annotations=ann)
    with pytest.raises(DataError, match="2 videos make a report folder"):
        write_report(tmp_path / "r.html", [VideoReport("a", 1, []), VideoReport("b", 1, [])], Meta())
    with pytest.raises(DataError, match="no such events file"):
        report_from_files(tmp_path / "nope.json", tmp_path / "r.html")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="broken.json: not a readable events JSON"):
        report_from_files(tmp_path / "broken.json", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report(tmp_path: Path) -> None:
    ev = _events_json(tmp_path, "a", EVENTS)
    ann = _annotations(tmp_path / "ann.json", {"a": TRUTH})
    out = tmp_path / "page.html"
    res = CliRunner().invoke(app, ["report", str(ev), "--annotations", str(ann), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = blob(out.read_text())
    assert data["meta"]["command"].startswith("avdet ") and data["meta"]["avdet"]
    assert data["scores"]["hits"] == 1 and data["src"] is None
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing.json")])
    assert res.exit_code == 1 and "missing.json: no such events file" in res.output


@pytest.mark.slow
def test_detect_and_eval_write_reports(trained_run: Path, sample_set, tmp_path: Path) -> None:
    """`detect --report` (one video: a page with the video beside it) and `eval --report DIR` (the test split: an
    index with the checkpoint's events at its operating point and each video found through the feature store)."""
    ckpt = trained_run / "best.ckpt"
    clip = sorted((sample_set.root / "videos").glob("*.mp4"))[0]
    runner = CliRunner()
    res = runner.invoke(app, ["detect", str(clip), "--checkpoint", str(ckpt), "--report", str(tmp_path / "d.html")])
    assert res.exit_code == 0, res.output
    page = blob((tmp_path / "d.html").read_text())
    assert page["video"] == clip.stem and Path(tmp_path / page["src"]).resolve() == clip.resolve()
    assert page["meta"]["checkpoint"] == str(ckpt) and page["operating_point"]["mode"]
    res = runner.invoke(
        app, ["eval", "--checkpoint", str(ckpt), "--split", "test", "--report", str(tmp_path / "split")]
    )
    assert res.exit_code == 0, res.output
    index = blob((tmp_path / "split" / "index.html").read_text())
    db = json.loads(sample_set.annotations.read_text())["database"]
    test_ids = sorted(v for v, d in db.items() if d["subset"] == "test")
    assert [r["video"] for r in index["rows"]] == test_ids
    assert [r["true_events"] for r in index["rows"]] == [len(db[v]["annotations"]) for v in test_ids]
    assert index["pooled"] is not None and index["pooled"]["true_events"] == sum(
        r["true_events"] for r in index["rows"]
    )
    first = blob((tmp_path / "split" / f"{test_ids[0]}.html").read_text())
    assert first["src"] is not None and (tmp_path / "split" / first["src"]).resolve().is_file()


def test_report_writes_without_torch(tmp_path: Path) -> None:
    """The report is plain data in, HTML out: writing one never imports torch (a fast `avdet report`)."""
    import subprocess
    import sys

    ev = _events_json(tmp_path, "a", EVENTS)
    ann = _annotations(tmp_path / "ann.json", {"a": TRUTH})
    code = (
        "import sys; from avdet.pipeline.report import report_from_files; "
        f"report_from_files({str(ev)!r}, {str(tmp_path / 'r.html')!r}, annotations={str(ann)!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr.strip()[-500:]
    assert (tmp_path / "r.html").is_file()


def test_detect_refuses_one_page_for_several_videos_before_any_work(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    args = ["detect", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), "--checkpoint", str(tmp_path / "none.ckpt")]
    res = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and "2 videos make a report folder with an index" in res.output
