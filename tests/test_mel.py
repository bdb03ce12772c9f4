"""The log-mel front end against an independent float64 numpy computation of the AudioSet recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avdet.extractors.mel import frame_examples, hertz_to_mel, log_mel, mel_filterbank


def numpy_log_mel(wave: np.ndarray, rate: int = 16000) -> np.ndarray:
    """The recipe written directly: whole 400-sample frames every 160, periodic Hann, |rfft(512)|, HTK mel."""
    win, hop, nfft = 400, 160, 512
    count = 1 + (len(wave) - win) // hop
    frames = np.stack([wave[i * hop : i * hop + win] for i in range(count)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    spec = np.abs(np.fft.rfft(frames * hann, nfft))  # (frames, 257)
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
    bins = mel(np.linspace(0, rate / 2, nfft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    bank = np.zeros((nfft // 2 + 1, 64))
    for i in range(64):
        lo, mid, hi = edges[i : i + 3]
        bank[:, i] = np.maximum(0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    bank[0] = 0
    return np.log(spec @ bank + 0.01)


def test_log_mel_matches_direct_numpy_recipe() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2 + 123) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
    ours = log_mel(torch.from_numpy(wave), 16000)
    ref = numpy_log_mel(wave)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape == (1 + (len(wave) - 400) // 160, 64)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_log_mel_short_waveforms() -> None:
    assert log_mel(torch.zeros(399), 16000).shape == (0, 64)
    assert log_mel(torch.zeros(0), 16000).shape == (0, 64)
    one = log_mel(torch.zeros(400), 16000)
    assert one.shape == (1, 64)
    torch.testing.assert_close(one, torch.full((1, 64), math.log(0.01)))
    with pytest.raises(ValueError, match="mono"):
        log_mel(torch.zeros(2, 1000), 16000)


def test_mel_filterbank_shape_and_triangles() -> None:
    bank = mel_filterbank(64, 257, 16000, 125.0, 7500.0)
    assert bank.shape == (257, 64) and bank.dtype == torch.float64
    assert torch.all(bank[0] == 0)  # DC dropped
    assert torch.all(bank >= 0) and torch.all(bank.max(dim=0).values <= 1.0)
    # Each band's peak sits at increasing frequencies, and nothing leaks above 7500 Hz.
    peaks = bank.argmax(dim=0)
    assert torch.all(peaks[1:] >= peaks[:-1])
    freqs = torch.linspace(0, 8000, 257, dtype=torch.float64)
    assert torch.all(bank[freqs > 7500] == 0)
    assert float(hertz_to_mel(700.0)) == pytest.approx(1127.0 * math.log(2.0))
    with pytest.raises(ValueError):
        mel_filterbank(64, 257, 16000, 125.0, 9000.0)


def test_frame_examples_whole_windows_only() -> None:
    spec = torch.arange(200 * 2, dtype=torch.float32).reshape(200, 2)
    ex = frame_examples(spec, 96, 32)
    assert ex.shape == (1 + (200 - 96) // 32, 96, 2)
    torch.testing.assert_close(ex[1], spec[32:128])
    assert frame_examples(spec[:95], 96, 32).shape == (0, 96, 2)
