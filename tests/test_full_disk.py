"""Full and read-only disks, on real filesystems: a small tmpfs (full) and a tmpfs remounted read-only (root can
write through `chmod`, not through a read-only mount). Each failure is one line naming the path and the reason,
nothing is half-written, and a full disk is never taken for a damaged index (the index stays where it is)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import avdet.errors as errors
from avdet.errors import CheckpointError, DataError, StoreError
from avdet.pipeline.extract import ExtractOptions, extract_videos
from avdet.pipeline.io.atomic import TEMP_MARK, write_text_atomic
from avdet.pipeline.io.store import FeatureStore

DISK_FULL = ("No space left on device", "database or disk is full", "disk I/O error")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`disk(size)`: a fresh tmpfs of `size` mounted under tmp_path (unmounted afterwards); `disk.fill(path)` fills
    it, `disk.read_only(path)` remounts it read-only. Skips where mounting is not allowed (not root)."""
    mounted: list[Path] = []

    def mount(size: str = "1m") -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs ({res.stderr.decode().strip()}): needs root")
        mounted.append(where)
        return where

    def fill(where: Path) -> None:
        fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)
        assert shutil.disk_usage(where).free == 0

    def read_only(where: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)

    mount.fill = fill  # type: ignore[attr-defined]
    mount.read_only = read_only  # type: ignore[attr-defined]
    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def _cli(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "avdet", *map(str, args)], capture_output=True, text=True, env=env, check=False
    )


def _error_lines(res: subprocess.CompletedProcess) -> list[str]:
    """The lines of a failed command that say what went wrong (not progress bars or tables)."""
    text = res.stdout + res.stderr
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if "error" in line.lower() or "failed" in line.lower()]


@contextlib.contextmanager
def _index_held_open(cache: Path) -> Iterator[None]:
    """Keep a connection to the index open (as a running process does), so its shared-memory file stays: then a
    command opens the index on the full disk and fails at its first write (a feature file or an index row)."""
    db = sqlite3.connect(cache / "index.sqlite")
    db.execute("SELECT count(*) FROM entries").fetchone()
    try:
        yield
    finally:
        db.close()


def _used_store(cache: Path) -> None:
    """A store `extract` has used before: the index and the lite recipe's folder exist (the disk fills later)."""
    FeatureStore(cache).register_spec(ExtractOptions().build().spec)


def _no_partial_files(root: Path) -> None:
    assert not list(root.rglob("*.npz")), "no feature file on a full disk"
    assert not [p for p in root.rglob("*") if TEMP_MARK in p.name], "no temp file left behind"
    assert not list(root.glob("index.sqlite.damaged-*")), "a full disk is not index damage"
    assert (root / "index.sqlite").is_file()


def test_open_index_on_a_full_disk_is_not_damage(disk: Callable[..., Path]) -> None:
    where = disk("256k")
    FeatureStore(where / "cache").register_spec({"name": "toy"})
    disk.fill(where)
    before = (where / "cache" / "index.sqlite").read_bytes()
    with pytest.raises(StoreError) as info:
        FeatureStore(where / "cache").record(
            video_key="ab" * 32, extractor="x", video_id="v", path="/v/v.mp4", status="done"
        )
    message = str(info.value)
    assert isinstance(info.value, errors.StoreWriteError)
    assert str(where / "cache" / "index.sqlite") in message and any(r in message for r in DISK_FULL)
    assert "\n" not in message
    assert (where / "cache" / "index.sqlite").read_bytes() == before  # left as it was, not moved aside
    assert not list((where / "cache").glob("index.sqlite.damaged-*"))


@pytest.mark.slow  # extracts videos
def test_extract_on_a_full_disk_stops_at_the_first_video(disk: Callable[..., Path], clips: dict[str, Path]) -> None:
    where = disk("1m")
    cache = where / "cache"
    _used_store(cache)
    with _index_held_open(cache), pytest.raises(StoreError) as info:
        disk.fill(where)
        extract_videos([clips["av"], clips["dash"]], cache, ExtractOptions(), workers=1)
    assert str(cache) in str(info.value) and any(r in str(info.value) for r in DISK_FULL)
    assert isinstance(info.value, errors.StoreWriteError)
    _no_partial_files(cache)
    (where / "filler").unlink()  # space again: the same store works, nothing to repair
    results = extract_videos([clips["av"]], cache, ExtractOptions(), workers=1)
    assert [r.status for r in results] == ["done"]


def test_feature_file_that_does_not_fit_is_not_left_behind(disk: Callable[..., Path], clips: dict[str, Path]) -> None:
    """The index fits, the feature file does not: ENOSPC while writing it, the temp removed, the index unchanged."""
    where = disk("1m")
    cache = where / "cache"
    store = FeatureStore(cache)
    key = store.register_spec({"name": "toy"})
    import numpy as np

    from avdet.extractors.base import Features, grid_times
    from avdet.pipeline.io.store import StoredFeatures

    rows = 4000  # 4000 x 64 float32 x 2 streams: 2 MB, more than the disk
    times = grid_times(rows, 0.96, 0.32)
    feats = StoredFeatures(
        Features(np.ones((rows, 64), np.float32), times), Features(np.ones((rows, 64), np.float32), times), 1280.0
    )
    with pytest.raises(StoreError, match="No space left on device") as info:
        store.save("cd" * 32, key, feats)
    assert str(store.path_for("cd" * 32, key)) in str(info.value)
    assert isinstance(info.value, errors.StoreWriteError)  # the disk, not the video: the command stops
    _no_partial_files(cache)


@pytest.mark.slow
def test_extract_cli_on_a_full_disk_is_one_line(disk: Callable[..., Path], clips: dict[str, Path]) -> None:
    where = disk("1m")
    cache = where / "cache"
    _used_store(cache)
    with _index_held_open(cache):
        disk.fill(where)
        res = _cli("extract", clips["av"], clips["dash"], "--cache", cache)
    assert res.returncode == 1
    lines = _error_lines(res)
    assert len(lines) == 1 and str(cache) in lines[0] and any(r in lines[0] for r in DISK_FULL), res.stderr
    _no_partial_files(cache)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoCo checkpoint with random weights on `lite` features: enough for detect's paths and messages."""
    from avdet.models.registry import model_entry
    from avdet.pipeline.checkpoint import save_checkpoint
    from avdet.pipeline.config import load_config, to_dict

    cfg = load_config("tiny")
    model_cfg = cfg.model_config()
    payload = {
        "task": "dense",
        "model": {"name": "loco", "config": to_dict(model_cfg)},
        "classes": [f"class {i}" for i in range(model_cfg.num_classes)],
        "extractor": ExtractOptions().build().spec,
        "postprocess": to_dict(cfg.postprocess),
        "state_dict": model_entry("loco").model_cls(model_cfg).state_dict(),
    }
    path = tmp_path_factory.mktemp("ckpt") / "untrained.ckpt"
    save_checkpoint(path, payload)
    return path


@pytest.mark.slow
def test_detect_cli_on_a_full_disk_is_one_line(
    disk: Callable[..., Path], clips: dict[str, Path], untrained_checkpoint: Path, tmp_path: Path
) -> None:
    where = disk("1m")
    cache = where / "cache"
    _used_store(cache)
    out = tmp_path / "events"
    out.mkdir()
    with _index_held_open(cache):
        disk.fill(where)
        res = _cli(
            "detect", clips["av"], clips["dash"], "--checkpoint", untrained_checkpoint, "--cache", cache, "--out", out
        )
    assert res.returncode == 1
    lines = _error_lines(res)
    assert len(lines) == 1 and str(cache) in lines[0] and any(r in lines[0] for r in DISK_FULL), res.stderr
    _no_partial_files(cache)
    assert not list(out.iterdir())


def test_atomic_write_into_a_read_only_folder_names_the_file(disk: Callable[..., Path]) -> None:
    where = disk("64k")
    disk.read_only(where)
    with pytest.raises(DataError, match="Read-only file system") as info:
        write_text_atomic(where / "report.json", "{}\n")
    assert str(where / "report.json") in str(info.value)


def test_checkpoint_onto_a_read_only_or_full_disk_is_a_checkpoint_error(disk: Callable[..., Path]) -> None:
    """What `calibrate` does to rewrite its checkpoint: one line, and the old checkpoint stays as it was."""
    import torch

    from avdet.pipeline.checkpoint import save_checkpoint

    where = disk("256k")
    ckpt = where / "model.ckpt"
    save_checkpoint(ckpt, {"w": torch.zeros(10)})
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(ckpt, {"w": torch.zeros(200_000)})  # 800 kB: does not fit
    assert ckpt.read_bytes() == before and [p.name for p in where.iterdir()] == ["model.ckpt"]
    disk.read_only(where)
    with pytest.raises(CheckpointError, match="Read-only file system") as info:
        save_checkpoint(ckpt, {"w": torch.zeros(10)})
    assert str(ckpt) in str(info.value) and ckpt.read_bytes() == before


def test_eval_json_into_a_read_only_folder_is_one_line(
    disk: Callable[..., Path], golden_dir: Path, shared_data_dir: Path
) -> None:
    where = disk("64k")
    disk.read_only(where)
    res = _cli(
        "eval",
        "--predictions",
        golden_dir / "eval_predictions.json",
        "--annotations",
        shared_data_dir / "unav100_annotations.json",
        "--split",
        "test",
        "--json",
        where / "metrics.json",
    )
    assert res.returncode == 1
    lines = _error_lines(res)
    assert len(lines) == 1 and str(where / "metrics.json") in lines[0] and "Read-only" in lines[0], res.stderr
