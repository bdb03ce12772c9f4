"""Long-video audio in bounded memory: the waveform streamed in chunks and the audio extractor run a bounded number
of rows at a time give the rows of one call on the whole waveform."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from avdet.extractors.base import AudioInput, Features, grid_times, num_grid_rows
from avdet.pipeline.extract import ExtractOptions, streamed_audio_features
from avdet.pipeline.io import media


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """31.3 s of a wobbling tone with noise (stereo, 44.1 kHz), so every row differs."""
    path = tmp_path_factory.mktemp("stream") / "tone.m4a"
    source = "aevalsrc=0.5*sin(440*2*PI*t*(1+0.2*sin(t)))+0.1*random(0)|0.3*sin(660*2*PI*t):s=44100:d=31.3"
    cmd = ["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", source, "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # decodes a long clip twice through ffmpeg
def test_stream_audio_joins_to_load_audio(tone_clip: Path) -> None:
    chunks = list(media.stream_audio(tone_clip, 16000, chunk_s=1.7))
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= round(1.7 * 16000)
    np.testing.assert_array_equal(np.concatenate(chunks), media.load_audio(tone_clip, 16000))


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
@pytest.mark.parametrize("extractor", ["lite"])  # i3d_vggish (VGGish) checked identical too: 26 s
def test_rows_in_calls_equal_one_call(tone_clip: Path, extractor: str) -> None:
    audio = ExtractOptions(extractor=extractor, random_weights=True).build().audio
    info = media.probe(tone_clip)
    whole = audio(AudioInput(media.load_audio(tone_clip, 16000, info=info), 16000, info.duration))
    calls: list[int] = []

    def counted(decoded: AudioInput):
        calls.append(len(decoded.samples))
        return audio(decoded)

    counted.window_s, counted.step_s, counted.name = audio.window_s, audio.step_s, audio.name
    streamed = streamed_audio_features(
        media.stream_audio(tone_clip, 16000, info=info, chunk_s=0.9), counted, 16000, info.duration, rows_per_call=17
    )
    assert len(calls) == -(-len(whole.values) // 17) and max(calls) < 9 * 16000  # bounded calls
    np.testing.assert_array_equal(streamed.values, whole.values)
    np.testing.assert_allclose(streamed.times, whole.times, rtol=0, atol=1e-9)


def test_default_calls_hold_about_a_minute_and_a_half_of_audio() -> None:
    """The default call size bounds the waveform (and spectrogram) one extractor call holds: 256 rows, 82 s
    (1,024 rows held 330 s, the whole extraction's peak memory)."""
    calls: list[int] = []

    def counted(decoded: AudioInput) -> Features:
        calls.append(len(decoded.samples))
        rows = num_grid_rows(decoded.duration, 0.96, 0.32)
        return Features(np.zeros((rows, 1), np.float32), grid_times(rows, 0.96, 0.32))

    counted.window_s, counted.step_s, counted.name = 0.96, 0.32, "counted"
    chunks = (np.zeros(16000 * 10, np.float32) for _ in range(60))  # 10 minutes
    feats = streamed_audio_features(chunks, counted, 16000, 600.0)
    assert len(feats) == num_grid_rows(600.0, 0.96, 0.32) and max(calls) < 90 * 16000
