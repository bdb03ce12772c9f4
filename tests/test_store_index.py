"""The feature store's index and files, one behaviour at a time and without media: fast enough to run for each of
the mutants `benchmarks/mutation.py` plants in pipeline/io/store.py."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest

import avdet.pipeline.io.store as store_mod
from avdet.errors import DecodeError, StoreError, StoreWriteError
from avdet.extractors.base import Features, grid_times
from avdet.pipeline.io.store import FeatureStore, StoredFeatures, spec_hash

LEGACY = "0123456789abcdef0123456789abcdef"  # a version-1 key: 32 hex digits


def _features(rows: int = 5, seed: int = 0, duration: float | None = None) -> StoredFeatures:
    rng = np.random.default_rng(seed)
    times = grid_times(rows, 0.96, 0.32)
    return StoredFeatures(
        visual=Features(rng.standard_normal((rows, 6)).astype(np.float32), times),
        audio=Features(rng.standard_normal((rows, 4)).astype(np.float32), times + 0.01),
        duration=rows * 0.32 + 0.64 if duration is None else duration,
    )


def _key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore(tmp_path / "cache")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AVDET_CACHE", str(tmp_path / "mine"))
    assert store_mod.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("AVDET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store_mod.default_cache_dir() == tmp_path / ".cache" / "avdet" / "features"


def test_spec_hash_is_a_sha256_prefix_of_the_sorted_json() -> None:
    spec = {"name": "lite", "step_s": 0.32}
    assert spec_hash(spec) == hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def test_new_index_is_wal_of_the_current_version_and_leaves_no_probe(store: FeatureStore) -> None:
    with sqlite3.connect(store.root / "index.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_mod.INDEX_VERSION == 2
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith("index.sqlite-")) == [
        "index.lock",
        "index.sqlite",
    ]


def test_save_layout_and_roundtrip(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    key, feats = _key(1), _features(7, duration=3.5)
    assert not store.has(key, ext)
    path = store.save(key, ext, feats, video_id="v1", path="/v/v1.mp4")
    assert path == store.root / ext / key[:2] / f"{key}.npz" == store.path_for(key, ext)
    assert store.has(key, ext) and not store.has(_key(2), ext)
    back = store.load_key(key, ext)
    for got, want in ((back.visual, feats.visual), (back.audio, feats.audio)):
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.times, want.times)
    assert back.duration == 3.5
    with np.load(path) as z:
        assert str(z["video_id"]) == "v1" and str(z["path"]) == "/v/v1.mp4"
        assert sorted(z.files) == ["audio", "audio_times", "duration", "path", "video_id", "visual", "visual_times"]


def test_has_is_false_for_a_folder(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    store.path_for(_key(1), ext).mkdir(parents=True)
    assert not store.has(_key(1), ext)


def test_npz_bytes_stored_fixed_time_and_readable() -> None:
    data = store_mod.npz_bytes({"a": np.arange(3), "b": np.str_("x")})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == ["a.npy", "b.npy"]
    assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    assert data == store_mod.npz_bytes({"a": np.arange(3), "b": np.str_("x")})


@pytest.mark.parametrize("stream", ["visual", "audio"])
def test_non_finite_features_are_refused(store: FeatureStore, stream: str) -> None:
    ext = store.register_spec({"name": "toy"})
    feats = _features()
    getattr(feats, stream).values[2, 1] = np.inf
    store.save(_key(1), ext, feats)
    with pytest.raises(StoreError, match=f"{stream} features hold non-finite values") as info:
        store.load_key(_key(1), ext)
    assert str(store.path_for(_key(1), ext)) in str(info.value)


def test_missing_and_empty_feature_files(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    with pytest.raises(StoreError, match="features not in the cache"):
        store.load_key(_key(1), ext)
    store.save(_key(1), ext, _features()).write_bytes(b"")
    with pytest.raises(StoreError, match=r"unreadable feature file \(empty file\)"):
        store.load_key(_key(1), ext)


def _row(store: FeatureStore, key: str, ext: str, vid: str, status: str = "done", **extra: object) -> None:
    store.record(video_key=key, extractor=ext, video_id=vid, path=f"/v/{vid}.mp4", status=status, **extra)


def test_record_keeps_every_field_and_entries_filter(store: FeatureStore) -> None:
    _row(store, _key(1), "e1", "b", rows=7, media_seconds=2.5, wall_seconds=0.25, reason="decoded with 1 decode errors")
    _row(store, "path:/v/a.mp4", "e1", "a", status="failed", reason="no such file", wall_seconds=0.5)
    _row(store, _key(2), "e2", "c")
    entries = store.entries("e1")
    assert [(e.video_id, e.status) for e in entries] == [("a", "failed"), ("b", "done")]  # by id
    assert entries[1] == store_mod.Entry("b", "/v/b.mp4", "done", "decoded with 1 decode errors", 7, 2.5, 0.25)
    assert entries[0] == store_mod.Entry("a", "/v/a.mp4", "failed", "no such file", None, None, 0.5)
    assert [e.video_id for e in store.entries("e1", "done")] == ["b"]
    assert [e.video_id for e in store.entries("e1", "failed")] == ["a"]
    assert [e.video_id for e in store.entries("e2")] == ["c"]


def test_done_supersedes_failures_of_that_file_and_recipe_only(store: FeatureStore) -> None:
    for ext in ("e1", "e2"):
        _row(store, "path:/v/a.mp4", ext, "a", status="failed", reason="broken")
    _row(store, "path:/v/b.mp4", "e1", "b", status="failed", reason="broken")
    _row(store, _key(1), "e1", "a")
    assert [(e.video_id, e.status) for e in store.entries("e1")] == [("a", "done"), ("b", "failed")]
    assert [(e.video_id, e.status) for e in store.entries("e2")] == [("a", "failed")]


def test_several_ids_share_one_content_and_newest_wins(store: FeatureStore) -> None:
    _row(store, _key(1), "e", "first")
    _row(store, _key(1), "e", "second")
    assert [e.video_id for e in store.entries("e", "done")] == ["first", "second"]
    assert store.key_for_id("first", "e") == store.key_for_id("second", "e") == _key(1)
    _row(store, _key(2), "e", "first")  # the file changed: its newest content
    assert store.key_for_id("first", "e") == _key(2)
    _row(store, _key(1), "e", "first")  # and back
    assert store.key_for_id("first", "e") == _key(1)
    assert store.key_for_id("first", "other") is None
    _row(store, _key(3), "e", "failing", status="failed")
    assert store.key_for_id("failing", "e") is None


def test_load_by_id_names_the_id_and_the_cache(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    with pytest.raises(StoreError) as info:
        store.load("nope", ext)
    assert str(info.value) == f"nope: no features in {store.root} for extractor {ext}"
    store.save(_key(1), ext, _features(4, seed=3))
    _row(store, _key(1), ext, "v")
    np.testing.assert_array_equal(store.load("v", ext).visual.values, _features(4, seed=3).visual.values)


def test_forget_and_forget_recipe_count_what_they_drop(store: FeatureStore) -> None:
    _row(store, _key(1), "e1", "a")
    _row(store, _key(1), "e1", "b")
    _row(store, _key(2), "e1", "c")
    _row(store, _key(1), "e2", "a")
    assert store.forget([(_key(1), "e1"), (_key(9), "e1")]) == 2
    assert [e.video_id for e in store.entries("e1")] == ["c"]
    assert store.forget_recipe("e2") == 1
    assert store.entries("e2") == [] and [e.video_id for e in store.entries("e1")] == ["c"]


def test_specs_by_name_and_damaged_spec_skipped(store: FeatureStore, caplog: pytest.LogCaptureFixture) -> None:
    a1, a2 = store.register_spec({"name": "a", "x": 1}), store.register_spec({"name": "a", "x": 2})
    store.register_spec({"name": "b"})
    assert a1 == spec_hash({"name": "a", "x": 1})
    assert json.loads((store.root / a1 / "spec.json").read_text()) == {"name": "a", "x": 1}
    assert store.specs("a") == sorted([(a1, {"name": "a", "x": 1}), (a2, {"name": "a", "x": 2})])
    (store.root / a2 / "spec.json").write_text("[1, 2]")  # JSON, not a spec
    with caplog.at_level(logging.WARNING):
        assert store.specs("a") == [(a1, {"name": "a", "x": 1})]
    assert "damaged extractor spec" in caplog.text and str(store.root / a2 / "spec.json") in caplog.text
    assert store.register_spec({"name": "a", "x": 2}) == a2  # rewritten
    assert json.loads((store.root / a2 / "spec.json").read_text()) == {"name": "a", "x": 2}


def test_damaged_index_is_moved_aside_and_rebuilt_exactly(store: FeatureStore, caplog: pytest.LogCaptureFixture):
    ext = store.register_spec({"name": "toy"})
    store.save(_key(1), ext, _features(7, duration=3.0), video_id="v1", path="/v/v1.mp4")
    store.save(_key(2), ext, _features(4, duration=1.5), video_id="v2", path="/v/v2.mp4")
    store.save(_key(3), ext, _features(4), video_id="", path="")  # written before files carried their id
    store.path_for(_key(4), ext).parent.mkdir(parents=True, exist_ok=True)
    store.path_for(_key(4), ext).write_bytes(b"garbage")
    index = store.root / "index.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(b"not a database at all" * 100)
    with caplog.at_level(logging.WARNING):
        rebuilt = FeatureStore(store.root)
    entries = rebuilt.entries(ext)
    assert entries == [
        store_mod.Entry("v1", "/v/v1.mp4", "done", None, 7, 3.0, None),
        store_mod.Entry("v2", "/v/v2.mp4", "done", None, 4, 1.5, None),
    ]
    assert rebuilt.key_for_id("v1", ext) == _key(1)
    (aside,) = store.root.glob("index.sqlite.damaged-*")
    assert aside.read_bytes() == b"not a database at all" * 100
    assert "damaged feature index" in caplog.text and aside.name in caplog.text
    assert "rebuilt from 2 feature files (2 older or unreadable files" in caplog.text


def test_index_error_kinds() -> None:
    path = Path("/c/index.sqlite")

    def err(text: str, name: str | None) -> sqlite3.Error:
        e = sqlite3.OperationalError(text)
        if name is not None:
            e.sqlite_errorname = name  # type: ignore[attr-defined]
        return e

    for name in ("SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"):
        got = store_mod._index_error(path, err("some text\nmore", name))
        assert type(got) is StoreWriteError and str(got) == f"{path}: cannot write the feature index (some text)"
    for name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        assert type(store_mod._index_error(path, err("x", name))) is store_mod._IndexDamaged
    plain = store_mod._index_error(path, err("database is locked", "SQLITE_BUSY"))
    assert type(plain) is StoreError and str(plain) == f"{path}: feature index error (database is locked)"
    # Python 3.10 has no error names: the message tells
    assert type(store_mod._index_error(path, err("database disk image is malformed", None))) is store_mod._IndexDamaged
    assert type(store_mod._index_error(path, err("file is not a database", None))) is store_mod._IndexDamaged
    for text in ("database or disk is full", "disk I/O error", "attempt to write a readonly database"):
        assert type(store_mod._index_error(path, err(text, None))) is StoreWriteError
    assert type(store_mod._index_error(path, err("unable to open database file", None))) is StoreWriteError
    assert type(store_mod._index_error(path, err("no such table: x", None))) is StoreError
    assert "(OperationalError)" in str(store_mod._index_error(path, err("", None)))


def _version1_index(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    db.executescript(
        """CREATE TABLE entries (video_key TEXT NOT NULL, extractor TEXT NOT NULL, video_id TEXT NOT NULL,
        path TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, rows INTEGER, media_seconds REAL, wall_seconds REAL,
        updated REAL NOT NULL, PRIMARY KEY (video_key, extractor));
        CREATE INDEX entries_by_id ON entries (video_id, extractor);"""
    )
    rows = [
        (LEGACY, "e", "old", "/v/old.mp4", "done", None, 5, 2.0, 1.0, 1.0),
        (LEGACY.replace("0", "f"), "e", "old2", "/v/old2.mp4", "done", None, 5, 2.0, 1.0, 1.0),
        ("path:/v/bad.mp4", "e", "bad", "/v/bad.mp4", "failed", "no such file", None, None, 0.5, 2.0),
        (LEGACY.replace("1", "e"), "e", "dec", "/v/dec.mp4", "failed", "truncated", None, None, 0.5, 3.0),
    ]
    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


def test_version1_index_is_migrated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    _version1_index(root)
    legacy_file = root / "e" / LEGACY[:2] / f"{LEGACY}.npz"
    legacy_file.parent.mkdir(parents=True)
    legacy_file.write_bytes(store_mod.npz_bytes({"visual": np.zeros((2, 2))}))
    kept = root / "e" / _key(1)[:2] / f"{_key(1)}.npz"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"a content-keyed file")
    with caplog.at_level(logging.WARNING):
        store = FeatureStore(root)
    assert [(e.video_id, e.status, e.reason) for e in store.entries("e")] == [
        ("bad", "failed", "no such file"),
        ("dec", "failed", "truncated"),
    ]
    assert store.key_for_id("old", "e") is None
    assert not legacy_file.exists() and kept.exists()
    assert "feature index of an older avdet" in caplog.text and "its 1 feature files were removed" in caplog.text
    with sqlite3.connect(root / "index.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert {r[0] for r in db.execute("SELECT name FROM sqlite_master")} >= {"entries", "content_keys"}
    _row(store, _key(1), "e", "x")
    _row(store, _key(1), "e", "y")  # several ids per content: the new primary key
    assert [e.video_id for e in store.entries("e", "done")] == ["x", "y"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        FeatureStore(root)  # migrated once
    assert "older avdet" not in caplog.text and len(store.entries("e")) == 4


def test_content_key_of_missing_or_unreadable_file(store: FeatureStore, tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no such file") as info:
        store.content_key(tmp_path / "gone.mp4")
    assert info.value.path == str(tmp_path / "gone.mp4")
    with pytest.raises(DecodeError, match="cannot read"):
        store.content_key(tmp_path)  # a folder
    with pytest.raises(DecodeError, match="no such file"):
        store_mod.fingerprint(tmp_path / "gone.mp4")


def test_sample_digest_reads_size_head_middle_and_tail(tmp_path: Path) -> None:
    size = 1 << 20
    base = bytearray(os.urandom(size))
    path = tmp_path / "v"
    path.write_bytes(base)
    first = store_mod.sample_digest(path, size)
    assert first == store_mod.sample_digest(path, size)
    assert store_mod.sample_digest(path, size - 1) != first
    for at in (
        0,
        (1 << 16) - 1,
        size // 2,
        size // 2 - (1 << 15),
        size // 2 + (1 << 15) - 1,
        size - (1 << 16),
        size - 1,
    ):
        changed = bytearray(base)
        changed[at] ^= 0xFF
        path.write_bytes(changed)
        assert store_mod.sample_digest(path, size) != first, at
    unseen = bytearray(base)
    unseen[1 << 17] ^= 0xFF  # between head and middle: not sampled
    path.write_bytes(unseen)
    assert store_mod.sample_digest(path, size) == first


def test_file_changed_while_hashed_is_not_remembered(
    store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"a" * 1000)
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)
    real = store_mod.fingerprint

    def hash_then_append(p: Path) -> str:
        key = real(p)
        with open(p, "ab") as f:
            f.write(b"b")
        return key

    monkeypatch.setattr(store_mod, "fingerprint", hash_then_append)
    store.content_key(video)
    with sqlite3.connect(store.root / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM content_keys").fetchone()[0] == 0


def test_remembered_key_rows_hold_the_file_state(store: FeatureStore, tmp_path: Path, monkeypatch) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"abc" * 1000)
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)
    key = store.content_key(video)
    st = video.stat()
    with sqlite3.connect(store.root / "index.sqlite") as db:
        rows = db.execute("SELECT * FROM content_keys").fetchall()
    sample = store_mod.sample_digest(video, st.st_size)
    assert rows == [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sample, key)]


def test_racy_window_is_two_seconds(store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file last changed 2.5 s before hashing is remembered, one changed 1.5 s before is not."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    changed = max(video.stat().st_mtime_ns, video.stat().st_ctime_ns)
    for offset, remembered in ((1_500_000_000, 0), (2_500_000_000, 1)):
        monkeypatch.setattr(store_mod.time, "time_ns", lambda o=offset: changed + o)
        store.content_key(video)
        with sqlite3.connect(store.root / "index.sqlite") as db:
            assert db.execute("SELECT count(*) FROM content_keys").fetchone()[0] == remembered


def test_lock_and_folders_on_a_blocked_path_are_store_write_errors(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    blocker = store.root / ext / _key(1)[:2]
    blocker.write_text("a file where the folder goes")
    with pytest.raises(StoreWriteError, match="cannot create the folder") as info, store.lock(_key(1), ext):
        pass
    assert str(blocker) in str(info.value)
    with pytest.raises(StoreWriteError, match="cannot create the folder"):
        store.save(_key(1), ext, _features())
    with (
        pytest.raises(StoreWriteError, match="cannot create the lock file"),
        store_mod.exclusive_lock(blocker / "x.lock", StoreWriteError),
    ):
        pass


def test_read_errors_name_the_file_and_the_reason(store: FeatureStore, tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        store_mod.fingerprint(tmp_path)  # a folder
    assert info.value.path == str(tmp_path) and info.value.reason == "cannot read (Is a directory)"
    with pytest.raises(DecodeError) as info:
        store_mod.fingerprint(tmp_path / "gone.mp4")
    assert info.value.path == str(tmp_path / "gone.mp4") and info.value.reason == "no such file"


def test_file_removed_while_hashed_is_a_decode_error(
    store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"a" * 1000)
    real = store_mod.fingerprint
    monkeypatch.setattr(store_mod, "fingerprint", lambda p: (real(p), p.unlink())[0])
    with pytest.raises(DecodeError) as info:
        store.content_key(video)
    assert info.value.path == str(video) and info.value.reason == "no such file"


def test_sample_digest_is_exactly_size_and_samples(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"0123456789")  # every offset is 0: read once
    want = hashlib.blake2b(b"10" + b"0123456789", digest_size=16).hexdigest()
    assert store_mod.sample_digest(small, 10) == want and len(want) == 32
    size = 300_000
    data = os.urandom(size)
    big = tmp_path / "big"
    big.write_bytes(data)
    mid = size // 2 - (1 << 15)
    samples = data[: 1 << 16] + data[mid : mid + (1 << 16)] + data[size - (1 << 16) :]
    assert store_mod.sample_digest(big, size) == hashlib.blake2b(b"300000" + samples, digest_size=16).hexdigest()
    zeros, more = tmp_path / "zeros", tmp_path / "more"
    zeros.write_bytes(bytes(size))
    more.write_bytes(bytes(size + 1))  # equal samples, other size
    assert store_mod.sample_digest(zeros, size) != store_mod.sample_digest(more, size + 1)


def test_remembered_key_boundary_is_strict(store: FeatureStore, tmp_path: Path, monkeypatch) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    changed = max(video.stat().st_mtime_ns, video.stat().st_ctime_ns)
    monkeypatch.setattr(store_mod.time, "time_ns", lambda: changed + store_mod._RACY_NS)
    store.content_key(video)
    with sqlite3.connect(store.root / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM content_keys").fetchone()[0] == 0


def test_damaged_index_error_message() -> None:
    err = store_mod._index_error(Path("/c/i"), sqlite3.DatabaseError("file is not a database"))
    assert str(err) == "/c/i: damaged feature index (file is not a database)" and err.reason == "file is not a database"


def _exact_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == store_mod.log.name]


def test_migration_log_counts_removed_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    _version1_index(root)
    for key in (LEGACY, LEGACY.replace("0", "f")):
        (root / "e" / key[:2]).mkdir(parents=True)
        (root / "e" / key[:2] / f"{key}.npz").write_bytes(b"old")
    with caplog.at_level(logging.WARNING):
        FeatureStore(root)
    assert _exact_log(caplog) == [
        f"{root / 'index.sqlite'}: feature index of an older avdet (videos keyed by sampled bytes, which two videos "
        "can share); its 2 feature files were removed: `avdet extract` computes them again"
    ]


def test_rebuild_moves_wal_and_shm_aside_and_logs_exactly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FeatureStore(tmp_path)
    ext = store.register_spec({"name": "toy"})
    store.save(_key(1), ext, _features(3), video_id="v", path="/v/v.mp4")
    index = tmp_path / "index.sqlite"
    index.write_bytes(b"garbage" * 1000)
    Path(f"{index}-wal").write_bytes(b"old wal")
    Path(f"{index}-shm").write_bytes(b"old shm")
    with caplog.at_level(logging.WARNING):
        store._rebuild_index("file is not a database")
    (aside,) = tmp_path.glob("index.sqlite.damaged-*[0-9]")
    assert aside.read_bytes() == b"garbage" * 1000
    assert Path(f"{aside}-wal").read_bytes() == b"old wal" and Path(f"{aside}-shm").read_bytes() == b"old shm"
    assert _exact_log(caplog) == [
        f"{index}: damaged feature index (file is not a database), moved to {aside.name} and rebuilt from 1 "
        "feature files"
    ]


def test_index_that_cannot_be_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FeatureStore(tmp_path)
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 1000)

    def refuse(self: Path, target: Path) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(StoreWriteError) as info:
        FeatureStore(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'index.sqlite'}: damaged feature index, cannot move it aside ([Errno 30] Read-only file system)"
    )


def test_damaged_spec_warning_text(store: FeatureStore, caplog: pytest.LogCaptureFixture) -> None:
    key = store.register_spec({"name": "a"})
    (store.root / key / "spec.json").write_text("{")
    with caplog.at_level(logging.WARNING):
        store.specs("a")
    assert _exact_log(caplog) == [
        f"{store.root / key / 'spec.json'}: damaged extractor spec, skipped (the next `avdet extract` rewrites it)"
    ]


def test_save_without_id_or_path_stores_empty_ones(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    with np.load(store.save(_key(1), ext, _features())) as z:
        assert str(z["video_id"]) == "" and str(z["path"]) == ""


def test_npz_members_are_zip64_and_pickle_free() -> None:
    data = store_mod.npz_bytes({"a": np.arange(3)})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (info,) = archive.infolist()
    # the local header carries a zip64 field (id 0x0001), so members over 4 GiB (hours of features) can be written
    header_extra = data[30 + len(info.filename) : 30 + len(info.filename) + 4]
    assert header_extra[:2] == b"\x01\x00"
    with pytest.raises(ValueError, match="pickle"):
        store_mod.npz_bytes({"a": np.array([object()], dtype=object)})


def test_pickled_feature_file_is_not_indexed(store: FeatureStore) -> None:
    """A feature file holding pickled objects is refused like a damaged one (never unpickled) when rebuilding."""
    ext = store.register_spec({"name": "toy"})
    target = store.path_for(_key(1), ext)
    target.parent.mkdir(parents=True)
    with open(target, "wb") as f:
        np.savez(f, visual=np.array([object()], dtype=object), video_id=np.str_("v"), path=np.str_("/v"), duration=1.0)
    assert store_mod._feature_meta(target) is None


def test_nested_root_and_unregistered_recipe_folders_are_made(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "a" / "b" / "cache")
    assert store.save(_key(1), "recipe", _features()).is_file()  # no spec folder yet: made with its parents


def test_spec_file_text_and_write_error(store: FeatureStore) -> None:
    spec = {"name": "toy", "b": [1, 2], "a": 1}
    key = store.register_spec(spec)
    assert (store.root / key / "spec.json").read_text() == json.dumps(spec, sort_keys=True, indent=2)
    other = spec_hash({"name": "other"})
    (store.root / other / "spec.json").mkdir(parents=True)  # a folder where the file goes
    with pytest.raises(StoreWriteError, match="is a folder"):
        store.register_spec({"name": "other"})


def test_unreadable_feature_file_reasons(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    path = store.save(_key(1), ext, _features())
    path.write_bytes(b"\x80garbage, not an archive")
    with pytest.raises(StoreError) as info:
        store.load_key(_key(1), ext)
    assert "(empty file)" not in str(info.value) and "contains pickled (object) data" in str(info.value)
    with open(path, "wb") as f:  # pickled objects are never loaded
        np.savez(f, visual=np.array([object()], dtype=object), visual_times=np.zeros(1), audio=np.zeros((1, 1)))
    with pytest.raises(StoreError, match="unreadable feature file"):
        store.load_key(_key(1), ext)


def test_folder_error_names_the_reason(store: FeatureStore) -> None:
    ext = store.register_spec({"name": "toy"})
    (store.root / ext / _key(1)[:2]).write_text("a file")
    with pytest.raises(StoreWriteError) as info:
        store.save(_key(1), ext, _features())
    assert str(info.value) == f"{store.root / ext / _key(1)[:2]}: cannot create the folder (File exists)"


def test_unwritable_root_and_lock_messages(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as info:
        FeatureStore(blocker / "cache")
    assert str(info.value) == f"{blocker / 'cache'}: cache folder is not writable (Not a directory)"
    (tmp_path / "c" / "index.lock").mkdir(parents=True)  # the lock file cannot be made
    with pytest.raises(StoreWriteError) as info:
        FeatureStore(tmp_path / "c")
    assert type(info.value) is StoreWriteError
    assert str(info.value) == f"{tmp_path / 'c' / 'index.lock'}: cannot create the lock file (Is a directory)"


def test_failed_quick_check_is_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index that opens but fails SQLite's quick_check is damaged: moved aside (and, failing again, one line)."""
    FeatureStore(tmp_path)
    monkeypatch.setattr(store_mod, "_CHECK", "SELECT 'row 3 missing from index x'")
    with pytest.raises(StoreError) as info:
        FeatureStore(tmp_path)
    assert str(info.value) == f"{tmp_path / 'index.sqlite'}: damaged feature index (row 3 missing from index x)"
    assert len(list(tmp_path.glob("index.sqlite.damaged-*[0-9]"))) == 1


def test_damaged_index_warning_names_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    FeatureStore(tmp_path)
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 1000)
    with caplog.at_level(logging.WARNING):
        FeatureStore(tmp_path)
    (aside,) = tmp_path.glob("index.sqlite.damaged-*[0-9]")
    assert _exact_log(caplog) == [
        f"{tmp_path / 'index.sqlite'}: damaged feature index (file is not a database), moved to {aside.name} and "
        "rebuilt from 0 feature files"
    ]


def test_legacy_file_gone_meanwhile_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process removed a version-1 file between listing and removing it: the migration goes on."""
    root = tmp_path / "cache"
    _version1_index(root)
    (root / "e" / LEGACY[:2]).mkdir(parents=True)
    (root / "e" / LEGACY[:2] / f"{LEGACY}.npz").write_bytes(b"old")
    real_unlink = Path.unlink

    def gone(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok)
        if self.suffix == ".npz":
            raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(Path, "unlink", gone)
    FeatureStore(root)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert not (root / "e" / LEGACY[:2] / f"{LEGACY}.npz").exists()
