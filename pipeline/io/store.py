"""The feature store: one `.npz` per (video content, extractor config), written atomically, plus a SQLite index.

Layout under the root:
    index.sqlite                      what was done / failed (with the reason) and how long it took
    index.lock                        held while a process creates or checks the index
    <extractor hash>/spec.json        the extractor spec the hash stands for
    <extractor hash>/<k[:2]>/<k>.npz  features of the video whose content key (SHA-256 of every byte) is `k`

A video is known by the hash of its whole content, so two videos that differ in any byte never share features, and
several files (ids) with the same bytes share one feature file, each with its own index row. Hashing costs a small
part of decoding (docs/guarantees.md), and an unchanged file is not hashed again: the index remembers its hash by
(device, inode, size, mtime, ctime) and a sample of its bytes.

A file exists under its final name only once complete (temp file + fsync + rename), so a killed run never leaves
anything that reads back as done. A per-file `flock` makes concurrent writers (several `extract` processes, Ray
workers) wait for each other instead of extracting the same video twice; the OS drops the lock if one is killed.
A disk that refuses a write (full, read-only, I/O error) is a `StoreWriteError` naming the path, never taken for a
damaged index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avdet.errors import DecodeError, StoreError, StoreWriteError
from avdet.extractors.base import Features
from avdet.pipeline.io.atomic import clean_stale_temps, write_bytes_atomic

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes read per step while hashing (larger blocks are no faster)
_SAMPLE = 1 << 16  # bytes of each of the three samples that check a remembered hash
_RACY_NS = 2_000_000_000  # a file changed this recently is not remembered: a second change may keep its timestamps
# 1: keys were BLAKE2b of three 1 MiB samples (two videos could share them); 2: SHA-256 of every byte, ids share keys
INDEX_VERSION = 2
_LEGACY_KEY = re.compile(r"[0-9a-f]{32}")  # a version-1 key: never served, its file is removed on migration
_ENTRIES = """
CREATE TABLE IF NOT EXISTS entries (
    video_key TEXT NOT NULL,          -- SHA-256 of the content, or 'path:<abs path>' when the file is unreadable
    extractor TEXT NOT NULL,          -- extractor config hash
    video_id TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,             -- 'done' | 'failed'
    reason TEXT,
    rows INTEGER,
    media_seconds REAL,
    wall_seconds REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (video_key, extractor, video_id)  -- several ids (files) may share one content
)"""
_SCHEMA = (
    _ENTRIES
    + """;
CREATE INDEX IF NOT EXISTS entries_by_id ON entries (video_id, extractor);
CREATE TABLE IF NOT EXISTS content_keys (  -- remembered hashes of files, valid while all these fields are unchanged
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sample TEXT NOT NULL,             -- `sample_digest` of the file
    video_key TEXT NOT NULL,
    PRIMARY KEY (device, inode)
);
"""
)
_COLUMNS = "video_key, extractor, video_id, path, status, reason, rows, media_seconds, wall_seconds, updated"
# Every statement in one place (mutation testing leaves module constants alone: SQL's keywords in another case are
# the same statement, a mutant no test can tell apart).
_JOURNAL_MODE, _WAL, _VERSION = "PRAGMA journal_mode", "PRAGMA journal_mode=WAL", "PRAGMA user_version"
_CHECK, _BUSY_TIMEOUT = "PRAGMA quick_check", "PRAGMA busy_timeout=60000"
_HAS_ENTRIES = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='entries'"
_MIGRATE = f"""BEGIN IMMEDIATE;
ALTER TABLE entries RENAME TO entries_v1;
DROP INDEX IF EXISTS entries_by_id;
{_ENTRIES};
INSERT OR REPLACE INTO entries SELECT {_COLUMNS} FROM entries_v1 WHERE status != 'done';
DROP TABLE entries_v1;
PRAGMA user_version={INDEX_VERSION};
COMMIT;"""
_SET_VERSION = f"PRAGMA user_version={INDEX_VERSION}"
_DELETE_FAILED = "DELETE FROM entries WHERE path=? AND extractor=? AND status='failed'"
_INSERT_ENTRY = f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_ENTRIES = (
    "SELECT video_id, path, status, reason, rows, media_seconds, wall_seconds FROM entries WHERE extractor=?"
)
_AND_STATUS = " AND status=?"
_BY_ID = " ORDER BY video_id"
_KEYS_OF_ID = "SELECT video_key FROM entries WHERE video_id=? AND extractor=? AND status='done' ORDER BY updated DESC"
_REMEMBERED_KEY = (
    "SELECT video_key FROM content_keys "
    + "WHERE device=? AND inode=? AND size=? AND mtime_ns=? AND ctime_ns=? AND sample=?"
)
_REMEMBER_KEY = "INSERT OR REPLACE INTO content_keys VALUES (?, ?, ?, ?, ?, ?, ?)"
_FORGET = "DELETE FROM entries WHERE video_key=? AND extractor=?"
_FORGET_RECIPE = "DELETE FROM entries WHERE extractor=?"


def default_cache_dir() -> Path:
    """$AVDET_CACHE, else ~/.cache/avdet/features."""
    return Path(os.environ.get("AVDET_CACHE", Path.home() / ".cache" / "avdet" / "features"))


def _read_error(path: Path, err: OSError) -> DecodeError:
    if isinstance(err, FileNotFoundError):
        return DecodeError(path, "no such file")
    return DecodeError(path, f"cannot read ({err.strerror or err})")


def fingerprint(path: str | Path) -> str:
    """The content key of a file: SHA-256 of every byte (64 hex digits), independent of its name and location.

    SHA-256 runs in hardware on current x86 and ARM CPUs: hashing a video costs a few percent of decoding it."""
    path = Path(path)
    h = hashlib.sha256()
    block = bytearray(_CHUNK)
    view = memoryview(block)
    try:
        with path.open("rb") as f:
            while n := f.readinto(block):
                h.update(view[:n])
    except OSError as err:
        raise _read_error(path, err) from None
    return h.hexdigest()


def sample_digest(path: str | Path, size: int) -> str:
    """BLAKE2b of the size and three 64 KiB samples (head, middle, tail): checks a remembered content key against
    the file's bytes at a cost of three small reads. Never a key itself: files can share every sample."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with Path(path).open("rb") as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            f.seek(offset)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def is_legacy_key(video_key: str) -> bool:
    """A key written before content keys (index version 1): features of a sampled fingerprint, never served."""
    return _LEGACY_KEY.fullmatch(video_key) is not None


def _state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must stay equal for a remembered hash to hold: which file it is, its size and both change times."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _index_error(path: Path, err: sqlite3.Error) -> StoreError:
    """An SQLite error as one line naming the index: damage (rebuilt from the feature files), a disk that refused a
    write (full, read-only, I/O error: stop, the index is left as it is), or anything else."""
    name = getattr(err, "sqlite_errorname", "") or ""  # Python >= 3.11
    text = (str(err).splitlines() or [type(err).__name__])[0]
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        not name and ("malformed" in text or "not a database" in text)
    ):
        return _IndexDamaged(path, text)
    disk = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")
    if name.startswith(disk) or (not name and any(w in text for w in ("disk", "readonly", "unable to open"))):
        return StoreWriteError(f"{path}: cannot write the feature index ({text})")
    return StoreError(f"{path}: feature index error ({text})")


class _IndexDamaged(StoreError):
    """The index file is damaged (not a full disk): it is moved aside and rebuilt from the feature files."""

    def __init__(self, path: Path, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{path}: damaged feature index ({reason})")


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
def exclusive_lock(path: Path, error: type[StoreError] = StoreError) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing); the OS releases it if the process dies. A lock
    file that cannot be created (full or read-only disk) is `error`, naming it."""
    try:
        handle = open(path, "a+b")  # noqa: SIM115 (closed below; the with-block must not catch the body's errors)
    except OSError as err:
        raise error(f"{path}: cannot create the lock file ({err.strerror or err})") from None
    with handle:
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
        with exclusive_lock(self.root / "index.lock", StoreWriteError):
            try:
                self._open_index()
            except _IndexDamaged as err:  # truncated, garbled, not a database: the feature files are intact
                self._rebuild_index(err.reason)

    def _open_index(self) -> None:
        with self._db() as db:
            if db.execute(_JOURNAL_MODE).fetchone()[0] != "wal":
                db.execute(_WAL)  # persistent: stored in the database file
            version = db.execute(_VERSION).fetchone()[0]
            old = db.execute(_HAS_ENTRIES).fetchone()
            if old is not None and version < INDEX_VERSION:
                self._migrate(db)
            db.executescript(_SCHEMA)
            if version < INDEX_VERSION:
                db.execute(_SET_VERSION)
            check = db.execute(_CHECK).fetchone()[0]
            if check != "ok":
                raise _IndexDamaged(self._db_path, check)

    def _migrate(self, db: sqlite3.Connection) -> None:
        """A version-1 index (keys of sampled bytes, one id per content): its done entries are dropped and their
        files removed, so `extract` computes them again under content keys; its failure records are kept. Features
        a sampled key found may belong to another video, so none is carried over."""
        db.executescript(_MIGRATE)
        removed = self._remove_legacy_files()
        log.warning(
            "%s: feature index of an older avdet (videos keyed by sampled bytes, which two videos can share); "
            "its %d feature files were removed: `avdet extract` computes them again",
            self._db_path,
            removed,
        )

    def _remove_legacy_files(self) -> int:
        """Remove the feature files under version-1 keys; returns how many there were."""
        removed = 0
        for npz in self.root.glob("*/??/*.npz"):
            if is_legacy_key(npz.stem):
                with contextlib.suppress(FileNotFoundError):
                    npz.unlink()
                    removed += 1
        return removed

    def _rebuild_index(self, reason: str) -> None:
        """Move the damaged index aside and rebuild it from the feature files (each carries its video id, path and
        duration); files written before they carried them are indexed again by the next `extract`."""
        aside = self._db_path.with_name(f"index.sqlite.damaged-{int(time.time())}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self._db_path}{suffix}")
                if src.exists():
                    src.replace(Path(f"{aside}{suffix}"))
        except OSError as os_err:
            raise StoreWriteError(f"{self._db_path}: damaged feature index, cannot move it aside ({os_err})") from None
        self._open_index()
        self._remove_legacy_files()
        indexed = skipped = 0
        for npz in sorted(self.root.glob("*/??/*.npz")):
            meta = _feature_meta(npz)
            if meta is None:
                skipped += 1
                continue
            self.record(video_key=npz.stem, extractor=npz.parent.parent.name, status="done", **meta)
            indexed += 1
        log.warning(
            "%s: damaged feature index (%s), moved to %s and rebuilt from %d feature files%s",
            self._db_path,
            reason,
            aside.name,
            indexed,
            f" ({skipped} older or unreadable files are indexed again by the next `avdet extract`)" if skipped else "",
        )

    # -- index ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the index; an SQLite error becomes a one-line `StoreError` (`_index_error`)."""
        try:
            db = sqlite3.connect(self._db_path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as err:
            raise _index_error(self._db_path, err) from None
        try:
            db.execute(_BUSY_TIMEOUT)
            yield db
        except sqlite3.Error as err:
            raise _index_error(self._db_path, err) from None
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
                db.execute(_DELETE_FAILED, (str(path), extractor))
            db.execute(
                _INSERT_ENTRY,
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
        query = _SELECT_ENTRIES
        args: tuple = (extractor,)
        if status:
            query += _AND_STATUS
            args += (status,)
        with self._db() as db:
            return [Entry(*row) for row in db.execute(query + _BY_ID, args)]

    def key_for_id(self, video_id: str, extractor: str) -> str | None:
        """The content key of the newest done entry for `video_id`, if any (an entry an older avdet wrote into
        this index under a sampled key is passed over: its features may be another video's)."""
        with self._db() as db:
            rows = db.execute(_KEYS_OF_ID, (video_id, extractor)).fetchall()
        return next((key for (key,) in rows if not is_legacy_key(key)), None)

    def content_key(self, path: str | Path) -> str:
        """`fingerprint(path)`, remembered in the index: a file whose device, inode, size, mtime, ctime and
        `sample_digest` are those of its last hashing is not read again. A file changed less than `_RACY_NS` before
        its hashing is not remembered (a second change within the timestamps' resolution could go unseen)."""
        path = Path(path)
        try:
            before = os.stat(path)
            sample = sample_digest(path, before.st_size)
        except OSError as err:
            raise _read_error(path, err) from None
        state = _state(before)
        with self._db() as db:
            row = db.execute(_REMEMBERED_KEY, (*state, sample)).fetchone()
        if row is not None:
            return row[0]
        started = time.time_ns()
        key = fingerprint(path)
        try:
            after = os.stat(path)
        except OSError as err:
            raise _read_error(path, err) from None
        if _state(after) == state and max(after.st_mtime_ns, after.st_ctime_ns) < started - _RACY_NS:
            with self._db() as db:
                db.execute(_REMEMBER_KEY, (*state, sample, key))
        return key

    # -- files ---------------------------------------------------------------------------------------------
    def register_spec(self, spec: dict) -> str:
        key = spec_hash(spec)
        folder = self.root / key
        _make_folder(folder)
        target = folder / "spec.json"
        if _read_spec(target) != spec:  # missing or damaged: (re)write it, the folder name is its hash
            write_bytes_atomic(target, json.dumps(spec, sort_keys=True, indent=2).encode(), StoreWriteError)
        clean_stale_temps(folder, recursive=True)
        return key

    def specs(self, name: str) -> list[tuple[str, dict]]:
        """(key, spec) of every registered recipe of the extractor `name` (each spec's folder in the store)."""
        found = []
        for spec_file in sorted(self.root.glob("*/spec.json")):
            spec = _read_spec(spec_file)
            if spec is None:
                log.warning("%s: damaged extractor spec, skipped (the next `avdet extract` rewrites it)", spec_file)
                continue
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
        _make_folder(target.parent)
        with exclusive_lock(target.with_suffix(".lock"), StoreWriteError):
            yield

    def save(
        self, video_key: str, extractor: str, features: StoredFeatures, *, video_id: str = "", path: str = ""
    ) -> Path:
        """Write one feature file; `video_id` and `path` go into it too, so a damaged index can be rebuilt."""
        data = npz_bytes(
            {
                "visual": features.visual.values,
                "visual_times": features.visual.times,
                "audio": features.audio.values,
                "audio_times": features.audio.times,
                "duration": np.float64(features.duration),
                "video_id": np.str_(video_id),
                "path": np.str_(path),
            }
        )
        target = self.path_for(video_key, extractor)
        _make_folder(target.parent)
        write_bytes_atomic(target, data, StoreWriteError)  # a failed write leaves no file: the temp is removed
        return target

    def load_key(self, video_key: str, extractor: str) -> StoredFeatures:
        path = self.path_for(video_key, extractor)
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = StoredFeatures(
                    visual=Features(z["visual"], z["visual_times"]),
                    audio=Features(z["audio"], z["audio_times"]),
                    duration=float(z["duration"]),
                )
        except FileNotFoundError:
            raise StoreError(f"{path}: features not in the cache (run `avdet extract` first)") from None
        except Exception as err:  # a damaged .npz raises EOFError, BadZipFile, ValueError, KeyError, zlib.error ...
            reason = "empty file" if path.stat().st_size == 0 else (str(err).splitlines() or [type(err).__name__])[0]
            raise StoreError(f"{path}: unreadable feature file ({reason}); `avdet extract` recomputes it") from None
        for name, values in (("visual", stored.visual.values), ("audio", stored.audio.values)):
            if not np.isfinite(values).all():
                raise StoreError(
                    f"{path}: {name} features hold non-finite values (NaN or inf); `avdet extract` recomputes it"
                )
        return stored

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
            return sum(db.execute(_FORGET, key).rowcount for key in keys)

    def forget_recipe(self, extractor: str) -> int:
        """Drop every index row of one extractor recipe (its folder is the caller's to remove)."""
        with self._db() as db:
            return db.execute(_FORGET_RECIPE, (extractor,)).rowcount


def _make_folder(folder: Path) -> None:
    """mkdir -p for a store folder; a disk that refuses it is a `StoreWriteError` naming the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreWriteError(f"{folder}: cannot create the folder ({err.strerror or err})") from None


def _read_spec(path: Path) -> dict | None:
    """An extractor spec file, or None when it is missing or damaged."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON or undecodable bytes
        return None
    return spec if isinstance(spec, dict) else None


def _feature_meta(path: Path) -> dict | None:
    """The index fields a feature file carries (None for a file written before it carried them, or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "video_id" not in z.files or not str(z["video_id"]):
                return None
            rows = len(z["visual"])
            return {
                "video_id": str(z["video_id"]),
                "path": str(z["path"]),
                "rows": rows,
                "media_seconds": float(z["duration"]),
            }
    except Exception:  # damaged: not indexed; `extract` recomputes it
        return None


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
