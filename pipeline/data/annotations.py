"""Annotations in the UnAV-100 layout (`{"database": {vid: {duration, subset, annotations: [...]}}}`): reading,
validation, class lists, splits. No torch import."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avdet.errors import DataError

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()  # (file, kind): each kind of doubt is told once per file and process
DURATION_SLACK = 0.5  # seconds an event may end past the video's duration (rounding in released annotations)


def read_json(path: str | Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read {what} ({err})") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def is_finite_number(x: Any) -> bool:
    return _is_number(x) and math.isfinite(x)


def as_label_id(x: Any) -> int | None:
    """An integer label id (integral floats accepted), else None."""
    if isinstance(x, bool) or not _is_number(x):
        return None
    if isinstance(x, float) and not x.is_integer():
        return None
    return int(x)


def check_segment(seg: Any, where: str) -> tuple[float, float]:
    if not isinstance(seg, list | tuple) or len(seg) != 2 or not all(is_finite_number(v) for v in seg):
        raise DataError(f"{where}: segment must be [start, end] finite numbers, not {seg!r}")
    start, end = float(seg[0]), float(seg[1])
    if start < 0:
        raise DataError(f"{where}: negative segment start {start}")
    if end < start:
        raise DataError(f"{where}: reversed segment [{start}, {end}]")
    return start, end


def validate_annotations(data: Any, source: str = "annotations", split: str | None = None) -> dict:
    """Check the UnAV-100 layout `{"database": {vid: {duration, subset, annotations: [...]}}}`; returns `data`.
    With `split`, the events of the other subsets are not read (scoring one split needs its own only)."""
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataError(f'{source}: expected a JSON object with a "database" mapping of video ids')
    if _all_valid(data["database"], split):
        return data
    for vid, video in data["database"].items():  # names the first problem
        where = f"{source}: video {vid!r}"
        if not isinstance(video, dict):
            raise DataError(f"{where}: expected an object")
        if not isinstance(video.get("subset"), str):
            raise DataError(f'{where}: missing "subset" (train, validation or test)')
        if split is not None and video["subset"] != split:
            continue
        if "duration" in video and (not is_finite_number(video["duration"]) or video["duration"] < 0):
            raise DataError(f"{where}: duration must be a non-negative number, not {video['duration']!r}")
        events = video.get("annotations", [])
        if not isinstance(events, list):
            raise DataError(f'{where}: "annotations" must be a list')
        for i, event in enumerate(events):
            here = f"{where} event {i}"
            if not isinstance(event, dict):
                raise DataError(f"{here}: expected an object")
            check_segment(event.get("segment"), here)
            lid = as_label_id(event.get("label_id"))
            if lid is None or lid < 0:
                raise DataError(f"{here}: label_id must be a non-negative integer, not {event.get('label_id')!r}")
    return data


_NUMBER = {int, float}


def _all_valid(db: dict, split: str | None) -> bool:
    """True if `validate_annotations` finds nothing wrong, checked at once (numpy) for the events; False when in
    doubt (a type other than JSON's, say), for the one-by-one walk to decide and name the first problem."""
    videos = list(db.values())
    if any(type(v) is not dict or type(v.get("subset")) is not str for v in videos):
        return False
    chosen = [v for v in videos if split is None or v["subset"] == split]
    durations = [v["duration"] for v in chosen if "duration" in v]
    events_lists = [v.get("annotations", []) for v in chosen]
    if {type(d) for d in durations} - _NUMBER or {type(e) for e in events_lists} - {list}:
        return False
    events = [e for es in events_lists for e in es]
    if {type(e) for e in events} - {dict}:
        return False
    segs = [e.get("segment") for e in events]
    labels = [e.get("label_id") for e in events]
    if {type(x) for x in segs} - {list, tuple} or {len(x) for x in segs} - {2}:
        return False
    if {type(v) for x in segs for v in x} - _NUMBER or {type(v) for v in labels} - _NUMBER:
        return False  # also bools and None
    try:
        dur = np.asarray(durations, dtype=np.float64)
        seg = np.asarray(segs, dtype=np.float64).reshape(-1, 2)
        lab = np.asarray(labels, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        return False
    return bool(
        np.isfinite(dur).all()
        and (dur >= 0).all()
        and np.isfinite(seg).all()
        and (seg[:, 0] >= 0).all()
        and (seg[:, 1] >= seg[:, 0]).all()
        and np.isfinite(lab).all()
        and (lab == np.floor(lab)).all()
        and (lab >= 0).all()
    )


def load_annotations(path: str | Path, split: str | None = None) -> dict:
    """The whole UnAV-100 annotation JSON (validated; with `split`, that subset's events only), with its "database"
    key. Doubtful but usable events are warned about once (`doubtful_events`)."""
    data = validate_annotations(read_json(path, "annotations"), str(path), split)
    for kind, message in doubtful_events(data["database"], split).items():
        warn_once(str(path), kind, f"{path}: {message}")
    return data


def warn_once(source: str, kind: str, message: str) -> None:
    """A warning of this kind about `source`, the first time only (a file is read once per split)."""
    if (source, kind) not in _warned:
        _warned.add((source, kind))
        log.warning("%s", message)


def doubtful_events(db: Mapping[str, Any], split: str | None = None) -> dict[str, str]:
    """{kind: message naming the first case} for validated events that are usable but probably wrong: an event
    ending past its video's duration (by more than DURATION_SLACK), and a label id whose label text differs
    between events (the label text is then not the class the id trains)."""
    found: dict[str, str] = {}
    names: dict[int, tuple[str, str]] = {}  # label_id -> (its first label text, the video it came from)
    for vid, video in db.items():
        if split is not None and video.get("subset") != split:
            continue
        duration = video.get("duration")
        for event in video.get("annotations", []):
            end = float(event["segment"][1])
            if "past_duration" not in found and duration is not None and end > float(duration) + DURATION_SLACK:
                found["past_duration"] = (
                    f"video {vid!r}: an event ends at {end:g} s, past the video's duration {float(duration):g} s "
                    "(first of its kind; check the annotations)"
                )
            label = event.get("label")
            if label is None:
                continue
            lid = int(event["label_id"])
            first = names.setdefault(lid, (str(label), vid))
            if "label_text" not in found and first[0] != str(label):
                found["label_text"] = (
                    f"video {vid!r}: label_id {lid} is labelled {str(label)!r}, but {first[0]!r} in video "
                    f"{first[1]!r} (first of its kind; the label_id decides the class)"
                )
    return found


def num_classes_of(annotations: dict) -> int:
    """Classes in an annotation set: one more than the largest label id (100 for UnAV-100)."""
    ids = [int(e["label_id"]) for v in database_of(annotations).values() for e in v.get("annotations", [])]
    return max(ids) + 1 if ids else 0


@dataclass(frozen=True)
class GroundTruth:
    segments: np.ndarray  # (N, 2) seconds
    labels: np.ndarray  # (N,) int64


def read_classes(annotations: dict, classes_tsv: str | Path | None = None) -> list[str]:
    """Class names by label id: from a TSV (label_id, label) when given, else from the annotations."""
    if classes_tsv:
        table = _read_class_table(Path(classes_tsv))
        source = str(classes_tsv)
    else:
        table = {}
        for video in annotations["database"].values():
            for ann in video.get("annotations", []):
                table[int(ann["label_id"])] = ann["label"]
        source = "annotations"
    if sorted(table) != list(range(len(table))):
        raise DataError(f"{source}: class ids must be 0..N-1, got {sorted(table)[:5]}...")
    seen: dict[str, int] = {}
    for label_id in sorted(table):
        if table[label_id] in seen:
            raise DataError(
                f"{source}: class name {table[label_id]!r} is given to label_id {seen[table[label_id]]} and "
                f"{label_id}; class names must be unique"
            )
        seen[table[label_id]] = label_id
    if classes_tsv:
        _warn_label_texts(annotations, table, source)
    largest = num_classes_of(annotations) - 1
    if largest >= len(table):
        raise DataError(f"{source}: the annotations use label_id {largest} but the class list has {len(table)} classes")
    return [table[i] for i in range(len(table))]


def _warn_label_texts(annotations: dict, table: Mapping[int, str], source: str) -> None:
    """Once: the first event whose label text is not its label_id's class name in the class list."""
    for vid, video in annotations["database"].items():
        for ann in video.get("annotations", []):
            label, lid = ann.get("label"), int(ann["label_id"])
            if label is not None and lid in table and str(label) != table[lid]:
                warn_once(
                    source,
                    "label_text",
                    f"{source}: video {vid!r} labels label_id {lid} {str(label)!r}, but the class list calls it "
                    f"{table[lid]!r} (first of its kind; the label_id decides the class)",
                )
                return


def _read_class_table(path: Path) -> dict[int, str]:
    """label_id -> label from a TSV (an optional header line); a repeated id is an error, not a silent overwrite."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter="\t") if r]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text class list (cannot decode it as UTF-8)") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read class list ({err.strerror})") from None
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    table: dict[int, str] = {}
    for row in rows:
        try:
            label_id, label = int(row[0]), row[1]
        except (ValueError, IndexError):
            raise DataError(f"{path}: expected 'label_id<TAB>label' lines") from None
        if label_id in table:
            raise DataError(f"{path}: label_id {label_id} appears twice ({table[label_id]!r} and {label!r})")
        table[label_id] = label
    return table


def ground_truth(annotations: dict, video_id: str) -> GroundTruth:
    anns = annotations["database"][video_id].get("annotations", [])
    segments = np.array([a["segment"] for a in anns], dtype=np.float64).reshape(-1, 2)
    labels = np.array([a["label_id"] for a in anns], dtype=np.int64)
    return GroundTruth(segments, labels)


def _splits_text(annotations: dict) -> str:
    """`splits: test, train, validation`: the subsets the annotations do have, for an error about a missing one."""
    names = sorted({str(d.get("subset")) for d in annotations["database"].values() if d.get("subset")})
    return f"splits: {', '.join(names)}" if names else "no video has a subset"


def split_ids(annotations: dict, split: str) -> list[str]:
    ids = sorted(v for v, d in annotations["database"].items() if d.get("subset") == split)
    if not ids:
        raise DataError(f"no videos in split {split!r} of the annotations ({_splits_text(annotations)})")
    return ids


def database_of(annotations: Mapping) -> Mapping:
    return annotations["database"] if isinstance(annotations.get("database"), Mapping) else annotations
