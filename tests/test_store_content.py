"""Content-exact cache keys: every byte of a video decides its features, several ids share one content, a store
written by an older avdet (sampled keys) heals instead of serving another video's features, and an unchanged file
is not hashed again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

import avdet.pipeline.io.store as store_mod
from avdet.extractors.base import Features, grid_times
from avdet.extractors.registry import build_extractor_set
from avdet.pipeline.extract import ExtractOptions, extract_videos
from avdet.pipeline.io.store import FeatureStore, StoredFeatures, fingerprint, spec_hash


def _sampled_fingerprint(path: Path) -> str:
    """The key of index version 1 (BLAKE2b of the size and three 1 MiB samples), to build its stores and to show
    that the two videos below share it."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as f:
        for offset in sorted({0, max(0, size // 2 - (1 << 19)), max(0, size - (1 << 20))}):
            f.seek(offset)
            h.update(f.read(1 << 20))
    return h.hexdigest()


def _raw_clip(path: Path, box: bool) -> Path:
    """8 s of uncompressed 160x120 video (+ a sine): every frame has the same size, so two such clips have equal
    sizes and layouts; `box` draws a red box from 1.6 s to 2.8 s only, bytes 1.2-2.1 MB of 6 MB: outside the head,
    middle and tail MiB that the old key sampled."""
    drawn = ",drawbox=x=10:y=10:w=60:h=40:color=red:t=fill:enable='between(t,1.6,2.8)'" if box else ""
    args = ["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi"]
    args += ["-i", f"color=c=gray:size=160x120:rate=25:duration=8{drawn}"]
    args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=8"]
    args += ["-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le"]
    args += ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(path)]
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different videos of equal size whose sampled bytes are equal."""
    root = tmp_path_factory.mktemp("twins")
    plain, boxed = _raw_clip(root / "plain.avi", box=False), _raw_clip(root / "boxed.avi", box=True)
    assert plain.stat().st_size == boxed.stat().st_size and plain.read_bytes() != boxed.read_bytes()
    assert _sampled_fingerprint(plain) == _sampled_fingerprint(boxed)  # what fooled the old key
    return plain, boxed


def _lite() -> str:
    return spec_hash(build_extractor_set("lite").spec)


def _visual(cache: Path, video_id: str) -> np.ndarray:
    return FeatureStore(cache).load(video_id, _lite()).visual.values


def _extract(paths: list[Path], cache: Path) -> list[str]:
    return [r.status for r in extract_videos(paths, cache, ExtractOptions(), workers=1)]


def test_content_key_is_sha256_of_every_byte(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 123)  # not a whole number of read blocks
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    assert fingerprint(path) == hashlib.sha256(data).hexdigest()
    assert not store_mod.is_legacy_key(fingerprint(path))


@pytest.mark.slow  # extracts videos
def test_videos_differing_outside_the_old_samples_get_their_own_features(
    twins: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, boxed = twins
    assert fingerprint(plain) != fingerprint(boxed)
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    assert _extract([plain, boxed], shared) == ["done", "done"]  # the second is computed, not "cached"
    _extract([boxed], alone)
    np.testing.assert_array_equal(_visual(shared, "boxed"), _visual(alone, "boxed"))
    assert not np.array_equal(_visual(shared, "plain"), _visual(shared, "boxed"))


@pytest.mark.slow  # extracts videos
def test_ids_with_identical_content_each_have_features(clips: dict[str, Path], tmp_path: Path) -> None:
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    shutil.copy(clips["av"], first)
    shutil.copy(clips["av"], second)
    cache = tmp_path / "cache"
    assert _extract([first, second], cache) == ["done", "cached"]
    np.testing.assert_array_equal(_visual(cache, "first"), _visual(cache, "second"))
    assert sorted(e.video_id for e in FeatureStore(cache).entries(_lite(), "done")) == ["first", "second"]
    assert _extract([first], cache) == ["cached"]  # the shared file serves both ids, nothing is recomputed
    assert len(list((cache / _lite()).glob("*/*.npz"))) == 1


def _version1_store(root: Path, video: Path, features: StoredFeatures, video_id: str) -> Path:
    """A store as avdet wrote it before content keys: index version 1 (its schema), a sampled key, and a feature
    file under it holding `features` (here another video's), plus one failure record."""
    root.mkdir(parents=True)
    key = _lite()
    spec_dir = root / key
    spec_dir.mkdir()
    (spec_dir / "spec.json").write_text(json.dumps(build_extractor_set("lite").spec, sort_keys=True))
    old = _sampled_fingerprint(video)
    npz = spec_dir / old[:2] / f"{old}.npz"
    npz.parent.mkdir()
    npz.write_bytes(
        store_mod.npz_bytes(
            {
                "visual": features.visual.values,
                "visual_times": features.visual.times,
                "audio": features.audio.values,
                "audio_times": features.audio.times,
                "duration": np.float64(features.duration),
                "video_id": np.str_(video_id),
                "path": np.str_(str(video)),
            }
        )
    )
    db = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        """CREATE TABLE entries (video_key TEXT NOT NULL, extractor TEXT NOT NULL, video_id TEXT NOT NULL,
        path TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, rows INTEGER, media_seconds REAL, wall_seconds REAL,
        updated REAL NOT NULL, PRIMARY KEY (video_key, extractor));
        CREATE INDEX entries_by_id ON entries (video_id, extractor);"""
    )
    rows = len(features.visual.values)
    db.execute(
        "INSERT INTO entries VALUES (?, ?, ?, ?, 'done', NULL, ?, ?, 1.0, 1.0)",
        (old, key, video_id, str(video), rows, features.duration),
    )
    db.execute(
        "INSERT INTO entries VALUES ('path:/v/bad.mp4', ?, 'bad', '/v/bad.mp4', 'failed', 'no such file', "
        "NULL, NULL, 0.1, 1.0)",
        (key,),
    )
    db.close()
    return npz


@pytest.mark.slow  # extracts videos
def test_store_of_an_older_version_heals_instead_of_serving_wrong_features(
    twins: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, boxed = twins
    wrong = FeatureStore(tmp_path / "plain-cache")
    _extract([plain], wrong.root)
    plain_features = wrong.load("plain", _lite())
    # the old key of `boxed` is that of `plain`: the old store served plain's features for boxed
    cache = tmp_path / "old"
    legacy_file = _version1_store(cache, boxed, plain_features, "boxed")
    store = FeatureStore(cache)
    with pytest.raises(store_mod.StoreError, match="no features"):
        store.load("boxed", _lite())
    assert not legacy_file.exists()
    assert [(e.video_id, e.status) for e in store.entries(_lite())] == [("bad", "failed")]  # failures are kept
    assert _extract([boxed], cache) == ["done"]
    alone = tmp_path / "alone"
    _extract([boxed], alone)
    np.testing.assert_array_equal(_visual(cache, "boxed"), _visual(alone, "boxed"))
    with sqlite3.connect(cache / "index.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store_mod.INDEX_VERSION


def test_sampled_key_written_into_a_new_store_is_never_served(tmp_path: Path) -> None:
    """An older avdet still writing into a migrated store: its rows (sampled keys) are passed over."""
    store = FeatureStore(tmp_path)
    key = store.register_spec({"name": "toy"})
    times = grid_times(3, 0.96, 0.32)
    feats = StoredFeatures(
        Features(np.ones((3, 2), np.float32), times), Features(np.ones((3, 2), np.float32), times), 2
    )
    legacy = "0123456789abcdef0123456789abcdef"
    store.save(legacy, key, feats)
    store.record(video_key=legacy, extractor=key, video_id="v", path="/v/v.mp4", status="done", rows=3)
    assert store.key_for_id("v", key) is None
    good = "ab" * 32
    store.save(good, key, feats)
    store.record(video_key=good, extractor=key, video_id="v", path="/v/v.mp4", status="done", rows=3)
    store.record(video_key=legacy, extractor=key, video_id="v", path="/v/v.mp4", status="done", rows=3)  # newer
    assert store.key_for_id("v", key) == good


def test_damaged_index_rebuild_leaves_out_sampled_keys(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    key = store.register_spec({"name": "toy"})
    times = grid_times(3, 0.96, 0.32)
    feats = StoredFeatures(
        Features(np.ones((3, 2), np.float32), times), Features(np.ones((3, 2), np.float32), times), 2
    )
    legacy, good = "0123456789abcdef0123456789abcdef", "cd" * 32
    store.save(legacy, key, feats, video_id="old", path="/v/old.mp4")
    store.save(good, key, feats, video_id="new", path="/v/new.mp4")
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 1000)
    rebuilt = FeatureStore(tmp_path)
    assert [e.video_id for e in rebuilt.entries(key, "done")] == ["new"]
    assert not store.path_for(legacy, key).exists()


def test_unchanged_file_is_not_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(os.urandom(200_000))
    store = FeatureStore(tmp_path / "cache")
    calls = []
    real = store_mod.fingerprint
    monkeypatch.setattr(store_mod, "fingerprint", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)  # the file was written just now
    first = store.content_key(video)
    assert first == real(video) and len(calls) == 1
    assert FeatureStore(store.root).content_key(video) == first and len(calls) == 1  # remembered in the index
    data = bytearray(video.read_bytes())
    data[100_000] ^= 0xFF  # same size, same mtime: ctime still tells
    stat = video.stat()
    video.write_bytes(bytes(data))
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = store.content_key(video)
    assert second == hashlib.sha256(bytes(data)).hexdigest() != first and len(calls) == 2


def test_recently_changed_file_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed within `_RACY_NS` of its hashing may change again within one timestamp tick: hashed anew."""
    video = tmp_path / "v.mp4"
    video.write_bytes(os.urandom(1000))
    store = FeatureStore(tmp_path / "cache")
    calls = []
    real = store_mod.fingerprint
    monkeypatch.setattr(store_mod, "fingerprint", lambda p: calls.append(p) or real(p))
    store.content_key(video)
    store.content_key(video)
    assert len(calls) == 2


def test_remembered_key_is_checked_against_sampled_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal stat fields but other sampled bytes (a filesystem that keeps timestamps): hashed anew."""
    video = tmp_path / "v.mp4"
    video.write_bytes(os.urandom(1000))
    store = FeatureStore(tmp_path / "cache")
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)
    key = store.content_key(video)
    with sqlite3.connect(store.root / "index.sqlite") as db:
        db.execute("UPDATE content_keys SET video_key=?, sample='0'", ("ef" * 32,))
    assert store.content_key(video) == key
