"""`avdet detect` and `avdet eval --checkpoint`: features (computed or cached) -> model -> events in seconds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avdet.errors import AvdetError, CheckpointError, DataError
from avdet.extractors.base import ExtractorSet
from avdet.extractors.registry import EXTRACTORS, build_extractor_set
from avdet.pipeline import ave, media, segments
from avdet.pipeline.checkpoint import LoadedModel, check_compatible, load_model
from avdet.pipeline.cml import CMLResult, evaluate_cml
from avdet.pipeline.config import DataConfig, from_dict
from avdet.pipeline.data import (
    DetectionDataset,
    ReleasedSource,
    StoreSource,
    VideoFeatures,
    collate,
    read_classes,
    split_ids,
    to_video_features,
)
from avdet.pipeline.evaluate import EvalResult, evaluate, events_to_predictions, load_annotations
from avdet.pipeline.extract import ExtractOptions, extract_one
from avdet.pipeline.inference import predict
from avdet.pipeline.postprocess import Event, PostprocessConfig
from avdet.pipeline.store import FeatureStore, default_cache_dir, fingerprint

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
        items = [segments.segment_item(f, segment_s) for f in feats]
        scores = segments.segment_scores(self.loaded.model, segments.collate_segments(items), self.device)
        return {
            f.video_id: segments.segment_events(probs, len(item["mask"]), self.loaded.classes, segment_s)
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


def checkpoint_source(
    checkpoint: Path,
    loaded: LoadedModel,
    annotations: dict,
    *,
    cache: str | Path | None,
    released_root: str | Path | None,
) -> StoreSource | ReleasedSource:
    """The features a checkpoint was trained on: the released folders, or the store under its exact extractor
    spec (never a newer recipe of the same extractor)."""
    if loaded.extractor.get("released"):
        if not released_root:
            raise DataError(f"{checkpoint}: trained on released features; pass --released-root")
        return ReleasedSource(released_root, loaded.extractor["name"], annotations)
    store = FeatureStore(cache or default_cache_dir())
    return StoreSource(store, loaded.extractor["name"], spec=loaded.extractor)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    annotations: str | Path | None = None,
    cache: str | Path | None = None,
    released_root: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    postprocess_overrides: dict | None = None,
    loaded: LoadedModel | None = None,
) -> tuple[EvalResult, dict[str, list[Event]]]:
    """Detect over a split's cached features and score the result against its annotations."""
    checkpoint = Path(checkpoint)
    loaded = loaded or load_model(checkpoint, device)
    data = dict(loaded.meta.get("data", {}))
    ann_path = annotations or data.get("annotations")
    if not ann_path:
        raise DataError(f"{checkpoint}: no annotations recorded in the checkpoint; pass --annotations")
    ann = load_annotations(ann_path)
    classes = read_classes(ann, data.get("classes") or None)
    source = checkpoint_source(
        checkpoint,
        loaded,
        ann,
        cache=cache or data.get("cache"),
        released_root=released_root or data.get("released_root"),
    )
    dataset = DetectionDataset(source, ann, split_ids(ann, split))
    first = dataset[0]
    check_compatible(checkpoint, loaded, classes, (first["visual"].shape[1], first["audio"].shape[1]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    pp = postprocess_config(loaded, postprocess_overrides)
    events = predict(loaded.model, loader, pp, classes, device)
    return evaluate(ann, events_to_predictions(events), split=split), events


@dataclass
class SegmentEval:
    report: ave.SegmentReport  # accuracy, per-class accuracy, confusion matrix (background last)
    background_only: float  # accuracy of always predicting background, the floor


def segment_split(
    checkpoint: Path,
    loaded: LoadedModel,
    split: str,
    *,
    annotations: str | Path | None = None,
    cache: str | Path | None = None,
    released_root: str | Path | None = None,
    ave_root: str | Path | None = None,
) -> Dataset:
    """The labelled dataset of `split` for a segment checkpoint; data locations default to those recorded at
    training, and the split's classes must be the checkpoint's."""
    if loaded.task != "segment":
        raise CheckpointError(f"{checkpoint}: a {loaded.task} checkpoint, not a segment one")
    recorded = dict(loaded.meta.get("data", {}))
    overrides = {"annotations": annotations, "cache": cache, "released_root": released_root, "ave_root": ave_root}
    recorded.update({k: str(v) for k, v in overrides.items() if v is not None})
    data = from_dict(DataConfig, recorded, "data")

    def source_for(ann: dict) -> StoreSource | ReleasedSource:
        return checkpoint_source(checkpoint, loaded, ann, cache=data.cache, released_root=data.released_root)

    dataset, classes, _ = segments.split_dataset(data, split, source_for=source_for)
    first = dataset[0]
    check_compatible(checkpoint, loaded, classes, (first["visual"].shape[-1], first["audio"].shape[-1]))
    return dataset


def evaluate_segment_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = 64,
    loaded: LoadedModel | None = None,
    **data: str | Path | None,
) -> SegmentEval:
    """Segment accuracy of a segment-task checkpoint on a split (background included), with the per-class table
    and the confusion matrix. `data`: annotations / cache / released_root / ave_root overrides."""
    checkpoint = Path(checkpoint)
    loaded = loaded or load_model(checkpoint, device)
    dataset = segment_split(checkpoint, loaded, split, **data)
    loader = segments.validation_loader(dataset, batch_size)
    pred, target = segments.predict_segments(loaded.model, loader, device)
    report = ave.segment_report(pred, target, [*loaded.classes, segments.BACKGROUND_NAME])
    return SegmentEval(report, segments.background_only_accuracy(target, len(loaded.classes)))


def evaluate_cml_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    device: str = "cpu",
    loaded: LoadedModel | None = None,
    **data: str | Path | None,
) -> CMLResult:
    """Cross-modal localization (A2V / V2A) accuracy of a segment checkpoint with a cross-modal embedding space."""
    checkpoint = Path(checkpoint)
    loaded = loaded or load_model(checkpoint, device)
    dataset = segment_split(checkpoint, loaded, split, **data)
    try:
        return evaluate_cml(loaded.model, dataset, device)
    except ValueError as err:
        raise CheckpointError(f"{checkpoint}: {err}") from None
