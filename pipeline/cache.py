"""`avdet cache`: what the feature store holds, what failed and why, damaged files, stale extractor recipes.

Every function returns plain data (dataclasses of primitives, dicts) so the CLI can print it as a table or as JSON.
Reading needs no write access (the index is opened read-only); `verify --fix` and `prune` change the store through
`FeatureStore`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avdet.errors import StoreError
from avdet.pipeline.io.store import FeatureStore


@dataclass(frozen=True)
class CacheEntry:
    """One (video, extractor recipe) row of the index."""

    video_id: str
    path: str  # the video file it came from
    extractor: str  # recipe hash (the spec folder's name)
    name: str  # extractor set name from the recipe's spec.json ("?" when that file is gone)
    status: str  # done | failed
    reason: str | None
    rows: int | None
    media_seconds: float | None
    updated: float  # seconds since the epoch
    video_key: str = field(repr=False)


@dataclass(frozen=True)
class RecipeSummary:
    """One extractor recipe (spec folder) of the store."""

    extractor: str
    name: str
    done: int
    failed: int
    files: int
    bytes: int
    media_seconds: float
    spec: dict


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    missing: list[dict] = field(default_factory=list)  # done in the index, no file
    corrupt: list[dict] = field(default_factory=list)  # done in the index, unreadable file
    fixed: int = 0  # entries forgotten (and files removed) with fix=True, so `extract` redoes them

    @property
    def healthy(self) -> bool:
        return not self.missing and not self.corrupt


@dataclass
class PruneReport:
    dry_run: bool
    recipes: list[dict] = field(default_factory=list)  # {extractor, name, files, bytes, entries}
    failed_forgotten: int = 0

    @property
    def bytes(self) -> int:
        return sum(r["bytes"] for r in self.recipes)


def as_json(value: object) -> str:
    """Any result of this module as JSON text (dataclasses become objects)."""

    def plain(v: object) -> object:
        if isinstance(v, list):
            return [plain(x) for x in v]
        if hasattr(v, "__dataclass_fields__"):
            return {k: plain(x) for k, x in asdict(v).items() if k != "video_key"}
        return v

    return json.dumps(plain(value), indent=2, sort_keys=True)


# -- reading ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _read_index(root: Path) -> Iterator[sqlite3.Connection]:
    index = root / "index.sqlite"
    if not index.is_file():
        raise StoreError(f"{root}: no feature store here (no index.sqlite; run `avdet extract` first)")
    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=60.0)
    except sqlite3.Error as err:
        raise StoreError(f"{index}: cannot open the store index ({err})") from None
    try:
        yield db
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{index}: unreadable store index ({err})") from None
    finally:
        db.close()


def _recipe_names(root: Path) -> dict[str, tuple[str, dict]]:
    """Recipe hash -> (extractor name, spec) from each spec folder's spec.json."""
    found = {}
    for spec_file in sorted(root.glob("*/spec.json")):
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError):
            spec = {}
        found[spec_file.parent.name] = (str(spec.get("name", "?")), spec)
    return found


def cache_entries(root: str | Path, *, status: str | None = None, extractor: str | None = None) -> list[CacheEntry]:
    """Index rows, optionally only one status and/or the recipes whose hash or name is `extractor`."""
    root = Path(root)
    names = _recipe_names(root)
    with _read_index(root) as db:
        rows = db.execute(
            "SELECT video_id, path, extractor, status, reason, rows, media_seconds, updated, video_key FROM entries "
            "ORDER BY extractor, video_id"
        ).fetchall()
    entries = [
        CacheEntry(vid, path, ext, names.get(ext, ("?", {}))[0], st, reason, n, media, upd, key)
        for vid, path, ext, st, reason, n, media, upd, key in rows
    ]
    if status is not None:
        entries = [e for e in entries if e.status == status]
    if extractor is not None:
        entries = [e for e in entries if extractor in (e.name, e.extractor)]
    return entries


def _recipe_files(root: Path, extractor: str) -> tuple[int, int]:
    """(number, total bytes) of the feature files of one recipe."""
    sizes = [f.stat().st_size for f in (root / extractor).glob("*/*.npz")]
    return len(sizes), sum(sizes)


def cache_summary(root: str | Path) -> list[RecipeSummary]:
    """One row per extractor recipe: counts from the index, files and bytes on disk."""
    root = Path(root)
    entries = cache_entries(root)
    hashes = sorted({e.extractor for e in entries} | set(_recipe_names(root)))
    names = _recipe_names(root)
    summary = []
    for ext in hashes:
        mine = [e for e in entries if e.extractor == ext]
        files, size = _recipe_files(root, ext)
        summary.append(
            RecipeSummary(
                extractor=ext,
                name=names.get(ext, ("?", {}))[0],
                done=sum(e.status == "done" for e in mine),
                failed=sum(e.status == "failed" for e in mine),
                files=files,
                bytes=size,
                media_seconds=round(sum(e.media_seconds or 0.0 for e in mine if e.status == "done"), 3),
                spec=names.get(ext, ("?", {}))[1],
            )
        )
    return summary


# -- checking and changing ----------------------------------------------------------------------------------------
def verify_cache(root: str | Path, *, fix: bool = False) -> VerifyReport:
    """Read back every file the index says is done. With `fix`, forget the missing and corrupt ones (and remove the
    corrupt files), so the next `avdet extract` computes them again."""
    root = Path(root)
    entries = cache_entries(root, status="done")
    store = FeatureStore(root)
    report = VerifyReport()
    broken = []
    for e in entries:
        report.checked += 1
        file = store.path_for(e.video_key, e.extractor)
        item = {"video_id": e.video_id, "extractor": e.extractor, "file": str(file)}
        if not file.is_file():
            report.missing.append(item)
            broken.append(e)
            continue
        try:
            store.load_key(e.video_key, e.extractor)
        except StoreError as err:
            report.corrupt.append({**item, "reason": str(err)})
            broken.append(e)
            continue
        report.ok += 1
    if fix and broken:
        for e in broken:
            with contextlib.suppress(FileNotFoundError):
                store.path_for(e.video_key, e.extractor).unlink()
        report.fixed = store.forget((e.video_key, e.extractor) for e in broken)
    return report


def prune_cache(
    root: str | Path,
    *,
    recipes: Iterable[str] = (),
    stale_of: tuple[str, str] | None = None,
    failed: bool = False,
    dry_run: bool = False,
) -> PruneReport:
    """Remove extractor recipes (folders and index rows): those whose hash starts with one of `recipes`, and with
    `stale_of=(name, current hash)` every recipe of that extractor but the current one. With `failed`, forget the
    failure records (the next `extract` tries those videos again). `dry_run` only reports."""
    root = Path(root)
    summary = cache_summary(root)
    chosen = []
    for prefix in recipes:
        matches = [s for s in summary if s.extractor.startswith(prefix)]
        if len(matches) != 1:
            what = "no recipe" if not matches else f"{len(matches)} recipes"
            raise StoreError(f"{root}: {what} with hash {prefix!r} (see `avdet cache list`)")
        chosen.append(matches[0])
    if stale_of is not None:
        name, current = stale_of
        chosen += [s for s in summary if s.name == name and s.extractor != current]
    unique = {s.extractor: s for s in chosen}
    report = PruneReport(dry_run=dry_run)
    report.recipes = [
        {"extractor": s.extractor, "name": s.name, "files": s.files, "bytes": s.bytes, "entries": s.done + s.failed}
        for s in unique.values()
    ]
    failures = [(e.video_key, e.extractor) for e in cache_entries(root, status="failed") if e.extractor not in unique]
    failures = failures if failed else []
    report.failed_forgotten = len(failures)
    if dry_run:
        return report
    store = FeatureStore(root)
    for ext in unique:
        store.forget_recipe(ext)
        shutil.rmtree(root / ext, ignore_errors=True)
    store.forget(failures)
    return report
