"""`lite`: fast CPU features that need no pretrained weights, for demos, tests and CPU-only use.

Not a substitute for pretrained features (I3D-VGGish, ONE-PEACE), but it registers objects: a spatial layout of
local colour, edge and motion descriptors, the change of every frame against the video's background (temporal
median) with the colour of what changed, whole-frame colour/texture statistics, and log-mel statistics. Enough to
learn the generated sample data (small objects on textured backgrounds included), not real-world semantics.
Both modalities share the UnAV-100 I3D-VGGish grid by default: 0.96 s windows every 0.32 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

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

VERSION = 2  # 2: local grids (colour, edges, motion), change against the video's background, foreground colour
FINE = 16  # the fine colour map is FINE x FINE cells: what the background model and the foreground read
GRID = 4  # local descriptors on a GRID x GRID layout
HIST_BINS = 8
HUE_BINS = 8
BACKGROUND_BLOCK = 750  # frames (60 s at 12.5 fps) that share one background estimate
BACKGROUND_SAMPLES = 96  # frames per block the median is taken over
CHANGE_THRESHOLD = 0.12  # L1 RGB distance (0..3) from the background that counts as foreground
CELLS = GRID * GRID
FRAME_DIM = 3 * CELLS + 3 * HIST_BINS + 4 + CELLS + CELLS  # colour grid + histograms + texture + edges + motion
CHANGE_DIM = 2 * CELLS + 1 + 3 + HUE_BINS  # change grids (max, mean) + foreground share, colour and hues
VISUAL_FRAME_DIM = FRAME_DIM + CHANGE_DIM


def window_indices(num_rows: int, step: float, window: float, rate: float, available: int) -> np.ndarray:
    """(T, W) indices of the frames (or spectrogram frames) behind each row, clipped to what exists."""
    width = max(1, int(round(window * rate)))
    starts = np.round(np.arange(num_rows) * step * rate).astype(np.int64)
    idx = starts[:, None] + np.arange(width)[None, :]  # (T, W)
    return np.clip(idx, 0, max(available - 1, 0))


def pool(x: np.ndarray, cells: int, reduce: str = "mean") -> np.ndarray:
    """Average ("mean") or "max" pool the two axes after the first of (n, H, W, ...) to (n, cells, cells, ...); H and
    W are cropped to multiples of `cells`. One axis at a time: numpy reduces a single axis much faster than two."""
    n, h, w = x.shape[:3]
    ch, cw = h // cells, w // cells
    x = x[:, : ch * cells, : cw * cells]
    op = np.add if reduce == "mean" else np.maximum
    x = op.reduce(x.reshape(n, ch * cells, cells, cw, *x.shape[3:]), axis=3)  # (n, H, cells, ...)
    x = op.reduce(x.reshape(n, cells, ch, cells, *x.shape[3:]), axis=2)  # (n, cells, cells, ...)
    return x * (1.0 / (ch * cw)) if reduce == "mean" else x


def frame_descriptors(frames: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame statistics of uint8 frames (n, H, W, 3): (n, FRAME_DIM) descriptors and the (n, FINE, FINE, 3)
    colour map the background model reads. `previous` is the grey last frame of the chunk before (H, W) or None.

    Local, so that a small object registers: a GRID x GRID layout of mean colour, edge energy and motion, next to
    whole-frame colour histograms and texture. Everything works on the FINE map or plain pixel differences, in
    numpy (torch's intra-op threads only slow such small ops on a shared machine)."""
    n = frames.shape[0]
    x = frames.astype(np.float32) * (1.0 / 255.0)  # (n, H, W, 3)
    fine = pool(x, FINE)  # (n, FINE, FINE, 3)
    colour = pool(fine, GRID).reshape(n, -1)  # (n, 3 * CELLS)
    bins = np.minimum((fine * HIST_BINS).astype(np.int64), HIST_BINS - 1).reshape(n, -1, 3)  # (n, FINE^2, 3)
    ids = (np.arange(n)[:, None, None] * 3 + np.arange(3)) * HIST_BINS + bins  # (n, FINE^2, 3)
    hist = np.bincount(ids.ravel(), minlength=n * 3 * HIST_BINS).reshape(n, -1) / bins.shape[1]  # (n, 3 * BINS)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]  # channel slices: numpy reduces a length-3 last axis slowly
    gray = (r + g + b) * (1.0 / 3.0)  # (n, H, W)
    gx = np.abs(np.diff(gray, axis=2))[:, :-1, :]  # (n, H-1, W-1)
    gy = np.abs(np.diff(gray, axis=1))[:, :, :-1]  # (n, H-1, W-1)
    flat = gray.reshape(n, -1)
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # (n, H, W): max - min channel
    saturation = chroma.reshape(n, -1).mean(axis=1)
    texture = np.stack([gx.mean(axis=(1, 2)), gy.mean(axis=(1, 2)), flat.std(axis=1), saturation], axis=1)
    edges = pool(gx + gy, GRID).reshape(n, -1)  # (n, CELLS) local edge energy
    # Motion: pooled absolute difference with the frame before (the first frame of a video has none).
    before = np.concatenate([gray[:1] if previous is None else previous[None], gray[:-1]], axis=0)
    motion = pool(np.abs(gray - before), GRID).reshape(n, -1)  # (n, CELLS)
    desc = np.concatenate([colour, hist, texture, edges, motion], axis=1).astype(np.float32)
    return desc, fine


def background_of(fine: np.ndarray) -> np.ndarray:
    """Per-block temporal median of the fine colour maps (N, FINE, FINE, 3) -> the same shape: what stays put."""
    out = np.empty_like(fine)
    for lo in range(0, len(fine), BACKGROUND_BLOCK):
        block = fine[lo : lo + BACKGROUND_BLOCK]
        pick = np.linspace(0, len(block) - 1, min(len(block), BACKGROUND_SAMPLES)).round().astype(np.int64)
        out[lo : lo + BACKGROUND_BLOCK] = np.median(block[pick], axis=0)
    return out


def hue_bins(rgb: np.ndarray) -> np.ndarray:
    """Hue bin (0..HUE_BINS-1) of every RGB triple in (..., 3), in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)  # (...) in (-pi, pi]
    return np.minimum(((hue + np.pi) / (2 * np.pi) * HUE_BINS).astype(np.int64), HUE_BINS - 1)


def change_descriptors(fine: np.ndarray) -> np.ndarray:
    """(N, CHANGE_DIM): where and what differs from the background, from the fine colour maps (N, FINE, FINE, 3).

    The change map (L1 colour distance to the background) pooled to a GRID layout (max and mean), the share of
    foreground cells, their mean colour and their chroma-weighted hue histogram: an object's colour even when it
    covers a few percent of the frame."""
    return change_against(fine, background_of(fine))


def change_against(fine: np.ndarray, background: np.ndarray) -> np.ndarray:
    """`change_descriptors` against a given background (N, FINE, FINE, 3) or (FINE, FINE, 3): live detection has
    no future frames, so it passes a trailing one."""
    n = fine.shape[0]
    change = np.abs(fine - background).sum(axis=3)  # (N, FINE, FINE)
    grid_max = pool(change, GRID, "max").reshape(n, -1)
    grid_mean = pool(change, GRID).reshape(n, -1)
    weight = np.where(change > CHANGE_THRESHOLD, change, 0.0)  # (N, FINE, FINE)
    total = weight.sum(axis=(1, 2))  # (N,)
    share = (change > CHANGE_THRESHOLD).mean(axis=(1, 2))
    fg_colour = (weight[..., None] * fine).sum(axis=(1, 2)) / np.maximum(total, 1e-6)[:, None]  # (N, 3)
    chroma = (fine.max(axis=3) - fine.min(axis=3)) * weight  # (N, FINE, FINE)
    ids = np.arange(n)[:, None] * HUE_BINS + hue_bins(fine).reshape(n, -1)  # (N, FINE^2)
    hues = np.bincount(ids.ravel(), weights=chroma.ravel(), minlength=n * HUE_BINS).reshape(n, HUE_BINS)
    hues = hues / np.maximum(total, 1e-6)[:, None]
    return np.concatenate([grid_max, grid_mean, share[:, None], fg_colour, hues], axis=1).astype(np.float32)


def frame_stats(chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`frame_descriptors` of every decoded chunk, each with its fine maps as stored for the background model
    (float16: what the features have always been computed from)."""
    previous = None
    for chunk in chunks:
        frames = np.ascontiguousarray(chunk)
        desc, fine = frame_descriptors(frames, previous)
        yield desc, fine.astype(np.float16)
        previous = frames[-1].astype(np.float32).mean(axis=2) * (1.0 / 255.0)


def block_descriptors(stats: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
    """Per-frame descriptors (n, VISUAL_FRAME_DIM), one background block (BACKGROUND_BLOCK frames, the last one
    shorter) at a time: the change against the background needs only its own block, so memory holds one block,
    not the video."""
    descs: list[np.ndarray] = []
    fines: list[np.ndarray] = []
    pending = 0
    for desc, fine in stats:
        descs.append(desc)
        fines.append(fine)
        pending += len(desc)
        while pending >= BACKGROUND_BLOCK:
            desc_all, fine_all = np.concatenate(descs), np.concatenate(fines)
            yield _with_change(desc_all[:BACKGROUND_BLOCK], fine_all[:BACKGROUND_BLOCK])
            descs, fines = [desc_all[BACKGROUND_BLOCK:]], [fine_all[BACKGROUND_BLOCK:]]
            pending -= BACKGROUND_BLOCK
    if pending:
        yield _with_change(np.concatenate(descs), np.concatenate(fines))


def _with_change(desc: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """(n, FRAME_DIM) descriptors and (n, FINE, FINE, 3) float16 maps of one whole background block ->
    (n, VISUAL_FRAME_DIM)."""
    return np.concatenate([desc, change_descriptors(fine.astype(np.float32))], axis=1)


def window_statistics(win: np.ndarray) -> np.ndarray:
    """(T, W, D) frames behind each row -> (T, 2D): their mean and standard deviation."""
    return np.concatenate([win.mean(axis=1), win.std(axis=1)], axis=1)


def windowed_rows(blocks: Iterable[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """(T, 2D) row statistics over per-frame descriptor blocks, `idx` (T, W) the unclipped frames behind each row
    (`window_indices`). A row is computed as soon as its last frame has arrived, so only the frames from the first
    pending row's window on are held; the rows left at the end read the last frame for frames past it (the clip of
    `window_indices`), a video without frames reads a zero frame."""
    out = np.empty((len(idx), 2 * VISUAL_FRAME_DIM), np.float32)  # filled in order: no list of pieces to join
    held = np.zeros((0, VISUAL_FRAME_DIM), np.float32)  # frames offset, offset + 1, ...
    offset = done = 0
    for block in blocks:
        held = np.concatenate([held, block])
        have = offset + len(held)
        ready = int(np.searchsorted(idx[:, -1], have))  # rows whose last frame is < have (idx is sorted)
        if ready > done:
            out[done:ready] = window_statistics(held[idx[done:ready] - offset])  # (ready - done, W, D) gathered
            done = ready
        keep = min(int(idx[done, 0]) if done < len(idx) else have, have - 1)  # the next row's first frame
        held, offset = held[keep - offset :], keep
    if done < len(idx):
        if offset + len(held) == 0:
            held = np.zeros((1, VISUAL_FRAME_DIM), np.float32)
        last = offset + len(held) - 1
        out[done:] = window_statistics(held[np.minimum(idx[done:], last) - offset])
    return out


@dataclass
class LiteVisual:
    window_s: float = 0.96
    step_s: float = 0.32
    name: str = "lite_visual"
    modality: str = "visual"
    dim: int = 2 * VISUAL_FRAME_DIM

    def __call__(self, decoded: VisualInput) -> Features:
        """Streams: memory holds a decoder chunk, one background block and the frames of the rows in flight,
        whatever the video's length (3 hours of frames: 343 MB peak for the process, 2.2 GB before)."""
        rows = num_grid_rows(decoded.duration, self.window_s, self.step_s)
        idx = window_indices(rows, self.step_s, self.window_s, decoded.fps, available=np.iinfo(np.int64).max)
        values = windowed_rows(block_descriptors(frame_stats(decoded.chunks)), idx)
        return Features(values, grid_times(rows, self.window_s, self.step_s))


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
