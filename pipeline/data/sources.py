"""Feature sources: a video id -> its features (`VideoFeatures`), from the feature store or the released folders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avdet.errors import DataError
from avdet.extractors.base import Features
from avdet.pipeline.config import DataConfig
from avdet.pipeline.io.store import FeatureStore, default_cache_dir, spec_hash
from avdet.pipeline.types import TimeGrid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFeatures:
    video_id: str
    duration: float
    audio: np.ndarray  # (T, Ca) float32
    visual: np.ndarray  # (T, Cv) float32
    grid: TimeGrid


def align_modalities(video_id: str, visual: Features, audio: Features) -> tuple[Features, Features]:
    """Crop both modalities to the shorter one; a one-row difference is a warning, more is an error."""
    diff = abs(len(visual) - len(audio))
    if diff > 1:
        raise DataError(f"{video_id}: visual has {len(visual)} feature rows but audio has {len(audio)}")
    if diff == 1:
        log.warning("%s: visual/audio row counts differ by one (%d vs %d); cropping", video_id, len(visual), len(audio))
    n = min(len(visual), len(audio))
    return Features(visual.values[:n], visual.times[:n]), Features(audio.values[:n], audio.times[:n])


def grid_of(times: np.ndarray) -> TimeGrid:
    """The time grid of rows whose (start, end) seconds are `times` (T, 2): centre of row 0 and the step."""
    centres = times.mean(axis=1)
    step = float(centres[1] - centres[0]) if len(centres) > 1 else float(times[0, 1] - times[0, 0]) / 3.0
    return TimeGrid(offset=float(centres[0]), step=step)


def to_video_features(video_id: str, visual: Features, audio: Features, duration: float) -> VideoFeatures:
    visual, audio = align_modalities(video_id, visual, audio)
    return VideoFeatures(
        video_id,
        float(duration),
        audio.values.astype(np.float32),
        visual.values.astype(np.float32),
        grid_of(visual.times),
    )


class StoreSource:
    """Features of one extractor recipe from the feature store, looked up by video id."""

    def __init__(self, store: FeatureStore, extractor: str, spec: dict | None = None) -> None:
        self.store = store
        self.key, self.spec = (spec_hash(spec), spec) if spec is not None else self._resolve(store, extractor)

    @staticmethod
    def _resolve(store: FeatureStore, extractor: str) -> tuple[str, dict]:
        """The spec folder of `extractor` with the most extracted videos (a newer recipe version starts empty)."""
        found = [
            (len(store.entries(key, "done")), key, spec)
            for key, spec in store.specs(extractor)
            if "modality" not in spec  # one stream only (a unimodal model's detections): not training data
        ]
        if not found:
            raise DataError(f"{store.root}: no {extractor!r} features in this cache (run `avdet extract` first)")
        _, key, spec = max(found, key=lambda f: f[0])
        return key, spec

    def load(self, video_id: str) -> VideoFeatures:
        stored = self.store.load(video_id, self.key)
        return to_video_features(video_id, stored.visual, stored.audio, stored.duration)


class ReleasedSource:
    """The released UnAV-100 feature folders, read in place; durations come from the annotations."""

    def __init__(self, root: str | Path, layout: str, annotations: dict) -> None:
        from avdet.pipeline.io.released import ReleasedFeatures

        self.released = ReleasedFeatures(root, layout)
        self.durations = {v: float(d["duration"]) for v, d in annotations["database"].items()}
        self.spec = {"name": layout, "released": True}

    def load(self, video_id: str) -> VideoFeatures:
        visual, audio = self.released.load(video_id)
        return to_video_features(video_id, visual, audio, self.durations[video_id])


def make_source(data: DataConfig, annotations: dict, spec: dict | None = None) -> StoreSource | ReleasedSource:
    """The feature source of `data`: the released folders, or the feature store. `spec` (a checkpoint's extractor
    spec) pins the exact features a model was trained on: released ones, or the store's folder of that very spec
    (never a newer recipe of the same extractor); without it the store's fullest folder of `data.extractor`."""
    released = spec.get("released") if spec is not None else data.source == "released"
    if released:
        if not data.released_root:
            raise DataError("trained on released features: data.released_root (--released-root) is required")
        return ReleasedSource(data.released_root, spec["name"] if spec else data.released_layout, annotations)
    store = FeatureStore(data.cache or default_cache_dir())
    return StoreSource(store, spec["name"] if spec else data.extractor, spec=spec)
