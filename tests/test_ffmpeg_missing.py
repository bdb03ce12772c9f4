"""Without ffmpeg on PATH every command that decodes or encodes media says so in ONE line, with the install
command, and exits 1: no traceback, no video of the batch marked failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from avdet.pipeline.io import media
from conftest import make_clip


def _without_ffmpeg(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return {**os.environ, "PATH": str(empty), "OMP_NUM_THREADS": "1"}


def _assert_one_install_line(res: subprocess.CompletedProcess) -> None:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1, res.stderr
    assert "ffmpeg" in lines[0] and "apt-get install ffmpeg" in lines[0] and "brew install ffmpeg" in lines[0]
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["extract", "{clip}", "--cache", "{tmp}/cache"],
        ["make-sample", "{tmp}/sample", "--videos", "2"],
    ],
    ids=["extract", "make-sample"],
)
@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_cli_says_how_to_install_ffmpeg(args: list[str], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 1.0)  # made while ffmpeg is still on PATH
    argv = [a.format(clip=clip, tmp=tmp_path) for a in args]
    res = subprocess.run(
        [sys.executable, "-m", "avdet", *argv], capture_output=True, text=True, env=_without_ffmpeg(tmp_path)
    )
    _assert_one_install_line(res)
    assert not (tmp_path / "cache" / "index.sqlite").exists() or "failed" not in res.stdout


def test_detector_stops_before_the_first_video(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from avdet.pipeline.detect import Detector

    monkeypatch.setenv("PATH", str(tmp_path))
    runner = Detector.run(SimpleNamespace(batch_size=1), [tmp_path / "a.mp4", tmp_path / "b.mp4"])
    with pytest.raises(media.FFmpegMissingError, match="conda install -c conda-forge ffmpeg"):
        next(runner)


def test_require_ffmpeg_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media.shutil, "which", lambda tool: None if tool == "ffprobe" else f"/usr/bin/{tool}")
    with pytest.raises(media.FFmpegMissingError, match=r"^ffprobe not found on PATH: install it"):
        media.require_ffmpeg()
    monkeypatch.setattr(media.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    media.require_ffmpeg()
