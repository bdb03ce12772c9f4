"""`avdet detect` and `avdet eval --checkpoint`: features (computed or cached) -> model -> events in seconds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from avdet.errors import AvdetError, CheckpointError, DataError
from avdet.extractors.base import ExtractorSet
from avdet.extractors.registry import EXTRACTORS, build_extractor_set
from avdet.pipeline.checkpoint import LoadedModel, check_compatible, load_model
from avdet.pipeline.config import from_dict
from avdet.pipeline.data.dense import collate
from avdet.pipeline.data.segments import collate_segments, segment_item
from avdet.pipeline.data.sources import VideoFeatures, to_video_features
from avdet.pipeline.extract import ExtractOptions, extract_one
from avdet.pipeline.inference import predict
from avdet.pipeline.io import media
from avdet.pipeline.io.store import FeatureStore, fingerprint
from avdet.pipeline.postprocess import PostprocessConfig
from avdet.pipeline.tasks.segment import segment_events, segment_scores
from avdet.pipeline.types import Event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    path: str
    video_id: str
    duration: float
    events: list[Event] | None  # None when the video failed
    error: str | None = None


def postprocess_config(loaded: LoadedModel, overrides: dict | None = None) -> PostprocessConfig:
    """The checkpoint's post-processing parameters with command-line overrides applied."""
    values = {**loaded.postprocess, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return from_dict(PostprocessConfig, values, "postprocess")


def extractor_for(loaded: LoadedModel, ckpt: Path, *, weights_dir: str | None, random_weights: bool, device: str):
    """The extractor set that computes exactly the features the checkpoint was trained on."""
    name = loaded.extractor.get("name")
    if name not in EXTRACTORS:
        raise CheckpointError(f"{ckpt}: trained on features {name!r}, which avdet cannot compute from video")
    extractors = build_extractor_set(name, weights_dir=weights_dir, random_weights=random_weights, device=device)
    trained = {k: v for k, v in loaded.extractor.items() if k != "released"}
    if not loaded.extractor.get("released") and extractors.spec != trained:
        raise CheckpointError(
            f"{ckpt}: trained on {name} features with spec {trained}, but this avdet computes {extractors.spec}"
        )
    return extractors


class Detector:
    """A loaded checkpoint plus what it needs to turn video files into events."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        cache: str | Path,
        device: str = "cpu",
        backend: media.Backend = "ffmpeg",
        weights_dir: str | None = None,
        random_weights: bool = False,
        postprocess_overrides: dict | None = None,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.device = torch.device(device)
        self.loaded = load_model(self.checkpoint, self.device)
        self.pp = postprocess_config(self.loaded, postprocess_overrides)
        self.store = FeatureStore(cache)
        self.options = ExtractOptions(
            extractor=self.loaded.extractor["name"],
            backend=backend,
            weights_dir=weights_dir,
            random_weights=random_weights,
            device=device,
        )
        self._extractors: ExtractorSet | None = None

    @property
    def extractors(self) -> ExtractorSet:
        if self._extractors is None:  # built on first use: pretrained backbones are slow to load
            self._extractors = extractor_for(
                self.loaded,
                self.checkpoint,
                weights_dir=self.options.weights_dir,
                random_weights=self.options.random_weights,
                device=self.options.device,
            )
        return self._extractors

    def features(self, path: Path) -> VideoFeatures:
        """Features of one video from the cache, computing them first when missing."""
        res = extract_one(path, self.store, self.extractors, self.options)
        if res.status == "failed":
            raise DataError(f"{path}: {res.reason}")
        key = self.store.register_spec(self.extractors.spec)
        stored = self.store.load_key(fingerprint(path), key)
        feats = to_video_features(res.video_id, stored.visual, stored.audio, stored.duration)
        check_compatible(
            self.checkpoint, self.loaded, self.loaded.classes, (feats.visual.shape[1], feats.audio.shape[1])
        )
        return feats

    def detect(self, paths: list[Path], batch_size: int = 1) -> Iterator[Detection]:
        """Events per video, in input order; a failing video yields a Detection with its error and the rest go on."""
        pending: list[tuple[Path, VideoFeatures]] = []

        def flush() -> Iterator[Detection]:
            feats = [f for _, f in pending]
            events = self._segment_events(feats) if self.loaded.task == "segment" else self._dense_events(feats)
            for p, f in pending:
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

    def _dense_events(self, feats: list[VideoFeatures]) -> dict[str, list[Event]]:
        items = [_item(f) for f in feats]
        return predict(self.loaded.model, [collate(items)], self.pp, self.loaded.classes, self.device)

    def _segment_events(self, feats: list[VideoFeatures]) -> dict[str, list[Event]]:
        """A segment model: rows averaged per segment, one label per segment, runs of a class merged."""
        segment_s = float(self.loaded.meta.get("data", {}).get("segment_s", 1.0))
        items = [segment_item(f, segment_s) for f in feats]
        scores = segment_scores(self.loaded.model, collate_segments(items), self.device)
        return {
            f.video_id: segment_events(probs, len(item["mask"]), self.loaded.classes, segment_s)
            for f, item, probs in zip(feats, items, scores, strict=True)
        }


def _item(f: VideoFeatures) -> dict:
    return {
        "video_id": f.video_id,
        "duration": f.duration,
        "grid": f.grid,
        "audio": torch.from_numpy(f.audio),
        "visual": torch.from_numpy(f.visual),
        "segments": torch.zeros(0, 2),
        "labels": torch.zeros(0, dtype=torch.long),
    }
