from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import DecodeError
from avdet.pipeline.io import media
from conftest import make_clip


def test_probe_reports_streams_and_duration(clips: dict[str, Path]) -> None:
    info = media.probe(clips["av"])
    assert info.has_video and info.has_audio
    assert info.duration == pytest.approx(3.0, abs=0.1)
    assert (info.width, info.height) == (160, 90)
    assert info.fps == pytest.approx(25.0)
    assert info.audio_channels == 2
    silent = media.probe(clips["silent"])
    assert silent.has_video and not silent.has_audio


def test_read_frames_resamples_and_resizes(clips: dict[str, Path]) -> None:
    chunks = list(media.read_frames(clips["av"], 10.0, (32, 48), chunk=7))
    assert all(c.shape[1:] == (32, 48, 3) and c.dtype == np.uint8 for c in chunks)
    assert max(len(c) for c in chunks) == 7
    assert sum(len(c) for c in chunks) == 30  # 3 s at 10 fps


def test_short_side_crop(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "wide.mp4", 1.0, size="320x180")
    frames = np.concatenate(list(media.read_frames(clip, 25, (224, 224), resize="short_side_crop")))
    assert frames.shape == (25, 224, 224, 3)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_rotation_is_applied(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "rot.mp4", 1.0, size="160x90", audio=False)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
            str(rotated),
        ],
        check=True,
    )
    info = media.probe(rotated)
    assert info.rotation in (90, 270) and (info.width, info.height) == (90, 160)
    frames = np.concatenate(list(media.read_frames(rotated, 25, (160, 90))))  # ffmpeg rotates while decoding
    upright = np.concatenate(list(media.read_frames(clip, 25, (90, 160))))
    # The frames are the upright ones turned a quarter (which way depends on the matrix's sign convention).
    diffs = [np.abs(frames.astype(int) - np.rot90(upright, k, axes=(1, 2)).astype(int)).mean() for k in (1, -1)]
    assert min(diffs) < 8


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_decord_gives_the_same_frames(clips: dict[str, Path]) -> None:
    import decord  # noqa: F401  the dev extra installs it: a missing decord fails here, it is never skipped

    for fps in (25.0, 10.0):
        a = np.concatenate(list(media.read_frames(clips["av"], fps, (64, 96))))
        b = np.concatenate(list(media.read_frames(clips["av"], fps, (64, 96), backend="decord")))
        assert a.shape == b.shape
        # Same frame selection; scalers of two libswscale builds differ by rounding only.
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0


def test_load_audio_downmixes_by_channel_mean(tmp_path: Path) -> None:
    clip = tmp_path / "lr.wav"
    # Left channel a 440 Hz sine, right channel silence: the mean halves the amplitude.
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.8*sin(2*PI*440*t)|0:s=16000:d=1",
            str(clip),
        ],
        check=True,
    )
    wave = media.load_audio(clip, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 16000
    assert np.abs(wave).max() == pytest.approx(0.4, abs=0.01)


def test_no_audio_stream_is_silence(clips: dict[str, Path]) -> None:
    wave = media.load_audio(clips["silent"], 16000)
    assert wave.shape[0] == pytest.approx(32000, abs=400) and not wave.any()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"this is not a video\n" * 10, "not readable media")],
)
def test_bad_files_raise_decode_error(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(DecodeError, match=reason) as info:
        media.probe(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no such file"):
        media.probe(tmp_path / "nope.mp4")


def test_audio_only_has_no_frames(clips: dict[str, Path]) -> None:
    with pytest.raises(DecodeError, match="no video stream"):
        next(media.read_frames(clips["audio_only"], 25, (32, 32)))


def test_frames_stream_in_bounded_chunks(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", 20.0, size="64x36", audio=False)
    sizes = [len(c) for c in media.read_frames(clip, 25, (36, 64), chunk=16)]
    assert sum(sizes) == 500 and max(sizes) == 16


def test_expand_videos_sorts_and_keeps_dash_ids(clips: dict[str, Path]) -> None:
    found = media.expand_videos([clips["av"].parent])
    assert found == sorted(found)
    assert (
        clips["dash"] in found and clips["audio_only"] in found
    )  # an audio-only .mp4 is listed; extraction reports it
    assert media.video_id(clips["dash"]) == "-dash id"
