"""Event writers (JSON, SRT, WebVTT) on open text streams, atomic file output, and the timeline picture.

`write_events(stream, fmt, ...)` writes to any text stream; `write_events_file(path, ...)` picks the format from the
suffix and replaces the file atomically (temp file in the same folder + rename), so an error never leaves a partial
file behind. Times are written in seconds rounded to the millisecond (JSON) or as HH:MM:SS,mmm (SRT) /
HH:MM:SS.mmm (WebVTT, hours always present); one cue per event, overlapping cues allowed.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TextIO

from avdet.errors import DataError
from avdet.pipeline.postprocess import Event

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


def write_events(stream: TextIO, fmt: str, *, video: str, duration: float, model: str, events: list[Event]) -> None:
    """Write `events` of one video to `stream` as fmt ("json", "srt" or "vtt")."""
    writers = {"json": _write_json, "srt": _write_srt, "vtt": _write_vtt}
    if fmt not in writers:
        raise DataError(f"unknown output format {fmt!r}; use json, srt or vtt")
    writers[fmt](stream, video, float(duration), model, sorted_events(events))


def events_document(video: str, duration: float, model: str, events: list[Event]) -> dict:
    """The JSON document `detect` writes (times rounded to ms, scores to 1e-4)."""
    return {
        "video": video,
        "duration": round(float(duration), 3),
        "model": model,
        "events": [
            {
                "label": e.label,
                "label_id": int(e.label_id),
                "start": round(e.start, 3),
                "end": round(e.end, 3),
                "score": round(e.score, 4),
            }
            for e in sorted_events(events)
        ],
    }


def _write_json(stream: TextIO, video: str, duration: float, model: str, events: list[Event]) -> None:
    json.dump(events_document(video, duration, model, events), stream, indent=2, ensure_ascii=False)
    stream.write("\n")


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
    return f"{_one_line(e.label)} ({e.score:.2f})"


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
def _atomic_write(path: str | Path, binary: bool, fill: Callable[[IO], None]) -> None:
    """Write `path` through `fill(stream)` into a temp file beside it, then rename over it: readers see the old
    file or the new one, never half of one. Any failure removes the temp file and leaves `path` untouched."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"{path}: output folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        # "x": never clobber; open() honours the umask, unlike mkstemp's 0600
        with open(tmp, "xb" if binary else "x", **({} if binary else {"encoding": "utf-8", "newline": "\n"})) as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise DataError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically; a missing or unwritable folder is a DataError."""
    _atomic_write(path, False, lambda f: f.write(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; a missing or unwritable folder is a DataError."""
    _atomic_write(path, True, lambda f: f.write(data))


def write_events_file(
    path: str | Path,
    events: list[Event],
    *,
    video: str,
    duration: float,
    model: str,
    fmt: str | None = None,
) -> str:
    """Write one video's events to `path` atomically, as `fmt` or (None) the format of its suffix; returns the
    format used. Unknown formats fail before anything is created."""
    fmt = output_format(path) if fmt is None else fmt
    if fmt not in FORMATS.values():
        raise DataError(f"{path}: unknown output format {fmt!r}; use json, srt or vtt")
    _atomic_write(
        path, False, lambda f: write_events(f, fmt, video=video, duration=duration, model=model, events=events)
    )
    return fmt


# -- timeline picture ----------------------------------------------------------------------------------------------
def plot_timeline(
    events: list[Event],
    duration: float,
    path: str | Path,
    classes: list[str] | None = None,
    ground_truth: list[Event] | None = None,
    title: str | None = None,
) -> None:
    """Draw one lane per class present (events or ground truth), ordered by label id: events as bars whose opacity
    follows the score, ground truth as a thin hatched bar under them in the same lane. Time axis in seconds.
    Writes a PNG to `path` atomically. Uses matplotlib's Agg canvas directly (no pyplot, no global backend)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ground_truth = ground_truth or []
    names = {e.label_id: e.label for e in [*ground_truth, *events]}
    if classes:
        names.update({i: classes[i] for i in names if 0 <= i < len(classes)})
    lanes = sorted(names)  # by label id, lane 0 at the top
    row = {lab: i for i, lab in enumerate(lanes)}
    end = max(float(duration), max((e.end for e in [*events, *ground_truth]), default=0.0), 1e-3)
    min_width = end * 2e-3  # zero-length events stay visible

    height = 1.4 + 0.45 * max(len(lanes), 1)
    fig = Figure(figsize=(11, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab10"]
    for e in events:
        y = row[e.label_id]
        colour = cmap(y % 10)
        span = [(e.start, max(e.end - e.start, min_width))]
        alpha = 0.25 + 0.75 * min(max(e.score, 0.0), 1.0)
        ax.broken_barh(span, (y - 0.38, 0.5), facecolor=colour, alpha=alpha)
        ax.broken_barh(span, (y - 0.38, 0.5), facecolor="none", edgecolor=colour, linewidth=0.8)
    for g in ground_truth:
        span = [(g.start, max(g.end - g.start, min_width))]
        ax.broken_barh(span, (row[g.label_id] + 0.17, 0.18), facecolor="0.35", edgecolor="0.15", hatch="////", lw=0.5)

    ax.set_xlim(0, end)
    ax.set_ylim(len(lanes) - 0.5 if lanes else 0.5, -0.5)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([_one_line(names[lab]) for lab in lanes], fontsize=9)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if not lanes:
        ax.text(end / 2, 0, "no events", ha="center", va="center", color="0.5")
    if title:
        ax.set_title(_one_line(title), loc="left", fontsize=11)
    handles = [Patch(facecolor="0.5", alpha=0.9, label="detection (opacity = score)")]
    if ground_truth:
        handles.append(Patch(facecolor="0.35", edgecolor="0.15", hatch="////", label="ground truth"))
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


def _event_from_dict(d: object, where: str) -> Event:
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected an object with label, label_id, start, end and score")
    try:
        start, end = float(d["start"]), float(d["end"])
        event = Event(str(d["label"]), int(d["label_id"]), start, end, float(d.get("score", 1.0)))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: each event needs label, label_id, start, end and score") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
        raise DataError(f"{where}: bad event times [{start}, {end}]")
    if not math.isfinite(event.score):
        raise DataError(f"{where}: score must be a finite number")
    return event


def read_events_file(path: str | Path) -> tuple[str, float, list[Event]]:
    """(video, duration, events) from a JSON file written by `detect` (`events_document`)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: events file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable events JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise DataError(f'{path}: expected an events JSON written by `avdet detect` (with an "events" list)')
    try:
        duration = float(doc.get("duration", 0.0))
    except (TypeError, ValueError):
        raise DataError(f"{path}: duration must be a number") from None
    if not math.isfinite(duration) or duration < 0:
        raise DataError(f"{path}: duration must be a non-negative number")
    events = [_event_from_dict(d, f"{path}: event {i}") for i, d in enumerate(doc["events"])]
    return str(doc.get("video", Path(path).stem)), duration, events


def plot_events_file(events_json_path: str | Path, out_png: str | Path, annotations: str | Path | None = None) -> None:
    """`avdet plot`: draw an events JSON, with that video's ground truth from an annotation file if given."""
    video, duration, events = read_events_file(events_json_path)
    truth = None
    if annotations is not None:
        from avdet.pipeline.evaluate import load_annotations

        db = load_annotations(annotations)["database"]
        if video not in db:
            raise DataError(f"{annotations}: video {video!r} is not in the annotations")
        entry = db[video]
        duration = duration or float(entry.get("duration", 0.0))
        truth = [
            Event(
                str(a.get("label", a["label_id"])),
                int(a["label_id"]),
                float(a["segment"][0]),
                float(a["segment"][1]),
                1.0,
            )
            for a in entry.get("annotations", [])
        ]
    plot_timeline(events, duration, out_png, ground_truth=truth, title=video)
