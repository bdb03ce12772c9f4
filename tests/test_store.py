from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import StoreError
from avdet.extractors.base import Features, grid_times
from avdet.pipeline.io.store import FeatureStore, StoredFeatures, fingerprint, spec_hash


def _features(rows: int, seed: int = 0) -> StoredFeatures:
    rng = np.random.default_rng(seed)
    times = grid_times(rows, 0.96, 0.32)
    return StoredFeatures(
        visual=Features(rng.standard_normal((rows, 6)).astype(np.float32), times),
        audio=Features(rng.standard_normal((rows, 4)).astype(np.float32), times),
        duration=rows * 0.32 + 0.64,
    )


def test_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    a = tmp_path / "a.mp4"
    a.write_bytes(b"x" * 3_000_000)
    b = tmp_path / "b.mp4"
    shutil.copy(a, b)
    assert fingerprint(a) == fingerprint(b)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    assert fingerprint(a) != fingerprint(b)


def test_spec_hash_changes_with_config() -> None:
    assert spec_hash({"name": "lite", "step_s": 0.32}) == spec_hash({"step_s": 0.32, "name": "lite"})
    assert spec_hash({"name": "lite", "step_s": 0.32}) != spec_hash({"name": "lite", "step_s": 0.25})


def test_save_load_roundtrip_and_index(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "cache")
    key = store.register_spec({"name": "toy"})
    feats = _features(7)
    store.save("abcd", key, feats)
    store.record(video_key="abcd", extractor=key, video_id="-vid", path="x/-vid.mp4", status="done", rows=7)
    back = store.load("-vid", key)
    np.testing.assert_array_equal(back.visual.values, feats.visual.values)
    np.testing.assert_array_equal(back.audio.times, feats.audio.times)
    assert back.duration == pytest.approx(feats.duration)
    assert [e.video_id for e in store.entries(key, "done")] == ["-vid"]
    with pytest.raises(StoreError, match="no features"):
        store.load("other", key)


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_equal_features_give_equal_files(tmp_path: Path) -> None:
    """Feature files are byte-reproducible (fixed zip timestamps), so reruns and other hosts can compare files."""
    import time

    store = FeatureStore(tmp_path / "cache")
    key = store.register_spec({"name": "toy"})
    first = store.save("aaaa", key, _features(5)).read_bytes()
    time.sleep(2.1)  # zip timestamps have a 2 s resolution
    assert store.save("bbbb", key, _features(5)).read_bytes() == first
    assert store.save("cccc", key, _features(5, seed=1)).read_bytes() != first


def test_truncated_feature_file_is_an_error_not_data(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    key = store.register_spec({"name": "toy"})
    path = store.save("k1", key, _features(5))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(StoreError, match="unreadable feature file"):
        store.load_key("k1", key)


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not writable") as info:
        FeatureStore(blocker / "cache")
    assert str(blocker) in str(info.value)


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    key = store.register_spec({"name": "toy"})
    proc = multiprocessing.get_context("spawn").Process(target=int)
    proc.start()
    proc.join()
    stale = tmp_path / key / "ab" / f"abc.npz.tmp-{proc.pid}"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    store.register_spec({"name": "toy"})
    assert not stale.exists()


def _writer(root: str, worker: int, n: int) -> None:
    store = FeatureStore(root)
    key = store.register_spec({"name": "toy"})
    for i in range(n):
        vk = f"video{i:03d}"
        with store.lock(vk, key):
            if not store.has(vk, key):
                store.save(vk, key, _features(4, seed=i))
                store.record(
                    video_key=vk,
                    extractor=key,
                    video_id=vk,
                    path=f"{vk}.mp4",
                    status="done",
                    rows=4,
                    wall_seconds=float(worker),
                )


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_concurrent_writers_do_not_corrupt_or_duplicate(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 30)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = FeatureStore(tmp_path)
    key = spec_hash({"name": "toy"})
    entries = store.entries(key)
    assert len(entries) == 30 and len({e.video_id for e in entries}) == 30
    for i in range(30):
        np.testing.assert_array_equal(
            store.load(f"video{i:03d}", key).visual.values, _features(4, seed=i).visual.values
        )
    assert not list(tmp_path.rglob("*.tmp-*"))
