"""Where `detect`'s answers go, decided before any work: one file, files in a folder, standard output, or
nowhere (the caller prints a table); and writing one video's events there. The CLI and the Python API share it, so
an output that cannot be written fails before a model is loaded."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from avdet.errors import DataError
from avdet.pipeline.io.atomic import is_special
from avdet.pipeline.io.guard import refuse_foreign, refuse_inputs
from avdet.pipeline.io.media import video_id
from avdet.pipeline.io.writers import FORMATS, STDOUT, output_format, write_events, write_events_file
from avdet.pipeline.types import Event


def plan_outputs(
    paths: list[Path],
    out_path: Path | None,
    fmt: str | None,
    plot: Path | None,
    *,
    checkpoints: Iterable[Path] = (),
    overwrite: bool = False,
) -> dict[str, Path]:
    """{video path: where its events go}: one file, files in a folder, standard output (`--out -`, or `--format`
    without `--out`), or nothing at all (empty: a table). Fails (DataError) before any work on an output that
    cannot be written, that is one of the inputs (a video, a checkpoint), or that is an existing file detect did not
    write (unless `overwrite`; see io/guard.py)."""
    targets = _plan(paths, out_path, fmt, plot)
    outputs = [("--out", t) for t in targets.values() if t != STDOUT] + [("--plot", plot)]
    inputs = [("video", p) for p in paths] + [("checkpoint", c) for c in checkpoints]
    refuse_inputs(outputs, inputs)
    refuse_foreign([t for _, t in outputs], overwrite)
    return targets


def _plan(paths: list[Path], out_path: Path | None, fmt: str | None, plot: Path | None) -> dict[str, Path]:
    if plot is not None and len(paths) > 1:
        raise DataError("--plot draws one video's timeline; give one video")
    if out_path is None and fmt is None:
        return {}
    if out_path is None or out_path == STDOUT:
        if len(paths) > 1 and fmt in ("srt", "vtt"):
            raise DataError(f"{fmt} on standard output holds one video; give --out FOLDER for several")
        return {str(p): STDOUT for p in paths}
    if len(paths) == 1 and is_special(out_path):  # /dev/stdout, a fifo: written in place
        return {str(paths[0]): out_path}
    if len(paths) == 1 and (out_path.suffix or not out_path.is_dir()):
        if fmt is None:
            output_format(out_path)  # unknown suffix: fail before any work
        _check_format_agrees(out_path, fmt)
        _make_folder(out_path.parent)  # as `--out DIR` creates its folder
        _check_writable(out_path.parent)
        return {str(paths[0]): out_path}
    targets = {str(p): out_path / f"{video_id(p)}.{fmt or 'json'}" for p in paths}
    _refuse_shared_targets(targets)
    _make_folder(out_path)
    _check_writable(out_path)
    return targets


def _check_format_agrees(out_path: Path, fmt: str | None) -> None:
    """`--out x.json --format srt` would put SRT into a file named .json: refused. A suffix that names no format
    (`--out events.txt --format srt`) is the user's choice."""
    named = FORMATS.get(out_path.suffix.lower())
    if fmt is not None and named is not None and named != fmt:
        raise DataError(f"{out_path}: the suffix says {named} but --format says {fmt}; make them agree")


def _refuse_shared_targets(targets: dict[str, Path]) -> None:
    """Two videos of the same name (in different folders) would write the same output file: one would be lost."""
    seen: dict[Path, str] = {}
    for video, target in targets.items():
        if target in seen:
            raise DataError(
                f"{seen[target]} and {video} would both write {target}: rename one, or run detect on each folder "
                "with its own --out"
            )
        seen[target] = video


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission: one line, before any work
        raise DataError(f"{folder}: cannot create the output folder ({err.strerror or err})") from None


def _check_writable(folder: Path) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise DataError(f"{folder}: output folder is not writable")


def write_detection(
    target: Path,
    events: list[Event],
    *,
    video: str,
    duration: float,
    model: str,
    fmt: str | None,
    operating_point: dict,
    several: bool,
) -> None:
    """One video's events to `target` (a file written atomically, or standard output: indented JSON for one video,
    JSON Lines for `several`)."""
    if target == STDOUT:
        write_events(
            sys.stdout,
            fmt or "json",
            video=video,
            duration=duration,
            model=model,
            events=events,
            operating_point=operating_point,
            indent=None if several else 2,
        )
        sys.stdout.flush()
        return
    write_events_file(
        target,
        events,
        video=video,
        duration=duration,
        model=model,
        fmt=fmt or ("json" if is_special(target) else None),  # /dev/stdout has no suffix
        operating_point=operating_point,
    )
