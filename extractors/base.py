"""The extractor interface: decoded arrays in, `Features` (rows with their own seconds) out.

Extractors never open files and never print: `pipeline.media` decodes, `pipeline.store` caches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Modality = Literal["audio", "visual"]


@dataclass(frozen=True)
class Features:
    """`values (T, C) float32` and `times (T, 2)` float64: the (start, end) seconds of every row."""

    values: np.ndarray
    times: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.times.shape != (self.values.shape[0], 2):
            raise ValueError(f"Features: values {self.values.shape} and times {self.times.shape} disagree")

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class VisualInput:
    """Frames at `fps`, `size` = (height, width), streamed as uint8 chunks (n, H, W, 3)."""

    chunks: Iterable[np.ndarray]
    fps: float
    duration: float


@dataclass(frozen=True)
class AudioInput:
    """Mono float32 waveform in [-1, 1] at `sample_rate` (zeros when the file has no audio stream)."""

    samples: np.ndarray
    sample_rate: int
    duration: float


@runtime_checkable
class Extractor(Protocol):
    """One modality's feature backbone on a regular time grid."""

    name: str
    modality: Modality
    dim: int
    window_s: float  # seconds of media behind one row
    step_s: float  # seconds between consecutive rows

    def __call__(self, decoded: VisualInput | AudioInput) -> Features: ...


@dataclass(frozen=True)
class MediaRequest:
    """What an extractor set needs the decoder to produce."""

    fps: float = 25.0
    size: tuple[int, int] = (224, 224)  # (height, width)
    resize: Literal["stretch", "short_side_crop"] = "stretch"
    short_side: int = 256  # used by "short_side_crop": resize short side, then centre-crop to `size`
    sample_rate: int = 16000


@dataclass
class ExtractorSet:
    """A registry entry: the visual and audio extractors of one feature recipe, on one time grid."""

    name: str
    visual: Extractor
    audio: Extractor
    media: MediaRequest
    spec: dict = field(default_factory=dict)  # primitives only: stored in checkpoints and hashed by the store

    @property
    def dims(self) -> tuple[int, int]:
        """(visual_dim, audio_dim)."""
        return self.visual.dim, self.audio.dim


def grid_times(num_rows: int, window_s: float, step_s: float, offset_s: float = 0.0) -> np.ndarray:
    """(T, 2) start/end seconds of rows `offset + i*step ... + window`."""
    starts = offset_s + step_s * np.arange(num_rows, dtype=np.float64)
    return np.stack([starts, starts + window_s], axis=1)


def num_grid_rows(duration: float, window_s: float, step_s: float) -> int:
    """Rows of a sliding window that fit in `duration` (at least one: short clips still get a row)."""
    if duration <= window_s:
        return 1
    return int(math.floor((duration - window_s) / step_s + 1e-6)) + 1


def rechunk(chunks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Decoder chunks re-cut into pieces of at most `size` frames (bounds an extractor's working set)."""
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]
