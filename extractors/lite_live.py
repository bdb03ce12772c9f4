"""`lite` rows computed as a live stream delivers frames and samples: arrays in, finished rows out.

A row is computed as soon as the media behind it has arrived. Audio rows are the offline `LiteAudio` rows exactly:
the log-mel front end is uncentred, so a call that starts on a row boundary sees the same spectrogram frames.
Visual rows are the offline `LiteVisual` rows in their frame descriptors (colour, histograms, texture, edges,
motion). The change against the background cannot be: offline, the background is the median of each 60 s block,
future frames included; live, it is the median of up to BACKGROUND_SAMPLES frames spread over the trailing
BACKGROUND_BLOCK frames received so far (the frame itself included). They agree where the scene stays put.
"""

from __future__ import annotations

import numpy as np

from avdet.extractors.base import AudioInput, num_grid_rows
from avdet.extractors.lite import (
    BACKGROUND_BLOCK,
    BACKGROUND_SAMPLES,
    FINE,
    VISUAL_FRAME_DIM,
    LiteAudio,
    LiteVisual,
    change_against,
    frame_descriptors,
    window_statistics,
)

MEL_WINDOW_S = 0.025  # log_mel's analysis window and hop as LiteAudio calls it: what a row's last frame reaches
MEL_HOP_S = 0.010


def row_start(row: int, step_s: float, rate: float) -> int:
    """First frame (at `rate` per second) of a row, rounded as `lite.window_indices` rounds it."""
    return int(np.round(row * step_s * rate))


class LiveVisualRows:
    """Visual rows of a stream of uint8 frames (n, H, W, 3) at `fps`. Memory holds the trailing background block
    (float16 FINE maps) and the frames of the rows in flight."""

    def __init__(self, extractor: LiteVisual, fps: float) -> None:
        self.step, self.fps = extractor.step_s, fps
        self.width = max(1, int(round(extractor.window_s * fps)))  # frames behind one row
        self.previous: np.ndarray | None = None  # grey last frame (H, W) for the motion descriptor
        self.history = np.zeros((0, FINE, FINE, 3), np.float16)  # the trailing BACKGROUND_BLOCK fine maps
        self.held = np.zeros((0, VISUAL_FRAME_DIM), np.float32)  # per-frame descriptors from frame `offset` on
        self.offset = 0
        self.frames = 0  # frames received
        self.done = 0  # rows computed

    def _backgrounds(self, fine: np.ndarray) -> np.ndarray:
        """(n, FINE, FINE, 3) trailing-median background of each new fine map (float16 as offline stores them)."""
        history = np.concatenate([self.history, fine])
        first = len(self.history)
        out = np.empty((len(fine), FINE, FINE, 3), np.float32)
        for i in range(len(fine)):
            j = first + i
            lo = max(0, j - BACKGROUND_BLOCK + 1)
            pick = np.linspace(lo, j, min(j - lo + 1, BACKGROUND_SAMPLES)).round().astype(np.int64)
            out[i] = np.median(history[pick].astype(np.float32), axis=0)
        self.history = history[-BACKGROUND_BLOCK:]
        return out

    def push(self, frames: np.ndarray) -> np.ndarray:
        """The rows (k, dim) that the new frames complete (k may be 0)."""
        if not len(frames):
            return np.zeros((0, 2 * VISUAL_FRAME_DIM), np.float32)
        frames = np.ascontiguousarray(frames)
        desc, fine = frame_descriptors(frames, self.previous)
        self.previous = frames[-1].astype(np.float32).mean(axis=2) * (1.0 / 255.0)
        fine16 = fine.astype(np.float16)
        change = change_against(fine16.astype(np.float32), self._backgrounds(fine16))
        self.held = np.concatenate([self.held, np.concatenate([desc, change], axis=1)])
        self.frames += len(frames)
        return self._rows(self.frames)

    def _rows(self, limit: int, last_frame: int | None = None) -> np.ndarray:
        """The next rows whose frames all lie below frame `limit`; with `last_frame`, every row below row `limit`
        (frames past `last_frame` read it, as offline at a video's end)."""
        rows = []
        while True:
            start = row_start(self.done, self.step, self.fps)
            if last_frame is None:
                if start + self.width > limit:
                    break
                idx = np.arange(start, start + self.width)
            else:
                if self.done >= limit:
                    break
                idx = np.minimum(np.arange(start, start + self.width), last_frame)
            rows.append(idx - self.offset)
            self.done += 1
        out = window_statistics(self.held[np.stack(rows)]) if rows else np.zeros((0, 2 * VISUAL_FRAME_DIM))
        keep = min(row_start(self.done, self.step, self.fps), self.offset + len(self.held) - 1)  # next row's first
        if keep > self.offset:
            self.held, self.offset = self.held[keep - self.offset :], keep
        return out.astype(np.float32)

    def finish(self, total_rows: int) -> np.ndarray:
        """The rows left up to `total_rows` once the stream has ended (a stream without frames: a zero frame)."""
        if not len(self.held):
            self.held = np.zeros((1, VISUAL_FRAME_DIM), np.float32)
        return self._rows(total_rows, last_frame=self.offset + len(self.held) - 1)


class LiveAudioRows:
    """Audio rows of a stream of mono float32 samples at `sample_rate`. Memory holds the samples from the next
    row's first on."""

    def __init__(self, extractor: LiteAudio, sample_rate: int) -> None:
        self.extractor, self.rate = extractor, sample_rate
        hop = extractor.step_s * sample_rate
        if abs(hop - round(hop)) > 1e-9:
            raise ValueError(f"{extractor.name}: a row step of {hop} samples is not whole; live rows need one")
        self.hop = round(hop)  # samples between row starts
        # Samples a row needs from its own first: its window, plus the last spectrogram frame's reach past it.
        self.span = int(round(extractor.window_s * sample_rate)) + int(round((MEL_WINDOW_S - MEL_HOP_S) * sample_rate))
        self.buffer = np.zeros(0, np.float32)  # samples from row `done`'s first on
        self.samples = 0
        self.done = 0

    def _call(self, count: int, samples: np.ndarray) -> np.ndarray:
        """`count` rows from `samples` that start on the next row's first sample."""
        seconds = (count - 0.5) * self.extractor.step_s + self.extractor.window_s  # `count` rows, half a step spare
        values = self.extractor(AudioInput(samples, self.rate, seconds)).values[:count]
        self.buffer = self.buffer[count * self.hop :]
        self.done += count
        return values

    def push(self, samples: np.ndarray) -> np.ndarray:
        """The rows (k, dim) that the new samples complete (k may be 0)."""
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])
        self.samples += len(samples)
        if len(self.buffer) < self.span:
            return np.zeros((0, self.extractor.dim), np.float32)
        count = (len(self.buffer) - self.span) // self.hop + 1
        need = (count - 1) * self.hop + self.span
        return self._call(count, self.buffer[:need])

    def finish(self, total_rows: int) -> np.ndarray:
        """The rows left up to `total_rows` once the stream has ended (they read what there is, as offline)."""
        count = total_rows - self.done
        if count <= 0:
            return np.zeros((0, self.extractor.dim), np.float32)
        return self._call(count, self.buffer)


def total_rows(seconds: float, window_s: float, step_s: float) -> int:
    """Rows of a stream of `seconds` (the offline count for a file of that duration)."""
    return num_grid_rows(seconds, window_s, step_s)
