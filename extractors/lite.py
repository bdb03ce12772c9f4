"""`lite`: fast CPU features that need no pretrained weights, for demos, tests and CPU-only use.

Not a substitute for pretrained features (I3D-VGGish, ONE-PEACE): it sees colour, texture and motion statistics
and log-mel statistics, enough to learn the generated sample data, not real-world semantics.
Both modalities share the UnAV-100 I3D-VGGish grid by default: 0.96 s windows every 0.32 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avdet.extractors.base import (
    AudioInput,
    ExtractorSet,
    Features,
    MediaRequest,
    VisualInput,
    grid_times,
    num_grid_rows,
)
from avdet.extractors.mel import log_mel

VERSION = 1
THUMB = 4  # thumbnails are THUMB x THUMB RGB
HIST_BINS = 8
VISUAL_FRAME_DIM = THUMB * THUMB * 3 + 3 * HIST_BINS + 4 + THUMB * THUMB  # thumb + histograms + texture + motion


def window_indices(num_rows: int, step: float, window: float, rate: float, available: int) -> np.ndarray:
    """(T, W) indices of the frames (or spectrogram frames) behind each row, clipped to what exists."""
    width = max(1, int(round(window * rate)))
    starts = np.round(np.arange(num_rows) * step * rate).astype(np.int64)
    idx = starts[:, None] + np.arange(width)[None, :]  # (T, W)
    return np.clip(idx, 0, max(available - 1, 0))


def frame_descriptors(frames: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """Per-frame colour / texture / motion statistics of uint8 frames (n, H, W, 3) -> (n, VISUAL_FRAME_DIM)."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0  # (n, H, W, 3) -> (n, 3, H, W)
    n = x.shape[0]
    thumb = F.adaptive_avg_pool2d(x, THUMB).reshape(n, -1)  # (n, 3*THUMB*THUMB)
    # Colour histograms: one bincount over (frame, channel, bin) ids.
    bins = (frames.reshape(n, -1, 3).long() * HIST_BINS) // 256  # (n, H*W, 3)
    ids = (torch.arange(n)[:, None, None] * 3 + torch.arange(3)) * HIST_BINS + bins  # (n, H*W, 3)
    hist = torch.bincount(ids.reshape(-1), minlength=n * 3 * HIST_BINS).reshape(n, -1).float() / bins.shape[1]
    gray = x.mean(dim=1, keepdim=True)  # (n, 1, H, W)
    gx = (gray[..., :, 1:] - gray[..., :, :-1]).abs()
    gy = (gray[..., 1:, :] - gray[..., :-1, :]).abs()
    flat = gray.reshape(n, -1)  # (n, H*W)
    contrast = (flat.square().mean(dim=1) - flat.mean(dim=1).square()).clamp_(min=0).sqrt()
    saturation = (x.amax(dim=1) - x.amin(dim=1)).reshape(n, -1).mean(dim=1)  # chroma: max - min channel
    texture = torch.stack([gx.mean(dim=(1, 2, 3)), gy.mean(dim=(1, 2, 3)), contrast, saturation], dim=1)  # (n, 4)
    # Motion: pooled absolute difference with the frame before (the first frame of a video has none).
    before = torch.cat([gray[:1] if previous is None else previous, gray[:-1]], dim=0)
    motion = F.adaptive_avg_pool2d((gray - before).abs(), THUMB).reshape(n, -1)  # (n, THUMB*THUMB)
    return torch.cat([thumb, hist, texture, motion], dim=1)


@dataclass
class LiteVisual:
    window_s: float = 0.96
    step_s: float = 0.32
    name: str = "lite_visual"
    modality: str = "visual"
    dim: int = 2 * VISUAL_FRAME_DIM

    def __call__(self, decoded: VisualInput) -> Features:
        per_frame, previous = [], None
        for chunk in decoded.chunks:
            frames = torch.from_numpy(np.ascontiguousarray(chunk))
            per_frame.append(frame_descriptors(frames, previous))
            previous = frames[-1:].permute(0, 3, 1, 2).float().mean(dim=1, keepdim=True) / 255.0
        desc = torch.cat(per_frame) if per_frame else torch.zeros(1, VISUAL_FRAME_DIM)  # (N, D)
        rows = num_grid_rows(decoded.duration, self.window_s, self.step_s)
        idx = torch.from_numpy(window_indices(rows, self.step_s, self.window_s, decoded.fps, len(desc)))
        win = desc[idx]  # (T, W, D)
        values = torch.cat([win.mean(dim=1), win.std(dim=1, unbiased=False)], dim=1)  # (T, 2D)
        return Features(values.numpy().astype(np.float32), grid_times(rows, self.window_s, self.step_s))


@dataclass
class LiteAudio:
    window_s: float = 0.96
    step_s: float = 0.32
    num_mels: int = 64
    name: str = "lite_audio"
    modality: str = "audio"
    dim: int = 128

    def __call__(self, decoded: AudioInput) -> Features:
        wave = torch.from_numpy(np.ascontiguousarray(decoded.samples, dtype=np.float32))
        hop_s = 0.010
        mel = log_mel(wave, decoded.sample_rate, hop_s=hop_s, num_mels=self.num_mels)  # (frames, num_mels)
        if mel.shape[0] == 0:
            mel = torch.full((1, self.num_mels), float(np.log(0.01)))
        rows = num_grid_rows(decoded.duration, self.window_s, self.step_s)
        idx = torch.from_numpy(window_indices(rows, self.step_s, self.window_s, 1.0 / hop_s, len(mel)))
        win = mel[idx]  # (T, W, num_mels)
        values = torch.cat([win.mean(dim=1), win.std(dim=1, unbiased=False)], dim=1)  # (T, 2*num_mels)
        return Features(values.numpy().astype(np.float32), grid_times(rows, self.window_s, self.step_s))


def build(
    *, weights_dir: str | None = None, random_weights: bool = False, device: str = "cpu", step_s: float = 0.32
) -> ExtractorSet:
    """The `lite` set. `weights_dir`, `random_weights` and `device` are accepted for a uniform registry call."""
    del weights_dir, random_weights, device
    window_s = 3 * step_s
    visual = LiteVisual(window_s=window_s, step_s=step_s)
    audio = LiteAudio(window_s=window_s, step_s=step_s)
    media = MediaRequest(fps=12.5, size=(64, 64), resize="stretch", sample_rate=16000)
    spec = {
        "name": "lite",
        "version": VERSION,
        "window_s": window_s,
        "step_s": step_s,
        "visual_dim": visual.dim,
        "audio_dim": audio.dim,
        "fps": media.fps,
        "size": list(media.size),
        "sample_rate": media.sample_rate,
    }
    return ExtractorSet("lite", visual, audio, media, spec)
