"""`avdet extract` end to end on generated clips: caching, bad input, concurrency and SIGKILL safety."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avdet.extractors.registry import build_extractor_set
from avdet.pipeline.extract import ExtractOptions, extract_videos
from avdet.pipeline.io.store import FeatureStore, spec_hash
from conftest import make_clip


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "avdet", *args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def lite_key() -> str:
    return spec_hash(build_extractor_set("lite").spec)


def stored(cache: Path) -> dict[str, np.ndarray]:
    store = FeatureStore(cache)
    out = {}
    for e in store.entries(lite_key(), "done"):
        feats = store.load(e.video_id, lite_key())
        out[e.video_id] = np.concatenate([feats.visual.values, feats.audio.values], axis=1)
    return out


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good clips and every kind of bad input in one folder."""
    root = tmp_path_factory.mktemp("batch")
    make_clip(root / "good.mp4", 3.0)
    make_clip(root / "-starts with dash.mp4", 2.0, frequency=880)
    make_clip(root / "ünïcode name with spaces.mp4", 2.0)
    make_clip(root / "silent.mp4", 2.0, audio=False)
    make_clip(root / "one_frame.mp4", 0.04, audio=False)
    make_clip(root / "audio_only.mp4", 2.0, video=False)
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("hello, I am not a video\n")
    full = make_clip(root / "full.tmp.mkv", 4.0, extra=["-f", "mp4", "-movflags", "+faststart"])
    data = full.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    full.unlink()
    return root


@pytest.mark.slow  # subprocess CLI runs over the batch
def test_extract_batch_reports_bad_files_and_goes_on(batch: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = run_cli("extract", str(batch), "--cache", str(cache), str(tmp_path / "missing.mp4"))
    assert res.returncode == 1
    err = res.stderr
    for name, reason in [
        ("empty.mp4", "empty file"),
        ("text.mp4", "not readable media"),
        ("truncated.mp4", ""),
        ("audio_only.mp4", "no video stream"),
        ("missing.mp4", "no such file"),
    ]:
        line = next((ln for ln in err.splitlines() if name in ln and "failed" in ln), None)
        assert line is not None, f"no failure line for {name}:\n{err}"
        assert reason in line
    feats = stored(cache)
    assert set(feats) == {"good", "-starts with dash", "ünïcode name with spaces", "silent", "one_frame"}
    assert feats["one_frame"].shape[0] == 1
    n_audio = build_extractor_set("lite").audio.dim
    silent = feats["silent"][:, -n_audio:]
    assert np.allclose(silent, silent[0])  # silence: the same log-mel statistics in every row
    failed = {e.video_id: e.reason for e in FeatureStore(cache).entries(lite_key(), "failed")}
    assert {"empty", "text", "truncated", "audio_only", "missing"} <= set(failed)
    # Re-running does only what is missing: everything good is cached now.
    again = run_cli("extract", str(batch / "good.mp4"), str(batch / "silent.mp4"), "--cache", str(cache))
    assert again.returncode == 0, again.stderr
    assert "cached" in again.stderr


@pytest.mark.slow  # extraction through a CLI subprocess
def test_dash_ids_work_on_the_command_line(batch: Path, tmp_path: Path) -> None:
    res = run_cli("extract", "--cache", str(tmp_path / "c"), "--", str(batch / "-starts with dash.mp4"))
    assert res.returncode == 0, res.stderr
    assert set(stored(tmp_path / "c")) == {"-starts with dash"}


@pytest.mark.slow  # extraction through a CLI subprocess
def test_unwritable_cache_is_one_line(batch: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli("extract", str(batch / "good.mp4"), "--cache", str(blocker / "cache"))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "not writable" in lines[0]


@pytest.mark.slow  # extracts the batch twice, with worker processes
def test_workers_match_a_single_process(batch: Path, tmp_path: Path) -> None:
    good = [batch / "good.mp4", batch / "silent.mp4", batch / "-starts with dash.mp4"]
    extract_videos(good, tmp_path / "one", ExtractOptions())
    extract_videos(good, tmp_path / "two", ExtractOptions(), workers=2)
    a, b = stored(tmp_path / "one"), stored(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver (Windows)")
def test_workers_fork_from_a_server_that_imported_torch_once() -> None:
    """Workers are forked by a server that preloaded the extraction module (torch included), not fresh interpreters
    each importing torch (2-3 s of CPU per worker)."""
    from concurrent.futures import ProcessPoolExecutor

    from avdet.pipeline.extract import worker_context

    with ProcessPoolExecutor(1, mp_context=worker_context()) as pool:
        assert pool.submit(os.getppid).result() != os.getpid()  # the server's child


@pytest.mark.slow  # extracts the batch twice
def test_changed_extractor_config_never_reuses_features(batch: Path, tmp_path: Path) -> None:
    from avdet.extractors import lite
    from avdet.pipeline.extract import extract_one

    store = FeatureStore(tmp_path / "cache")
    first = extract_one(batch / "good.mp4", store, lite.build(), ExtractOptions())
    again = extract_one(batch / "good.mp4", store, lite.build(), ExtractOptions())
    changed = extract_one(batch / "good.mp4", store, lite.build(step_s=0.25), ExtractOptions())
    assert (first.status, again.status, changed.status) == ("done", "cached", "done")
    assert changed.rows > first.rows


@pytest.mark.slow  # two extract processes at once
def test_two_concurrent_extract_processes(batch: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    clips = [
        str(batch / n) for n in ("good.mp4", "silent.mp4", "-starts with dash.mp4", "ünïcode name with spaces.mp4")
    ]
    env = {**os.environ}
    cmd = [sys.executable, "-m", "avdet", "extract", "--cache", str(cache), "--", *clips]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    store = FeatureStore(cache)
    entries = store.entries(lite_key())
    assert sorted(e.video_id for e in entries) == sorted(Path(c).stem for c in clips)
    assert len(list(cache.rglob("*.npz"))) == 4 and not list(cache.rglob("*.tmp-*"))


@pytest.mark.slow  # kills an extract process and reruns it
def test_sigkill_then_rerun_gives_identical_features(batch: Path, tmp_path: Path) -> None:
    clips_dir = tmp_path / "clips"
    clips_dir.mkdir()
    for i in range(6):
        make_clip(clips_dir / f"v{i}.mp4", 4.0, frequency=300 + 100 * i)
    shutil.copy(batch / "silent.mp4", clips_dir / "v_silent.mp4")
    reference = tmp_path / "reference"
    assert run_cli("extract", str(clips_dir), "--cache", str(reference)).returncode == 0

    cache = tmp_path / "killed"
    for files in (1, 3):  # kill at two moments of the run, each after real work (a cache this full), never before
        proc = subprocess.Popen(
            [sys.executable, "-m", "avdet", "extract", str(clips_dir), "--cache", str(cache)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while len(list(cache.rglob("*.npz"))) < files and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "extract finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(list(cache.rglob("*.npz"))) < 7  # a partial cache: the rerun has work left
    assert run_cli("extract", str(clips_dir), "--cache", str(cache)).returncode == 0
    a, b = stored(reference), stored(cache)
    assert a.keys() == b.keys() and len(a) == 7
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    entries = FeatureStore(cache).entries(lite_key())
    assert len(entries) == 7 and all(e.status == "done" for e in entries)
    assert len(list(cache.rglob("*.npz"))) == 7
    assert not list(cache.rglob("*.tmp-*"))
