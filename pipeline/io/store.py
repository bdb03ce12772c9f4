"""The feature store: one `.npz` per (video content, extractor config), written atomically, plus a SQLite index.

Layout under the root:
    index.sqlite                      what was done / failed (with the reason) and how long it took
    index.lock                        held while a process creates or checks the index
    <extractor hash>/spec.json        the extractor spec the hash stands for
    <extractor hash>/<fp[:2]>/<fp>.npz  features of the video whose content fingerprint is `fp`

A file exists under its final name only once complete (temp file + fsync + rename), so a killed run never leaves
anything that reads back as done. A per-file `flock` makes concurrent writers (several `extract` processes, Ray
workers) wait for each other instead of extracting the same video twice; the OS drops the lock if one is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import sqlite3
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avdet.errors import DecodeError, StoreError
from avdet.extractors.base import Features
from avdet.pipeline.io.atomic import clean_stale_temps, write_bytes_atomic

_CHUNK = 1 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    video_key TEXT NOT NULL,          -- content fingerprint, or 'path:<abs path>' when the file is unreadable
    extractor TEXT NOT NULL,          -- extractor config hash
    video_id TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,             -- 'done' | 'failed'
    reason TEXT,
    rows INTEGER,
    media_seconds REAL,
    wall_seconds REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (video_key, extractor)
);
CREATE INDEX IF NOT EXISTS entries_by_id ON entries (video_id, extractor);
"""


def default_cache_dir() -> Path:
    """$AVDET_CACHE, else ~/.cache/avdet/features."""
    return Path(os.environ.get("AVDET_CACHE", Path.home() / ".cache" / "avdet" / "features"))


def fingerprint(path: str | Path) -> str:
    """Content fingerprint: BLAKE2b of the size and three 1 MiB samples (head, middle, tail).

    Independent of the file's name and location; reading 3 MiB keeps it cheap for multi-GB videos.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        h = hashlib.blake2b(str(size).encode(), digest_size=16)
        with path.open("rb") as f:
            for offset in sorted({0, max(0, size // 2 - _CHUNK // 2), max(0, size - _CHUNK)}):
                f.seek(offset)
                h.update(f.read(_CHUNK))
    except FileNotFoundError:
        raise DecodeError(path, "no such file") from None
    except OSError as err:
        raise DecodeError(path, f"cannot read ({err.strerror})") from None
    return h.hexdigest()


def spec_hash(spec: dict) -> str:
    """Hash of an extractor spec (primitives only): a changed config never reuses stale features."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    video_id: str
    path: str
    status: str
    reason: str | None
    rows: int | None
    media_seconds: float | None
    wall_seconds: float | None


@dataclass(frozen=True)
class StoredFeatures:
    visual: Features
    audio: Features
    duration: float


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing); the OS releases it if the process dies."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FeatureStore:
    """Features of videos under one cache root; safe for concurrent processes on one filesystem."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise StoreError(f"{self.root}: cache folder is not writable ({err.strerror or err})") from None
        self._db_path = self.root / "index.sqlite"
        # One process at a time creates the index: switching a new database to WAL needs exclusive access, and
        # SQLite answers "database is locked" at once instead of waiting when processes start together.
        with exclusive_lock(self.root / "index.lock"), self._db() as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
            db.executescript(_SCHEMA)

    # -- index ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=60.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        finally:
            db.close()

    def record(
        self,
        *,
        video_key: str,
        extractor: str,
        video_id: str,
        path: str | Path,
        status: str,
        reason: str | None = None,
        rows: int | None = None,
        media_seconds: float | None = None,
        wall_seconds: float | None = None,
    ) -> None:
        with self._db() as db:
            if status == "done":  # a fixed file supersedes its earlier failures
                db.execute(
                    "DELETE FROM entries WHERE path=? AND extractor=? AND status='failed'",
                    (str(path), extractor),
                )
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    video_key,
                    extractor,
                    video_id,
                    str(path),
                    status,
                    reason,
                    rows,
                    media_seconds,
                    wall_seconds,
                    time.time(),
                ),
            )

    def entries(self, extractor: str, status: str | None = None) -> list[Entry]:
        query = (
            "SELECT video_id, path, status, reason, rows, media_seconds, wall_seconds FROM entries WHERE extractor=?"
        )
        args: tuple = (extractor,)
        if status:
            query += " AND status=?"
            args += (status,)
        with self._db() as db:
            return [Entry(*row) for row in db.execute(query + " ORDER BY video_id", args)]

    def key_for_id(self, video_id: str, extractor: str) -> str | None:
        """The fingerprint of the newest done entry for `video_id`, if any."""
        with self._db() as db:
            row = db.execute(
                "SELECT video_key FROM entries WHERE video_id=? AND extractor=? AND status='done' "
                "ORDER BY updated DESC LIMIT 1",
                (video_id, extractor),
            ).fetchone()
        return row[0] if row else None

    # -- files ---------------------------------------------------------------------------------------------
    def register_spec(self, spec: dict) -> str:
        key = spec_hash(spec)
        folder = self.root / key
        folder.mkdir(exist_ok=True)
        target = folder / "spec.json"
        if not target.exists():
            write_bytes_atomic(target, json.dumps(spec, sort_keys=True, indent=2).encode(), StoreError)
        clean_stale_temps(folder, recursive=True)
        return key

    def specs(self, name: str) -> list[tuple[str, dict]]:
        """(key, spec) of every registered recipe of the extractor `name` (each spec's folder in the store)."""
        found = []
        for spec_file in sorted(self.root.glob("*/spec.json")):
            spec = json.loads(spec_file.read_text())
            if spec.get("name") == name:
                found.append((spec_file.parent.name, spec))
        return found

    def path_for(self, video_key: str, extractor: str) -> Path:
        return self.root / extractor / video_key[:2] / f"{video_key}.npz"

    def has(self, video_key: str, extractor: str) -> bool:
        return self.path_for(video_key, extractor).is_file()

    @contextlib.contextmanager
    def lock(self, video_key: str, extractor: str) -> Iterator[None]:
        """Exclusive lock for producing one file; waits while another process holds it."""
        target = self.path_for(video_key, extractor)
        target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(target.with_suffix(".lock")):
            yield

    def save(self, video_key: str, extractor: str, features: StoredFeatures) -> Path:
        data = npz_bytes(
            {
                "visual": features.visual.values,
                "visual_times": features.visual.times,
                "audio": features.audio.values,
                "audio_times": features.audio.times,
                "duration": np.float64(features.duration),
            }
        )
        target = self.path_for(video_key, extractor)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data, StoreError)
        return target

    def load_key(self, video_key: str, extractor: str) -> StoredFeatures:
        path = self.path_for(video_key, extractor)
        try:
            with np.load(path) as z:
                return StoredFeatures(
                    visual=Features(z["visual"], z["visual_times"]),
                    audio=Features(z["audio"], z["audio_times"]),
                    duration=float(z["duration"]),
                )
        except FileNotFoundError:
            raise StoreError(f"{path}: features not in the cache (run `avdet extract` first)") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise StoreError(f"{path}: unreadable feature file ({err})") from None

    def load(self, video_id: str, extractor: str) -> StoredFeatures:
        """Features of an extracted video by its id (the file name without suffix)."""
        key = self.key_for_id(video_id, extractor)
        if key is None:
            raise StoreError(f"{video_id}: no features in {self.root} for extractor {extractor}")
        return self.load_key(key, extractor)

    # -- forgetting (`avdet cache verify --fix`, `avdet cache prune`) ---------------------------------------------
    def forget(self, keys: Iterable[tuple[str, str]]) -> int:
        """Drop the index rows of these (video_key, extractor) pairs; returns how many were there."""
        with self._db() as db:
            return sum(
                db.execute("DELETE FROM entries WHERE video_key=? AND extractor=?", key).rowcount for key in keys
            )

    def forget_recipe(self, extractor: str) -> int:
        """Drop every index row of one extractor recipe (its folder is the caller's to remove)."""
        with self._db() as db:
            return db.execute("DELETE FROM entries WHERE extractor=?", (extractor,)).rowcount


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An `.npz` archive (what `np.load` reads) whose members carry a fixed timestamp, so equal arrays give equal
    bytes: `np.savez` stamps the current time, which made identical features differ file-wise."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()
