"""Interactive HTML reports: a video with its events on a timeline, the ground truth under them, in one file.

A page is the template `templates/report.html` (plain HTML/CSS/JS, no network at view time, works from file://)
with the page's data as ONE JSON blob in a `<script type="application/json">`; the video is referenced by a path
relative to the page, never inlined. A folder of videos gives one page per video plus `index.html`
(`templates/index.html`) with a row per video: events, true events, and precision / recall / F1 at tIoU 0.5 matched
by the mAP evaluator's rule (`metrics.mean_ap.prediction_hits`). Torch-free: it takes plain data.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from avdet.errors import DataError
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.metrics.mean_ap import prediction_hits
from avdet.pipeline.operating_point import Counts, apply_operating_point, operating_point_for
from avdet.pipeline.types import Event
from avdet.version import __version__

if TYPE_CHECKING:  # a type only: this module never imports torch
    from avdet.pipeline.checkpoint import Checkpoint

TIOU = 0.5  # event-level matching, as mAP@0.5 and `avdet calibrate`
TEMPLATES = Path(__file__).with_name("templates")
DATA_MARK = "/*__AVDET_DATA__*/"  # where the template takes its JSON blob
INDEX = "index.html"


@dataclass(frozen=True)
class VideoReport:
    """What one video's page shows. `truth` None: no annotations for it (no tIoU, no precision / recall)."""

    video_id: str
    duration: float
    events: list[Event]
    truth: list[Event] | None = None
    video_path: Path | None = None  # the media file the page plays (None: timeline only)
    model: str = ""
    operating_point: dict | None = None  # `OperatingPoint.record`: the thresholds that chose the events


@dataclass(frozen=True)
class Meta:
    """Where a report came from: shown on every page."""

    command: str = ""
    checkpoint: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    version: str = __version__

    def as_dict(self) -> dict:
        return {"command": self.command, "checkpoint": self.checkpoint, "created": self.created, "avdet": self.version}


# -- ground truth and matching -------------------------------------------------------------------------------------
def truth_of(annotations: Mapping, video_id: str) -> list[Event] | None:
    """A video's true events from an UnAV-100 style annotation document (None: the video is not in it)."""
    db = annotations.get("database", annotations)
    entry = db.get(video_id) if isinstance(db, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    return [
        Event(
            str(a.get("label", a["label_id"])), int(a["label_id"]), float(a["segment"][0]), float(a["segment"][1]), 1.0
        )
        for a in entry.get("annotations", [])
    ]


def _as_db(video_id: str, truth: list[Event]) -> dict:
    return {
        "database": {
            video_id: {
                "subset": "report",
                "annotations": [{"segment": [g.start, g.end], "label_id": g.label_id, "label": g.label} for g in truth],
            }
        }
    }


def _as_predictions(video_id: str, events: list[Event]) -> dict:
    rows = [{"segment": [e.start, e.end], "label_id": e.label_id, "score": e.score} for e in events]
    return {"database": {video_id: rows}}


@dataclass(frozen=True)
class Matching:
    """Each event's best tIoU with a true event of its class and whether it matched one (at `TIOU`), plus counts."""

    tiou: list[float]
    matched: list[bool]
    hits: int
    detections: int
    true_events: int

    def scores(self) -> dict:
        """Precision, recall and F1 (`operating_point.Counts`), with the counts they come from."""
        return {**Counts(self.hits, self.detections, self.true_events).as_dict(), "tiou": TIOU}


def match(video_id: str, events: list[Event], truth: list[Event]) -> Matching:
    """Match one video's events to its true events by the mAP evaluator's rule at tIoU 0.5."""
    hits, best, counts = prediction_hits(_as_db(video_id, truth), _as_predictions(video_id, events), None, TIOU)
    return Matching(
        [round(float(t), 3) for t in best], [bool(h) for h in hits], int(hits.sum()), len(events), sum(counts.values())
    )


# -- page data -----------------------------------------------------------------------------------------------------
def _event_row(e: Event) -> dict:
    row = {"label": e.label, "label_id": int(e.label_id), "start": round(e.start, 3), "end": round(e.end, 3)}
    row["score"] = float(f"{e.score:.9g}")  # as events.json: the slider compares the very scores
    if e.modality is not None:
        row["modality"] = e.modality
    return row


def video_src(video: Path, page: Path) -> str:
    """The URL of `video` relative to the HTML file `page` (percent-encoded, "/" separated)."""
    rel = os.path.relpath(Path(video).resolve(), Path(page).resolve().parent)
    return urllib.parse.quote(Path(rel).as_posix())


def page_data(report: VideoReport, page: Path, meta: Meta, nav: dict | None = None) -> dict:
    """The JSON blob of one video's page (see templates/report.html for how it is drawn)."""
    events = sorted(report.events, key=lambda e: (e.start, e.end, -e.score, e.label_id))
    rows = [_event_row(e) for e in events]
    scores = None
    if report.truth is not None:
        m = match(report.video_id, events, report.truth)
        for row, t, hit in zip(rows, m.tiou, m.matched, strict=True):
            row.update(tiou=t, matched=hit)
        scores = m.scores()
    end = max([float(report.duration), *(e.end for e in [*events, *(report.truth or [])])], default=0.0)
    return {
        "video": report.video_id,
        "duration": round(end, 3),
        "src": video_src(report.video_path, page) if report.video_path is not None else None,
        "model": report.model,
        "operating_point": report.operating_point,
        "events": rows,
        "truth": None if report.truth is None else [_event_row(g) | {"score": None} for g in report.truth],
        "scores": scores,
        "meta": meta.as_dict(),
        "nav": nav or {},
    }


def render(template: str, data: dict) -> str:
    """The template with `data` as its JSON blob; every "<" escaped so that no string can close the script."""
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    blob = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    if DATA_MARK not in text:
        raise DataError(f"{TEMPLATES / template}: template lacks its data mark {DATA_MARK}")
    return text.replace(DATA_MARK, blob, 1)


# -- writing -------------------------------------------------------------------------------------------------------
def write_video_page(path: str | Path, report: VideoReport, meta: Meta, nav: dict | None = None) -> dict:
    """Write one video's page atomically; returns its data."""
    data = page_data(report, Path(path), meta, nav)
    write_text_atomic(path, render("report.html", data))
    return data


def page_name(video_id: str) -> str:
    """A video's page file in a report folder (never the index's name)."""
    return f"{video_id}.html" if f"{video_id}.html" != INDEX else f"{video_id}_.html"


def _pooled(pages: list[dict]) -> dict | None:
    """Precision / recall / F1 over every page with ground truth (counts summed: the same as matching them all)."""
    scored = [p["scores"] for p in pages if p["scores"] is not None]
    if not scored:
        return None
    hits, dets, trues = (sum(s[k] for s in scored) for k in ("hits", "detections", "true_events"))
    return Matching([], [], hits, dets, trues).scores()


def write_report_folder(folder: str | Path, reports: Sequence[VideoReport], meta: Meta, title: str = "") -> Path:
    """One page per video and `index.html` (a row per video, linking to its page, with previous / next links on
    every page); returns the index's path. The folder is created if missing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: a report of several videos is a folder; this is a file")
    folder.mkdir(parents=True, exist_ok=True)
    reports = sorted(reports, key=lambda r: r.video_id)
    names = [page_name(r.video_id) for r in reports]
    if len(set(names)) != len(names):
        raise DataError(f"{folder}: two videos share a video id; their pages would overwrite each other")
    pages, rows = [], []
    for i, (report, name) in enumerate(zip(reports, names, strict=True)):
        nav = {"index": INDEX}
        if i > 0:
            nav["prev"] = urllib.parse.quote(names[i - 1])
        if i + 1 < len(names):
            nav["next"] = urllib.parse.quote(names[i + 1])
        data = write_video_page(folder / name, report, meta, nav)
        pages.append(data)
        rows.append(
            {
                "video": report.video_id,
                "href": urllib.parse.quote(name),
                "duration": data["duration"],
                "events": len(report.events),
                "true_events": None if report.truth is None else len(report.truth),
                "scores": data["scores"],
                "model": report.model,
            }
        )
    index = {
        "title": title or f"{len(reports)} videos",
        "rows": rows,
        "pooled": _pooled(pages),
        "operating_point": next((r.operating_point for r in reports if r.operating_point), None),
        "meta": meta.as_dict(),
    }
    write_text_atomic(folder / INDEX, render("index.html", index))
    return folder / INDEX


def check_report_target(out: str | Path, videos: int) -> None:
    """Fail before any work when `out` cannot hold a report of `videos` videos (an .html file holds one)."""
    out = Path(out)
    if videos != 1 and out.suffix.lower() in (".html", ".htm"):
        raise DataError(f"{out}: {videos} videos make a report folder with an index; give a folder, not a file")
    if out.suffix.lower() in (".html", ".htm") and not out.parent.is_dir():
        raise DataError(f"{out}: output folder {str(out.parent)!r} does not exist")


def write_report(out: str | Path, reports: Sequence[VideoReport], meta: Meta, title: str = "") -> Path:
    """One video and `out` ending in .html: that page alone; otherwise a folder with an index. Returns the path to
    open."""
    out = Path(out)
    check_report_target(out, len(reports))
    if out.suffix.lower() in (".html", ".htm"):
        write_video_page(out, reports[0], meta)
        return out
    return write_report_folder(out, reports, meta, title)


# -- from files (`avdet report`) -----------------------------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".ogv", ".avi")


def find_video(video_id: str, where: Path | None) -> Path | None:
    """The media file of `video_id`: `where` itself when it is a file, else `<where>/<video_id>.<suffix>`."""
    if where is None:
        return None
    if where.is_file():
        return where
    return next((where / f"{video_id}{s}" for s in VIDEO_SUFFIXES if (where / f"{video_id}{s}").is_file()), None)


def report_from_files(
    events: str | Path,
    out: str | Path,
    *,
    videos: str | Path | None = None,
    annotations: str | Path | None = None,
    meta: Meta | None = None,
) -> tuple[Path, list[VideoReport]]:
    """`avdet report`: pages from events JSON files written by `avdet detect` (one file, or a folder of them), the
    videos found in `videos` (a file, or a folder holding `<video id>.<suffix>`), the ground truth from
    `annotations`. Returns the path to open and what each page shows."""
    from avdet.pipeline.io.writers import read_events_file

    events, videos = Path(events), Path(videos) if videos is not None else None
    if events.is_dir():
        files = sorted(events.glob("*.json"))
        if not files:
            raise DataError(f"{events}: no events JSON files (*.json) in this folder")
    elif events.is_file():
        files = [events]
    else:
        raise DataError(f"{events}: no such events file or folder")
    if videos is not None and not videos.exists():
        raise DataError(f"{videos}: no such video file or folder")
    if videos is not None and videos.is_file() and len(files) > 1:
        raise DataError(f"{videos}: one video file for {len(files)} events files; give the videos' folder")
    truth_db = None
    if annotations is not None:
        from avdet.pipeline.data.annotations import load_annotations

        truth_db = load_annotations(annotations)
    reports = []
    for f in files:
        video_id, duration, evs = read_events_file(f)  # checked: a readable events document
        doc = json.loads(f.read_text(encoding="utf-8"))
        truth = truth_of(truth_db, video_id) if truth_db is not None else None
        if truth_db is not None and truth is None:
            raise DataError(f"{annotations}: video {video_id!r} (from {f}) is not in the annotations")
        reports.append(
            VideoReport(
                video_id,
                duration,
                evs,
                truth,
                find_video(video_id, videos),
                str(doc.get("model", "")) if isinstance(doc, dict) else "",
                doc.get("operating_point") if isinstance(doc, dict) else None,
            )
        )
    path = write_report(out, reports, meta or Meta(), title=str(events))
    return path, reports


# -- a split (`avdet eval --checkpoint ... --report DIR`) ----------------------------------------------------------
def write_split_report(
    ckpt: Checkpoint, candidates: Mapping[str, list[Event]], split: str, out: str | Path, meta: Meta
) -> Path:
    """Pages for every video of `split` evaluated by checkpoint `ckpt` (a loaded `Checkpoint`): its `candidates`
    at the checkpoint's operating point (as `detect` shows them), the annotations' ground truth, and the video
    each was extracted from when the checkpoint's feature store recorded it. Returns the index's path."""
    from avdet.pipeline.data.annotations import load_annotations

    point = operating_point_for(
        ckpt.operating_point, len(ckpt.classes), ckpt.postprocess.output_threshold, calibratable=False
    )
    annotations = load_annotations(ckpt.data.annotations)
    db = annotations["database"]
    sources = _store_videos(ckpt)
    reports = [
        VideoReport(
            vid,
            float(db[vid].get("duration", 0.0)),
            apply_operating_point(events, point),
            truth_of(annotations, vid) or [],
            sources.get(vid),
            ckpt.name,
            point.record(ckpt.classes),
        )
        for vid, events in candidates.items()
        if vid in db
    ]
    return write_report_folder(out, reports, meta, title=f"{ckpt.name}: {split} split")


def _store_videos(ckpt: Checkpoint) -> dict[str, Path]:
    """{video id: media file} as the checkpoint's feature store recorded them at extraction (files still there)."""
    if ckpt.extractor.get("released"):
        return {}
    from avdet.pipeline.io.store import FeatureStore, default_cache_dir, spec_hash

    store = FeatureStore(ckpt.data.cache or default_cache_dir())
    found = {}
    for entry in store.entries(spec_hash(ckpt.extractor), "done"):
        path = Path(entry.path)
        if path.is_file():
            found[entry.video_id] = path
    return found
