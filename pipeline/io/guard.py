"""Outputs never replace inputs, and avdet never replaces a file it did not make unless told to (`--overwrite`).

Every command that writes files checks its targets here before any work (pure checks on paths and file heads):

- `refuse_inputs`: no output may be the same file as an input of the same command: same real path (symlinks
  resolved) or the same inode (hard links, bind mounts).
- `refuse_foreign`: an existing output file is replaced only when avdet recognisably wrote it (`made_by_avdet`), or
  with `--overwrite`. What counts as avdet's own, by content (never by name alone):
    * an empty file (nothing to lose);
    * `.json`: an events document of `detect` (an object with "video" and an "events" list), a predictions file of
      `eval` (a "database" whose entries are lists of predictions), or annotations written by `make-sample`
      ("version" "avdet-sample-...");
    * `.vtt`: WebVTT whose first note is `detect`'s ("NOTE avdet events of ...");
    * `.srt`: every cue is one of `detect`'s (`label (score)` / `label (modality, score)`);
    * `.png`: a picture carrying avdet's PNG text chunk (`Software` = `avdet`, written by every avdet plot).
  Anything else (a video, a checkpoint, a user's annotations or subtitles, any other file) is a user's file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from avdet.errors import DataError
from avdet.pipeline.io.atomic import is_special

PNG_SOFTWARE = "avdet"  # the PNG `Software` text chunk of avdet's plots (matplotlib's savefig metadata)
_PNG_MARK = b"tEXtSoftware\x00" + PNG_SOFTWARE.encode()
_HEAD_BYTES = 1 << 16  # a PNG's text chunks come before its image data
_JSON_LIMIT = 1 << 28  # larger JSON files are never read to recognise them (a user's, as far as we know)
_SRT_CUE = re.compile(
    r"\d+\n\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d\n[^\n]* \((?:[^()\n]*, )?\d+\.\d\d\)",
)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: equal real paths, or (both existing) the same device and inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(outputs: Iterable[tuple[str, Path | None]], inputs: Iterable[tuple[str, Path | None]]) -> None:
    """DataError when an output ((role, path); None skipped) is the same file as an input of the same command."""
    given = [(role, path) for role, path in inputs if path is not None]
    for out_role, out in outputs:
        if out is None or str(out) == "-":
            continue
        for in_role, source in given:
            if str(source) != "-" and same_file(out, source):
                raise DataError(
                    f"{out}: {out_role} would replace the {in_role} {source} this command reads; give another path"
                )


def _is_avdet_json(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    if "video" in doc and isinstance(doc.get("events"), list):  # detect's events document
        return True
    if str(doc.get("version", "")).startswith("avdet-sample"):  # make-sample's annotations
        return True
    database = doc.get("database")  # eval's predictions: each video maps to a list (ground truth: to an object)
    return (
        set(doc) == {"database"}
        and isinstance(database, dict)
        and bool(database)  # an empty database says nothing: a user's, as far as we know
        and all(isinstance(v, list) for v in database.values())
    )


def made_by_avdet(path: str | Path) -> bool:
    """Whether the existing regular file `path` is recognisably one avdet writes (module docstring); False for
    anything unreadable or unrecognised."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return True
        suffix = path.suffix.lower()
        if suffix == ".png":
            with open(path, "rb") as f:
                return _PNG_MARK in f.read(_HEAD_BYTES)
        if suffix not in (".json", ".srt", ".vtt") or size > _JSON_LIMIT:
            return False
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if suffix == ".json":
        try:
            return _is_avdet_json(json.loads(text))
        except ValueError:
            return False
    if suffix == ".vtt":
        return text.startswith("WEBVTT\n\nNOTE avdet events of ")
    cues = [c for c in text.replace("\r\n", "\n").split("\n\n") if c.strip()]
    return all(_SRT_CUE.fullmatch(c.strip("\n")) for c in cues)


def refuse_foreign(targets: Iterable[Path | None], overwrite: bool, flag: str = "--overwrite") -> None:
    """DataError when a target is an existing regular file avdet did not make (`made_by_avdet`), unless
    `overwrite`. Missing targets, folders and special files (pipes, /dev/stdout) pass."""
    if overwrite:
        return
    for target in targets:
        if target is None or str(target) == "-" or not os.path.isfile(target) or is_special(target):
            continue
        if not made_by_avdet(target):
            raise DataError(
                f"{target}: exists and is not a file avdet wrote; give another path, or {flag} to replace it"
            )


def check_eval_paths(
    *,
    predictions: Path | None,
    checkpoint: Path | None,
    annotations: Path | None,
    outputs: dict[str, Path | None],
    overwrite: bool,
) -> None:
    """`avdet eval`'s paths before any work: a given annotations file exists (whatever the task: a segment
    checkpoint would otherwise ignore it), no output ({option: path}) replaces an input, and the predictions and
    picture outputs replace only files avdet wrote (unless `overwrite`). `--json`'s report is checked against the
    inputs only."""
    if annotations is not None and not Path(annotations).exists():
        raise DataError(f"{annotations}: annotations file not found")
    inputs = [("predictions", predictions), ("checkpoint", checkpoint), ("annotations", annotations)]
    refuse_inputs(outputs.items(), inputs)
    refuse_foreign([path for option, path in outputs.items() if option != "--json"], overwrite)
