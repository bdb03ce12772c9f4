"""`avdet detect`: video files -> features (computed, or read once from the cache) -> model -> events in seconds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from avdet.errors import AvdetError, CheckpointError, DataError
from avdet.extractors.base import ExtractorSet
from avdet.extractors.registry import EXTRACTORS
from avdet.pipeline.checkpoint import Checkpoint, load_checkpoint
from avdet.pipeline.data.sources import VideoFeatures, to_video_features
from avdet.pipeline.extract import ExtractOptions, extract_one
from avdet.pipeline.io import media
from avdet.pipeline.io.store import FeatureStore
from avdet.pipeline.tasks import task_class
from avdet.pipeline.types import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    path: str
    video_id: str
    duration: float
    events: list[Event] | None  # None when the video failed
    error: str | None = None


def extractor_for(ckpt: Checkpoint, options: ExtractOptions) -> ExtractorSet:
    """The extractor set that computes exactly the features the checkpoint was trained on."""
    name = ckpt.extractor.get("name")
    if name not in EXTRACTORS:
        raise CheckpointError(f"{ckpt.path}: trained on features {name!r}, which avdet cannot compute from video")
    extractors = options.build()
    trained = {k: v for k, v in ckpt.extractor.items() if k != "released"}
    if not ckpt.extractor.get("released") and extractors.spec != trained:
        raise CheckpointError(
            f"{ckpt.path}: trained on {name} features with spec {trained}, but this avdet computes {extractors.spec}"
        )
    return extractors


class Detector:
    """A loaded checkpoint plus what it needs to turn video files into events: the extractor it was trained on
    and the feature cache."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        cache: str | Path,
        device: str = "cpu",
        backend: media.Backend = "ffmpeg",
        weights_dir: str | None = None,
        random_weights: bool = False,
        postprocess: dict | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.checkpoint = load_checkpoint(checkpoint, self.device, postprocess=postprocess)
        self.task = task_class(self.checkpoint.task)
        self.store = FeatureStore(cache)
        self.options = ExtractOptions(
            extractor=self.checkpoint.extractor["name"],
            backend=backend,
            weights_dir=weights_dir,
            random_weights=random_weights,
            device=device,
            modality=self.checkpoint.modality,  # a unimodal model: only its stream is decoded and computed
        )
        self._extractors: ExtractorSet | None = None

    @property
    def extractors(self) -> ExtractorSet:
        if self._extractors is None:  # built on first use: pretrained backbones are slow to load
            self._extractors = extractor_for(self.checkpoint, self.options)
        return self._extractors

    def features(self, path: Path) -> VideoFeatures:
        """Features of one video from the cache (read once), computing them first when missing."""
        res = extract_one(path, self.store, self.extractors, self.options, keep_features=True)
        if res.status == "failed":
            raise DataError(f"{path}: {res.reason}")
        stored = res.features
        log.info("%s: features %s (%d rows, %.1f s)", path, res.status, res.rows, stored.duration)
        feats = to_video_features(res.video_id, stored.visual, stored.audio, stored.duration)
        self.checkpoint.check_compatible(self.checkpoint.classes, (feats.visual.shape[1], feats.audio.shape[1]))
        return feats

    def detect(self, paths: list[Path], batch_size: int = 1) -> Iterator[Detection]:
        """Events per video, in input order; a failing video yields a Detection with its error and the rest go on."""
        pending: list[tuple[Path, VideoFeatures]] = []

        def flush() -> Iterator[Detection]:
            events = self.task.events(self.checkpoint, [f for _, f in pending], self.device)
            if self.checkpoint.modality != "audio_visual":  # a unimodal model's events say what it heard / saw
                events = {
                    vid: [replace(e, modality=self.checkpoint.modality) for e in evs] for vid, evs in events.items()
                }
            for p, f in pending:
                log.info("%s: %d events before the output threshold", p, len(events[f.video_id]))
                yield Detection(str(p), f.video_id, f.duration, events[f.video_id])
            pending.clear()

        for path in paths:
            try:
                pending.append((path, self.features(path)))
            except AvdetError as err:
                yield from flush() if pending else ()
                yield Detection(str(path), media.video_id(path), 0.0, None, str(err))
                continue
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


class CombinedDetector:
    """Several detectors on the same videos, one timeline: e.g. an audio-visual, an audio-only and a visual-only
    model, so "dog barking (audio only)" (heard, off screen) shows beside "dog barking (audio-visual)". Every event
    carries the modality of the model that found it; a video fails if any model fails on it."""

    def __init__(self, detectors: list[Detector]) -> None:
        if not detectors:
            raise ValueError("CombinedDetector needs at least one detector")
        self.detectors = detectors
        self.name = "+".join(d.checkpoint.name for d in detectors)
        self.classes = list(dict.fromkeys(c for d in detectors for c in d.checkpoint.classes))

    def detect(self, paths: list[Path], batch_size: int = 1) -> Iterator[Detection]:
        runs = [d.detect(paths, batch_size) for d in self.detectors]
        for found in zip(*runs, strict=True):
            failed = [f for f in found if f.events is None]
            if failed:
                yield failed[0]
                continue
            events = [
                e if e.modality else replace(e, modality=d.checkpoint.modality)
                for d, f in zip(self.detectors, found, strict=True)
                for e in f.events
            ]
            yield replace(found[0], events=sorted(events, key=lambda e: -e.score))
