"""Small value types shared by every stage, with no torch import: writers, the evaluator and the annotation
readers start fast because they need only these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

Array = TypeVar("Array")  # a float64 numpy array or torch tensor


@dataclass(frozen=True)
class Event:
    """One detected (or annotated) audio-visual event, in seconds."""

    label: str
    label_id: int
    start: float
    end: float
    score: float
    modality: str | None = None  # set when a unimodal model (audio | visual) found it, or in a combined timeline


MODALITY_TEXT = {"audio_visual": "audio-visual", "audio": "audio only", "visual": "visual only"}


@dataclass(frozen=True)
class TimeGrid:
    """Feature-row time grid: seconds = offset + grid * step (offset = centre of row 0)."""

    offset: float
    step: float

    def to_seconds(self, grid: Array) -> Array:
        """Grid units (float64 array or tensor) -> seconds."""
        return self.offset + grid * self.step
