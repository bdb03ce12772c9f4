"""Log-mel front end of VGGish (the AudioSet `mel_features` recipe) in plain torch.

Periodic Hann window, magnitude (not power) STFT without centring or padding, HTK mel triangles between
`f_lo` and `f_hi` with the DC bin zeroed, `log(mel + offset)`. Computed in float64 like the numpy reference,
so the float32 result matches it to rounding. torchaudio is not used: it does not load in every environment.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MEL_BREAK_HZ = 700.0
MEL_HIGH_Q = 1127.0  # HTK: mel = 1127 ln(1 + f / 700)


def hertz_to_mel(hertz: Tensor | float) -> Tensor:
    """HTK mel scale."""
    return MEL_HIGH_Q * torch.log1p(torch.as_tensor(hertz, dtype=torch.float64) / MEL_BREAK_HZ)


def mel_filterbank(num_bins: int, num_fft_bins: int, sample_rate: int, f_lo: float, f_hi: float) -> Tensor:
    """(num_fft_bins, num_bins) float64 matrix: STFT magnitudes -> HTK mel bands (triangles peak at 1)."""
    nyquist = sample_rate / 2.0
    if not 0.0 <= f_lo < f_hi <= nyquist:
        raise ValueError(f"mel band edges must satisfy 0 <= f_lo < f_hi <= {nyquist}; got {f_lo}, {f_hi}")
    fft_mel = hertz_to_mel(torch.linspace(0.0, nyquist, num_fft_bins, dtype=torch.float64))  # (F,)
    lo, hi = float(hertz_to_mel(f_lo)), float(hertz_to_mel(f_hi))
    edges = torch.linspace(lo, hi, num_bins + 2, dtype=torch.float64)  # (num_bins + 2,)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]  # (num_bins,) each
    rising = (fft_mel[:, None] - left) / (centre - left)  # (F, num_bins)
    falling = (right - fft_mel[:, None]) / (right - centre)  # (F, num_bins)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0, :] = 0.0  # the reference drops the DC bin whatever the lower edge
    return weights


def stft_magnitude(signal: Tensor, window_len: int, hop_len: int, fft_len: int) -> Tensor:
    """(frames, fft_len // 2 + 1) |STFT| of `signal[t*hop : t*hop + window_len]`, zero-padded to fft_len.

    Only whole frames are kept (1 + (N - window_len) // hop of them). torch.stft would centre a short window
    inside `fft_len`; we put the window at the start of an `fft_len` window and pad the signal's tail with
    zeros instead, which yields exactly the reference's frames.
    """
    num_frames = 1 + (signal.shape[0] - window_len) // hop_len if signal.shape[0] >= window_len else 0
    if num_frames <= 0:
        return signal.new_zeros((0, fft_len // 2 + 1))
    window = torch.zeros(fft_len, dtype=signal.dtype, device=signal.device)
    window[:window_len] = torch.hann_window(window_len, periodic=True, dtype=signal.dtype, device=signal.device)
    needed = (num_frames - 1) * hop_len + fft_len
    used = signal[: (num_frames - 1) * hop_len + window_len]
    padded = torch.nn.functional.pad(used, (0, needed - used.shape[0]))  # zeros under the zero window tail
    spec = torch.stft(
        padded,
        n_fft=fft_len,
        hop_length=hop_len,
        win_length=fft_len,
        window=window,
        center=False,
        return_complex=True,
    )  # (F, frames)
    return spec.abs().transpose(0, 1)  # (F, frames) -> (frames, F)


def log_mel(
    waveform: Tensor,
    sample_rate: int,
    *,
    window_s: float = 0.025,
    hop_s: float = 0.010,
    num_mels: int = 64,
    f_lo: float = 125.0,
    f_hi: float = 7500.0,
    log_offset: float = 0.01,
) -> Tensor:
    """(frames, num_mels) float32 log-mel spectrogram of a mono waveform in [-1, 1] (empty when too short)."""
    if waveform.ndim != 1:
        raise ValueError(f"log_mel expects a mono waveform (N,), got shape {tuple(waveform.shape)}")
    signal = waveform.to(torch.float64)
    window_len = int(round(sample_rate * window_s))
    hop_len = int(round(sample_rate * hop_s))
    fft_len = 2 ** int(math.ceil(math.log2(window_len)))
    magnitude = stft_magnitude(signal, window_len, hop_len, fft_len)  # (frames, fft_len // 2 + 1)
    bank = mel_filterbank(num_mels, fft_len // 2 + 1, sample_rate, f_lo, f_hi).to(signal.device)
    return torch.log(magnitude @ bank + log_offset).to(torch.float32)


def frame_examples(spectrogram: Tensor, window: int, hop: int) -> Tensor:
    """(N, window, C): whole windows of `window` rows every `hop` rows of a (frames, C) array."""
    if spectrogram.shape[0] < window:
        return spectrogram.new_zeros((0, window, spectrogram.shape[1]))
    return spectrogram.unfold(0, window, hop).transpose(1, 2)  # (N, C, window) -> (N, window, C)
