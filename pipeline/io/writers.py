"""Event writers (JSON, SRT, WebVTT) on open text streams, atomic file output, and the timeline picture.

`write_events(stream, fmt, ...)` writes to any text stream (stdout included); `write_events_file(path, ...)` picks the
format from the suffix and replaces the file atomically (temp file in the same folder + rename), so an error never
leaves a partial file behind; a path that is no regular file (/dev/stdout, a fifo) is written in place. Times are
written in seconds rounded to the millisecond (JSON) or as HH:MM:SS,mmm (SRT) / HH:MM:SS.mmm (WebVTT, hours always
present); one cue per event, overlapping cues allowed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from avdet.errors import DataError
from avdet.pipeline.io.atomic import atomic_open
from avdet.pipeline.types import MODALITY_TEXT, Event

FORMATS = {".json": "json", ".srt": "srt", ".vtt": "vtt"}


def output_format(path: str | Path) -> str:
    """ "json" | "srt" | "vtt" from the file suffix (case-insensitive); anything else is a DataError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise DataError(f"{path}: unknown output format ({shown}); use .json, .srt or .vtt")
    return FORMATS[suffix]


def sorted_events(events: Iterable[Event]) -> list[Event]:
    """By start, then end, then descending score, then label id: a stable, readable order."""
    return sorted(events, key=lambda e: (e.start, e.end, -e.score, e.label_id))


def write_events(
    stream: TextIO,
    fmt: str,
    *,
    video: str,
    duration: float,
    model: str,
    events: list[Event],
    operating_point: dict | None = None,
    indent: int | None = 2,
) -> None:
    """Write `events` of one video to `stream` as fmt ("json", "srt" or "vtt"); `operating_point` (JSON only): the
    thresholds that chose the events (`OperatingPoint.record`); indent None: one JSON line (JSON Lines)."""
    if fmt not in ("json", "srt", "vtt"):
        raise DataError(f"unknown output format {fmt!r}; use json, srt or vtt")
    if fmt == "json":
        doc = events_document(video, duration, model, events, operating_point)
        stream.write(json.dumps(doc, indent=indent, ensure_ascii=False) + "\n")
        return
    writer = _write_srt if fmt == "srt" else _write_vtt
    writer(stream, video, float(duration), model, sorted_events(events))


def events_document(
    video: str, duration: float, model: str, events: list[Event], operating_point: dict | None = None
) -> dict:
    """The JSON document `detect` writes (times rounded to ms, scores to 9 digits: float32 exactly, so a ranked list
    scores the same mAP as in memory), with the operating point that chose the events when given."""
    head = {"video": video, "duration": round(float(duration), 3), "model": model}
    if operating_point is not None:
        head["operating_point"] = operating_point
    return {
        **head,
        "events": [_event_dict(e) for e in sorted_events(events)],
    }


def _event_dict(e: Event) -> dict:
    out = {
        "label": e.label,
        "label_id": int(e.label_id),
        "start": round(e.start, 3),
        "end": round(e.end, 3),
        "score": float(f"{e.score:.9g}"),
    }
    if e.modality is not None:
        out["modality"] = e.modality
    if e.streams is not None:  # which stream drove it (docs/fusion.md)
        audio, visual = e.streams
        out["streams"] = {
            "audio": float(f"{audio:.6g}"),
            "visual": float(f"{visual:.6g}"),
            "driven_by": stream_driver(e.score, audio, visual),
        }
    return out


def stream_driver(score: float, audio: float, visual: float) -> str:
    """Which stream drove an event: the one that alone keeps more of the score, "both" when neither keeps half."""
    if max(audio, visual) < 0.5 * score:
        return "both"
    return "audio" if audio >= visual else "visual"


def _timestamp(seconds: float, sep: str) -> str:
    """HH:MM:SS<sep>mmm, rounded to the millisecond; hours always present (SRT needs them, WebVTT allows them)."""
    ms = max(0, round(seconds * 1000))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _one_line(text: str) -> str:
    """Cue text and notes must stay on one line: a blank line would end the cue."""
    return " ".join(text.split())


def _cue_text(e: Event) -> str:
    """`dog barking (0.87)`; with a modality `dog barking (audio only, 0.87)`."""
    tag = f"{MODALITY_TEXT.get(e.modality, e.modality)}, " if e.modality else ""
    return f"{_one_line(e.label)} ({tag}{e.score:.2f})"


def _write_srt(stream: TextIO, video: str, duration: float, model: str, events: list[Event]) -> None:
    # one cue per event; players show overlapping cues together
    for i, e in enumerate(events, start=1):
        stream.write(f"{i}\n{_timestamp(e.start, ',')} --> {_timestamp(e.end, ',')}\n{_cue_text(e)}\n\n")


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _write_vtt(stream: TextIO, video: str, duration: float, model: str, events: list[Event]) -> None:
    stream.write("WEBVTT\n\n")
    note = _one_line(f"avdet events of {video} ({duration:.3f} s), model {model}").replace("-->", "->")
    stream.write(f"NOTE {_vtt_escape(note)}\n\n")
    for i, e in enumerate(events, start=1):
        stream.write(f"{i}\n{_timestamp(e.start, '.')} --> {_timestamp(e.end, '.')}\n{_vtt_escape(_cue_text(e))}\n\n")


# -- atomic files --------------------------------------------------------------------------------------------------


def write_events_file(
    path: str | Path,
    events: list[Event],
    *,
    video: str,
    duration: float,
    model: str,
    fmt: str | None = None,
    operating_point: dict | None = None,
) -> str:
    """Write one video's events to `path` atomically, as `fmt` or (None) the format of its suffix; returns the
    format used. Unknown formats fail before anything is created."""
    fmt = output_format(path) if fmt is None else fmt
    if fmt not in FORMATS.values():
        raise DataError(f"{path}: unknown output format {fmt!r}; use json, srt or vtt")
    with atomic_open(path) as f:
        write_events(
            f, fmt, video=video, duration=duration, model=model, events=events, operating_point=operating_point
        )
    return fmt


# -- timeline picture ----------------------------------------------------------------------------------------------


def _event_from_dict(d: object, where: str) -> Event:
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected an object with label, label_id, start, end and score")
    try:
        start, end = float(d["start"]), float(d["end"])
        modality = d.get("modality")
        event = Event(str(d["label"]), int(d["label_id"]), start, end, float(d.get("score", 1.0)), modality)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: each event needs label, label_id, start, end and score") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
        raise DataError(f"{where}: bad event times [{start}, {end}]")
    if not math.isfinite(event.score):
        raise DataError(f"{where}: score must be a finite number")
    return event


def is_events_document(doc: object) -> bool:
    """Whether a parsed JSON value looks like what `detect` writes (an object with a "video" and an "events" list)."""
    return isinstance(doc, dict) and "video" in doc and isinstance(doc.get("events"), list)


def events_from_document(doc: object, source: str | Path) -> tuple[str, float, list[Event]]:
    """(video, duration, events) of a parsed events JSON (`events_document`); errors name `source`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise DataError(f'{source}: expected an events JSON written by `avdet detect` (with an "events" list)')
    try:
        duration = float(doc.get("duration", 0.0))
    except (TypeError, ValueError):
        raise DataError(f"{source}: duration must be a number") from None
    if not math.isfinite(duration) or duration < 0:
        raise DataError(f"{source}: duration must be a non-negative number")
    events = [_event_from_dict(d, f"{source}: event {i}") for i, d in enumerate(doc["events"])]
    return str(doc.get("video", Path(source).stem)), duration, events


def read_events_file(path: str | Path) -> tuple[str, float, list[Event]]:
    """(video, duration, events) from a JSON file written by `detect` (`events_document`)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: events file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable events JSON ({err})") from None
    return events_from_document(doc, path)
