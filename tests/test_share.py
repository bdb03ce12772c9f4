"""What a shared checkpoint carries: data paths relative to the run folder, and `avdet export` to safetensors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avdet.cli import app
from avdet.pipeline.checkpoint import DATA_PATH_KEYS, load_checkpoint, read_checkpoint


def test_checkpoint_records_data_paths_relative_to_the_run(trained_run: Path, tmp_path: Path) -> None:
    recorded = read_checkpoint(trained_run / "best.ckpt")["data"]
    set_paths = [recorded[k] for k in DATA_PATH_KEYS if recorded[k]]
    assert set_paths and not any(Path(p).is_absolute() for p in set_paths), recorded
    assert str(trained_run.parent) not in str(recorded)  # no absolute local path leaks
    ckpt = load_checkpoint(trained_run / "best.ckpt")
    assert Path(ckpt.data.annotations).is_absolute() and Path(ckpt.data.annotations).is_file()
    assert Path(ckpt.data.cache).is_dir()
    # a copy in another folder no longer finds the data by the recorded path; the user's absolute path wins
    moved = tmp_path / "elsewhere" / "best.ckpt"
    moved.parent.mkdir()
    shutil.copy(trained_run / "best.ckpt", moved)
    assert not Path(load_checkpoint(moved).data.annotations).is_file()
    given = load_checkpoint(moved, data={"annotations": ckpt.data.annotations}).data.annotations
    assert given == ckpt.data.annotations


def test_export_safetensors_round_trip(trained_run: Path, tmp_path: Path) -> None:
    dst = tmp_path / "model.safetensors"
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(trained_run / "best.ckpt"), str(dst)])
    assert res.exit_code == 0, res.output
    header_len = int.from_bytes(dst.read_bytes()[:8], "little")
    assert dst.read_bytes()[8 : 8 + header_len].startswith(b"{")  # safetensors, no pickle
    original, shared = load_checkpoint(trained_run / "best.ckpt"), load_checkpoint(dst)
    assert (shared.name, shared.task, shared.classes) == (original.name, original.task, original.classes)
    assert shared.extractor == original.extractor and shared.postprocess == original.postprocess
    assert shared.meta["epoch"] == original.meta["epoch"]
    assert "data" not in read_checkpoint(dst) and "train_state" not in read_checkpoint(dst)
    a, b = original.model.state_dict(), shared.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_refuses_other_suffixes_and_foreign_files(trained_run: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", str(trained_run / "best.ckpt"), str(tmp_path / "model.ckpt")])
    assert "deprecated" in res.output  # the positional form, kept for one release
    assert res.exit_code == 1 and ".safetensors" in res.output and not (tmp_path / "model.ckpt").exists()
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x00" * 32)
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(bogus)])
    assert res.exit_code == 1 and "bogus.safetensors" in res.output


def test_detect_runs_an_exported_model_and_logs_with_v_after_the_command(
    trained_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import make_clip

    dst = tmp_path / "model.safetensors"
    assert CliRunner().invoke(app, ["export", "--checkpoint", str(trained_run / "best.ckpt"), str(dst)]).exit_code == 0
    clip = make_clip(tmp_path / "clip.mp4", 4.0)
    args = ["detect", str(clip), "--checkpoint", str(dst), "--cache", str(tmp_path / "cache"), "--out"]
    res = CliRunner().invoke(app, [*args, str(tmp_path / "events.json"), "-v"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "events.json").is_file()
    # -v after the subcommand opens detect's INFO log (without it the root logger stays at WARNING)
    assert "candidate events at the operating point" in caplog.text
