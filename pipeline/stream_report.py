"""Does the audio-visual model earn its second stream? Each stream's one-stream score against chance, and which
stream drove a detected event (docs/fusion.md).

Both answers remove one stream from a trained audio-visual LoCo (`models.fusion.without_stream`: its encoder output
is zeroed, as modality dropout does while training). Only a model trained with `model.modality_dropout > 0` has
learned to detect from one stream, so only then are these scores the one-stream floors; for any other model the
report says so instead of printing numbers that mean nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from avdet.errors import DataError
from avdet.models.fusion import without_stream
from avdet.pipeline.checkpoint import Checkpoint, load_checkpoint
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.metrics.mean_ap import evaluate, events_to_predictions
from avdet.pipeline.types import Event

REPORT_FILE = "streams.json"  # in the run folder, beside best.ckpt
MATCH_TIOU = 0.5  # an event found with one stream removed is "the same" event at this tIoU


def can_remove_streams(ckpt: Checkpoint) -> str | None:
    """None when the checkpoint's model can be scored with one stream removed, else why not (one sentence)."""
    cfg = getattr(ckpt.model, "cfg", None)
    if ckpt.modality != "audio_visual" or not hasattr(ckpt.model, "removed_stream"):
        return f"a {ckpt.modality} {type(ckpt.model).__name__} has no second stream to remove"
    if getattr(ckpt, "task", "dense") != "dense":
        return f"the one-stream report covers dense detection, not a {ckpt.task} checkpoint"
    if getattr(cfg, "modality_dropout", 0.0) <= 0:
        return (
            "the model was trained without modality dropout, so it never saw a missing stream: train with "
            "--set model.modality_dropout=0.5 to measure each stream's floor (or train model.modality=audio|visual)"
        )
    return None


@dataclass(frozen=True)
class StreamReport:
    """Avg. mAP (fractions) on one split: the fused model, each stream alone, and random segments (chance)."""

    split: str
    fused: float
    audio: float
    visual: float
    chance: float

    def text(self) -> str:
        better = "audio" if self.audio >= self.visual else "visual"
        margin = self.fused - max(self.audio, self.visual)
        verdict = (
            f"the fused model beats the better single stream ({better}) by {100 * margin:.1f}"
            if margin > 0
            else f"the fused model does NOT beat the better single stream ({better}): {100 * margin:.1f}"
        )
        return (
            f"{self.split} Avg. mAP: fused {100 * self.fused:.1f}, audio stream alone {100 * self.audio:.1f}, "
            f"visual stream alone {100 * self.visual:.1f}, chance {100 * self.chance:.1f}; {verdict}"
        )


def chance_map(annotations: dict, split: str, classes: list[str], seed: int = 0, per_video: int = 50) -> float:
    """Avg. mAP of random segments: `per_video` per clip of random class, span and score (what guessing scores)."""
    rng = np.random.default_rng(seed)
    events: dict[str, list[Event]] = {}
    for vid, entry in sorted(annotations["database"].items()):
        if entry.get("subset") != split:
            continue
        duration = float(entry["duration"])
        ends = np.sort(rng.uniform(0, duration, size=(per_video, 2)), axis=1)  # (n, 2) start <= end
        labels = rng.integers(len(classes), size=per_video)
        scores = rng.uniform(size=per_video)
        events[vid] = [
            Event(classes[k], int(k), float(s), float(e), float(sc))
            for (s, e), k, sc in zip(ends, labels, scores, strict=True)
            if e > s
        ]
    return float(evaluate(annotations, events_to_predictions(events), split=split).average_mAP)


def stream_report(checkpoint: str | Path, split: str = "validation", device: str = "cpu") -> StreamReport:
    """Score a run's checkpoint on `split` fused, with each stream removed, and against chance; raises DataError
    (one line) when the model cannot be scored with a stream removed."""
    from avdet.pipeline.data.annotations import load_annotations, read_classes
    from avdet.pipeline.tasks.dense import DenseTask

    ckpt = load_checkpoint(checkpoint, torch.device(device))
    why = can_remove_streams(ckpt)
    if why is not None:
        raise DataError(f"{checkpoint}: {why}")
    scores = {}
    for name, removed in (("fused", None), ("audio", "visual"), ("visual", "audio")):
        with without_stream(ckpt.model, removed):
            scores[name] = float(DenseTask.evaluate(ckpt, split, device=device).result.average_mAP)
    annotations = load_annotations(ckpt.data.annotations)
    classes = read_classes(annotations, ckpt.data.classes or None)
    return StreamReport(split, chance=chance_map(annotations, split, classes), **scores)


def write_stream_report(run_dir: Path, report: StreamReport) -> Path:
    path = run_dir / REPORT_FILE
    write_text_atomic(path, json.dumps({**asdict(report), "summary": report.text()}, indent=1) + "\n")
    return path


def _best_match(event: Event, candidates: list[Event]) -> float:
    """Highest score among same-class candidates overlapping `event` at tIoU >= MATCH_TIOU (0 when none)."""
    best = 0.0
    for c in candidates:
        if c.label_id != event.label_id:
            continue
        inter = max(0.0, min(c.end, event.end) - max(c.start, event.start))
        union = max(c.end, event.end) - min(c.start, event.start)
        if union > 0 and inter / union >= MATCH_TIOU:
            best = max(best, c.score)
    return best


def explain_streams(
    candidates: Callable[[Checkpoint, list, torch.device], dict[str, list[Event]]],
    ckpt: Checkpoint,
    feats: list,
    shown: dict[str, list[Event]],
    device: torch.device,
) -> dict:
    """`shown` events per video with `streams` set: each event's score with only the audio and only the visual
    stream (the same class and span, tIoU >= 0.5, among the `candidates` of the model with the other stream
    removed; 0 when not found). `candidates` is detect's `candidate_events`."""
    alone = {}
    for name, removed in (("audio", "visual"), ("visual", "audio")):
        with without_stream(ckpt.model, removed):
            alone[name] = candidates(ckpt, feats, device)
    out = {}
    for vid, events in shown.items():
        out[vid] = [
            replace(e, streams=(_best_match(e, alone["audio"][vid]), _best_match(e, alone["visual"][vid])))
            for e in events
        ]
    return out
