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
    # (audio alone, visual alone): the event's score with only that stream (`detect --explain-streams`)
    streams: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        """The event as `avdet detect`'s JSON holds it: times rounded to the millisecond, the score to 9 digits
        (float32 exactly, so a ranked list scores the same mAP as in memory); `modality` only when set."""
        out: dict = {
            "label": self.label,
            "label_id": int(self.label_id),
            "start": round(float(self.start), 3),
            "end": round(float(self.end), 3),
            "score": float(f"{self.score:.9g}"),
        }
        if self.modality is not None:
            out["modality"] = self.modality
        if self.streams is not None:  # which stream drove it (`detect --explain-streams`, docs/fusion.md)
            audio, visual = self.streams
            out["streams"] = {
                "audio": float(f"{audio:.6g}"),
                "visual": float(f"{visual:.6g}"),
                "driven_by": stream_driver(self.score, audio, visual),
            }
        return out


def stream_driver(score: float, audio: float, visual: float) -> str:
    """Which stream drove an event: the one that alone keeps more of the score, "both" when neither keeps half."""
    if max(audio, visual) < 0.5 * score:
        return "both"
    return "audio" if audio >= visual else "visual"


MODALITY_TEXT = {"audio_visual": "audio-visual", "audio": "audio only", "visual": "visual only"}


@dataclass(frozen=True)
class TimeGrid:
    """Feature-row time grid: seconds = offset + grid * step (offset = centre of row 0)."""

    offset: float
    step: float

    def to_seconds(self, grid: Array) -> Array:
        """Grid units (float64 array or tensor) -> seconds."""
        return self.offset + grid * self.step


OPERATING_MODES = ("calibrated", "global", "all")


@dataclass(frozen=True)
class OperatingPoint:
    """Which ranked candidates `detect` shows: a score threshold per class (label id), then, per class, events that
    overlap a higher-scoring shown one by tIoU above `overlap_iou` suppressed (None: no suppression).

    mode: "calibrated" (thresholds chosen on a validation split, see pipeline/calibrate.py), "global" (one value
    for every class) or "all" (every candidate, for evaluation)."""

    mode: str
    thresholds: tuple[float, ...]  # per label id
    overlap_iou: float | None
    split: str | None = None  # calibrated: the split the thresholds were chosen on
    tiou: float | None = None  # calibrated: the tIoU of the event-level F1 they maximise
    fallback: tuple[int, ...] = ()  # calibrated: label ids too rare in the split, given the pooled threshold
    validation: dict | None = None  # calibrated: precision, recall, f1 on the split at this operating point

    def record(self, classes: list[str]) -> dict:
        """What `detect` writes into its JSON (thresholds by class name)."""
        doc: dict = {"mode": self.mode, "overlap_iou": self.overlap_iou}
        if self.mode != "all":
            doc["thresholds"] = {name: round(t, 4) for name, t in zip(classes, self.thresholds, strict=True)}
        if self.mode == "calibrated":
            doc.update(split=self.split, tiou=self.tiou, fallback=[classes[i] for i in self.fallback])
        return doc

    def to_payload(self) -> dict:
        """Primitives only, for the checkpoint."""
        return {
            "mode": self.mode,
            "thresholds": [float(t) for t in self.thresholds],
            "overlap_iou": self.overlap_iou,
            "split": self.split,
            "tiou": self.tiou,
            "fallback": list(self.fallback),
            "validation": dict(self.validation or {}),
        }

    @classmethod
    def from_payload(cls, d: dict, num_classes: int) -> OperatingPoint:
        """Inverse of `to_payload`; ValueError naming the problem when the stored values do not fit."""
        try:
            point = cls(
                mode=str(d["mode"]),
                thresholds=tuple(float(t) for t in d["thresholds"]),
                overlap_iou=None if d.get("overlap_iou") is None else float(d["overlap_iou"]),
                split=d.get("split"),
                tiou=d.get("tiou"),
                fallback=tuple(int(i) for i in d.get("fallback", ())),
                validation=dict(d.get("validation") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed operating point ({err})") from None
        if point.mode not in OPERATING_MODES:
            raise ValueError(f"operating point mode {point.mode!r} is not one of {', '.join(OPERATING_MODES)}")
        if len(point.thresholds) != num_classes:
            raise ValueError(f"operating point has {len(point.thresholds)} thresholds for {num_classes} classes")
        if not all(0 <= t <= 1 for t in point.thresholds):
            raise ValueError("operating point thresholds must be scores in [0, 1]")
        return point
