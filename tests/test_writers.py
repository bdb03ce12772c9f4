"""Event writers (JSON, SRT, WebVTT), atomic files, events-file reading and the timeline PNG.

Golden files live in tests/golden_outputs/ and are compared byte for byte. After an intended format change,
rewrite them with

    AVDET_REFRESH_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_writers.py

then read the diff (`git diff tests/golden_outputs`) before committing: the files are the specification.
Without the switch a missing golden file is a failure, never a silent rewrite.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import DataError
from avdet.pipeline.io import atomic, writers
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.io.plots import pack_rows, plot_events_file, plot_timeline
from avdet.pipeline.io.writers import events_document, output_format, read_events_file, write_events, write_events_file
from avdet.pipeline.types import Event

GOLDEN = Path(__file__).parent / "golden_outputs"
REFRESH = os.environ.get("AVDET_REFRESH_GOLDEN") == "1"

EVENTS = [
    Event("dog barking", 3, 12.3456, 20.0004, 0.8749),
    Event("car <horn> & siren", 7, 0.0, 5.5, 0.91),
    Event("people speaking", 1, 3725.2504, 3730.0, 0.5),
    Event("guitar", 0, 12.3456, 14.0, 0.3),  # same start as the dog: the shorter one first
    Event("鳥のさえずり", 2, 1.0006, 1.0006, 0.05),  # unicode label, zero length
    Event("dog barking", 3, 15.0, 18.0, 0.125),  # overlaps the first dog event
]
META = {"video": "-x_clip01", "duration": 3730.0, "model": "loco"}


def _check_golden(produced: Path, name: str) -> None:
    golden = GOLDEN / name
    if REFRESH:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_bytes(produced.read_bytes())
    if not golden.is_file():
        pytest.fail(f"{golden} is missing: run with AVDET_REFRESH_GOLDEN=1 to create it, then review it")
    assert produced.read_text(encoding="utf-8") == golden.read_text(encoding="utf-8"), f"{name} differs from golden"


@pytest.mark.parametrize("suffix", ["json", "srt", "vtt"])
def test_writers_match_golden_files(tmp_path, suffix):
    target = tmp_path / f"events.{suffix}"
    assert write_events_file(target, EVENTS, **META) == suffix
    _check_golden(target, f"events.{suffix}")


def test_json_document_layout():
    buf = io.StringIO()
    write_events(buf, "json", events=EVENTS, **META)
    doc = json.loads(buf.getvalue())
    assert list(doc) == ["video", "duration", "model", "events"]
    assert (doc["video"], doc["duration"], doc["model"]) == ("-x_clip01", 3730.0, "loco")
    assert [list(e) for e in doc["events"]] == [["label", "label_id", "start", "end", "score"]] * len(EVENTS)
    starts = [e["start"] for e in doc["events"]]
    assert starts == sorted(starts) and len(starts) == len(EVENTS)
    assert doc["events"][0] == {"label": "car <horn> & siren", "label_id": 7, "start": 0.0, "end": 5.5, "score": 0.91}
    assert doc["events"][2]["label"] == "guitar" and doc["events"][3]["end"] == 20.0  # ms rounding
    assert "鳥のさえずり" in buf.getvalue()  # written as UTF-8, not \u escapes
    assert events_document(**META, events=EVENTS) == doc


@pytest.mark.parametrize(
    ("seconds", "srt"),
    [
        (0.0, "00:00:00,000"),
        (1.0006, "00:00:01,001"),
        (59.9996, "00:01:00,000"),  # rounds up across the minute
        (3725.2504, "01:02:05,250"),
        (36000.0, "10:00:00,000"),
        (-0.0004, "00:00:00,000"),
    ],
)
def test_timestamps_round_to_the_millisecond_with_hours(seconds, srt):
    assert writers._timestamp(seconds, ",") == srt
    assert writers._timestamp(seconds, ".") == srt.replace(",", ".")


def test_srt_and_vtt_cues():
    srt, vtt = io.StringIO(), io.StringIO()
    write_events(srt, "srt", events=EVENTS, **META)
    write_events(vtt, "vtt", events=EVENTS, **META)
    srt_blocks = srt.getvalue().strip("\n").split("\n\n")
    assert len(srt_blocks) == len(EVENTS)
    assert srt_blocks[0] == "1\n00:00:00,000 --> 00:00:05,500\ncar <horn> & siren (0.91)"
    assert srt_blocks[3] == "4\n00:00:12,346 --> 00:00:20,000\ndog barking (0.87)"
    assert srt_blocks[4] == "5\n00:00:15,000 --> 00:00:18,000\ndog barking (0.12)"  # overlapping cue kept
    vtt_blocks = vtt.getvalue().strip("\n").split("\n\n")
    assert vtt_blocks[0] == "WEBVTT"
    assert vtt_blocks[1].startswith("NOTE ") and "\n" not in vtt_blocks[1]
    assert vtt_blocks[2] == "1\n00:00:00.000 --> 00:00:05.500\ncar &lt;horn&gt; &amp; siren (0.91)"
    assert len(vtt_blocks) == 2 + len(EVENTS)


def test_multiline_labels_cannot_break_cues():
    buf = io.StringIO()
    write_events(buf, "srt", video="v", duration=5, model="m", events=[Event("a\n\nb", 0, 0.0, 1.0, 0.5)])
    assert buf.getvalue() == "1\n00:00:00,000 --> 00:00:01,000\na b (0.50)\n\n"


def test_no_events_gives_valid_empty_files():
    for fmt, want in [("srt", ""), ("vtt", "WEBVTT\n\n")]:
        buf = io.StringIO()
        write_events(buf, fmt, video="v", duration=5, model="m", events=[])
        assert buf.getvalue().startswith(want) and "-->" not in buf.getvalue()
    buf = io.StringIO()
    write_events(buf, "json", video="v", duration=5, model="m", events=[])
    assert json.loads(buf.getvalue())["events"] == []


def test_output_format_from_suffix(tmp_path):
    assert output_format("a/b.json") == "json" and output_format("x.SRT") == "srt" and output_format("y.vtt") == "vtt"
    with pytest.raises(DataError, match=r"events\.txt: unknown output format \(suffix '\.txt'\)"):
        output_format("events.txt")
    with pytest.raises(DataError, match="no suffix"):
        output_format("events")
    with pytest.raises(DataError, match="unknown output format"):
        write_events_file(tmp_path / "events.txt", EVENTS, **META)
    with pytest.raises(DataError, match="unknown output format 'xml'"):
        write_events_file(tmp_path / "events.json", EVENTS, **META, fmt="xml")
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_atomic_write_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such" / "events.json"
    with pytest.raises(DataError, match="does not exist") as err:
        write_events_file(missing, EVENTS, **META)
    assert "\n" not in str(err.value) and str(missing) in str(err.value)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        write_events_file(tmp_path / "dir.json", EVENTS, **META)

    target = tmp_path / "events.srt"
    target.write_text("old content")
    bad = [*EVENTS, Event(None, 0, 1.0, 2.0, 0.5)]  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        write_events_file(target, bad, **META)  # fails half-way through the cues
    assert target.read_text() == "old content"

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(DataError, match=r"events\.srt: cannot write \(Permission denied\)"):
        write_events_file(target, EVENTS, **META)
    monkeypatch.undo()
    assert target.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "events.srt"]  # no temp files left

    write_text_atomic(target, "new")
    assert target.read_text() == "new"


def test_read_events_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "events.json"
    write_events_file(path, EVENTS, **META)
    video, duration, events = read_events_file(path)
    assert (video, duration, len(events)) == ("-x_clip01", 3730.0, len(EVENTS))
    assert events[0] == Event("car <horn> & siren", 7, 0.0, 5.5, 0.91)

    with pytest.raises(DataError, match="not found"):
        read_events_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(DataError, match="not a readable events JSON"):
        read_events_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match='"events" list'):
        read_events_file(tmp_path / "list.json")
    (tmp_path / "rev.json").write_text(json.dumps({"events": [{"label": "a", "label_id": 0, "start": 5, "end": 1}]}))
    with pytest.raises(DataError, match=r"rev\.json: event 0: bad event times \[5.0, 1.0\]"):
        read_events_file(tmp_path / "rev.json")
    (tmp_path / "nolab.json").write_text(json.dumps({"events": [{"start": 0, "end": 1}]}))
    with pytest.raises(DataError, match="event 0: each event needs"):
        read_events_file(tmp_path / "nolab.json")


def _png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_timeline_png_lanes_events_and_ground_truth(tmp_path):
    events = [Event("dog", 3, 1.0, 4.0, 0.9), Event("car", 7, 2.0, 9.0, 0.4), Event("dog", 3, 6.0, 6.0, 0.2)]
    truth = [Event("dog", 3, 1.2, 4.5, 1.0), Event("bird", 5, 0.0, 2.0, 1.0)]
    plot_timeline(events, 10.0, tmp_path / "events.png", title="clip")
    plot_timeline(events, 10.0, tmp_path / "with_gt.png", ground_truth=truth, classes=[f"c{i}" for i in range(9)])
    plot_timeline([], 10.0, tmp_path / "empty.png")
    plain, with_gt, empty = (_png(tmp_path / n) for n in ("events.png", "with_gt.png", "empty.png"))
    # one lane per class: 2 lanes without ground truth, 3 with the bird lane; the picture grows with the lanes
    assert with_gt.shape[0] > plain.shape[0] > empty.shape[0]
    assert plain.shape[1] == 1200 and plain.shape[2] in (3, 4)
    coloured = np.abs(plain[..., 0] - plain[..., 2]) > 0.2  # the score-coloured bars (and the colour bar)
    assert coloured.sum() > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "events.png", "with_gt.png"]
    with pytest.raises(DataError, match="does not exist"):
        plot_timeline(events, 10.0, tmp_path / "missing" / "x.png")


def test_plot_events_file_with_annotations(tmp_path):
    events_json = tmp_path / "events.json"
    write_events_file(events_json, EVENTS[:2], video="vid1", duration=30.0, model="loco")
    ann = {
        "database": {
            "vid1": {
                "duration": 30.0,
                "subset": "test",
                "annotations": [{"segment": [1.0, 6.0], "label": "car <horn> & siren", "label_id": 7}],
            }
        }
    }
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(ann))
    plot_events_file(events_json, tmp_path / "t.png", ann["database"], ann_path)
    plot_events_file(events_json, tmp_path / "u.png")
    assert _png(tmp_path / "t.png").shape[0] > _png(tmp_path / "u.png").shape[0]  # a ground-truth row per lane
    with pytest.raises(DataError, match=r"ann\.json: video 'vid1' is not in the annotations"):
        plot_events_file(events_json, tmp_path / "v.png", {"other": ann["database"]["vid1"]}, ann_path)


def test_overlapping_events_of_a_class_get_sub_rows() -> None:
    events = [
        Event("a", 0, 0, 10, 0.9),
        Event("a", 0, 5, 12, 0.5),
        Event("a", 0, 11, 20, 0.3),
        Event("b", 1, 1, 9, 0.2),
    ]
    assert pack_rows(events[:3]) == [0, 1, 0]  # the third starts after the first ends: back on row 0
    assert pack_rows([]) == []


def test_timeline_of_a_ten_minute_video_grows_with_overlaps(tmp_path):
    long_name = "a very long class name that would not fit on the left of the figure at all"
    single = [Event(long_name, 0, 60.0 * i, 60.0 * i + 30, 0.1 * i) for i in range(10)]
    stacked = [*single, *(Event(long_name, 0, 60.0 * i + 10, 60.0 * i + 40, 0.95) for i in range(10))]
    plot_timeline(single, 600.0, tmp_path / "one.png")
    plot_timeline(stacked, 600.0, tmp_path / "two.png")
    one, two = _png(tmp_path / "one.png"), _png(tmp_path / "two.png")
    assert two.shape[0] > one.shape[0] and one.shape[1] == 1200  # overlaps get a second row, no opaque band
