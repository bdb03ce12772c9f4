"""`avdet eval --checkpoint`: run a checkpoint over a split and score it (mAP, segment accuracy, cross-modal
localization)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avdet.errors import CheckpointError, DataError
from avdet.pipeline.checkpoint import LoadedModel, check_compatible, load_model
from avdet.pipeline.config import DataConfig, from_dict
from avdet.pipeline.data.annotations import load_annotations, read_classes, split_ids
from avdet.pipeline.data.ave import BACKGROUND_NAME
from avdet.pipeline.data.dense import DetectionDataset, collate
from avdet.pipeline.data.sources import ReleasedSource, StoreSource, checkpoint_source
from avdet.pipeline.detect import postprocess_config
from avdet.pipeline.inference import predict
from avdet.pipeline.metrics.accuracy import SegmentReport, background_only_accuracy, segment_report
from avdet.pipeline.metrics.cml import CMLResult, evaluate_cml
from avdet.pipeline.metrics.mean_ap import EvalResult, evaluate, events_to_predictions
from avdet.pipeline.tasks.segment import predict_segments, split_dataset, validation_loader
from avdet.pipeline.types import Event


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
    report: SegmentReport  # accuracy, per-class accuracy, confusion matrix (background last)
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

    dataset, classes, _ = split_dataset(data, split, source_for=source_for)
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
    loader = validation_loader(dataset, batch_size)
    pred, target = predict_segments(loaded.model, loader, device)
    report = segment_report(pred, target, [*loaded.classes, BACKGROUND_NAME])
    return SegmentEval(report, background_only_accuracy(target, len(loaded.classes)))


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
