"""The segment task (AVE-style segment-level AVEL): a video cut into fixed segments, each one class or background;
metric segment accuracy. Predictions become events by merging runs of one class."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from avdet.errors import ConfigError, DataError
from avdet.models.base import DetectorOutput
from avdet.models.segment_losses import (
    SegmentLossConfig,
    SegmentTargets,
    segment_logits,
    segment_loss,
    segment_predictions,
)
from avdet.pipeline.config import DataConfig, ExperimentConfig
from avdet.pipeline.data.annotations import split_ids
from avdet.pipeline.data.ave import BACKGROUND_NAME, AVEFeatureDataset, merge_segment_runs
from avdet.pipeline.data.segments import (
    SegmentDataset,
    collate_segments,
    h5_classes,
    load_segment_annotations,
    segment_item,
)
from avdet.pipeline.data.sources import VideoFeatures, make_source
from avdet.pipeline.distributed import DistributedContext
from avdet.pipeline.inference import pad_inputs
from avdet.pipeline.io.plots import save_confusion_png
from avdet.pipeline.metrics.accuracy import SegmentReport, background_only_accuracy, segment_accuracy, segment_report
from avdet.pipeline.tasks.base import Task
from avdet.pipeline.types import Event

if TYPE_CHECKING:
    from avdet.pipeline.checkpoint import Checkpoint


def batch_targets(batch: dict) -> SegmentTargets:
    """The loss targets of a batch: segment labels only when the batch carries them (never in weak training)."""
    return SegmentTargets(video=batch["video"], segment=batch.get("segment"))


def model_inputs(model: nn.Module, batch: dict, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
    """(audio, visual, mask) on the device, right-padded to the length the model needs (LoCo's pyramid strides)."""
    audio, visual, mask = pad_inputs(model, batch["audio"], batch["visual"], batch["mask"])
    return audio.to(device), visual.to(device), mask.to(device)


def segment_output(model: nn.Module, batch: dict, device: torch.device | str) -> DetectorOutput:
    """The model's output on a batch, its inputs padded as the model needs."""
    return model(*model_inputs(model, batch, device))


@torch.no_grad()
def segment_scores(model: nn.Module, batch: dict, device: torch.device | str) -> Tensor:
    """(B, T, K) per-segment label probabilities (sigmoids: the losses are per-label focal terms), cropped to the
    batch's segment count."""
    output = segment_output(model, batch, device)
    return torch.sigmoid(segment_logits(output, batch["mask"].shape[1]).float()).cpu()


@torch.no_grad()
def predict_segments(
    model: nn.Module, loader: Iterable[dict], device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels of every valid segment of an evaluation split, flattened: argmax over the
    C + 1 labels (the AVE reference's convention)."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        for batch in loader:
            if "segment" not in batch:
                raise DataError("evaluation needs segment labels (the full-setting labels of a val/test split)")
            pred = segment_predictions(segment_output(model, batch, device), batch["mask"].shape[1]).cpu()  # (B, T)
            valid = batch["mask"]
            preds.append(pred[valid].numpy())
            targets.append(batch["segment"][valid].numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds), np.concatenate(targets)


def segment_events(scores: Tensor, length: int, classes: Sequence[str], segment_s: float = 1.0) -> list[Event]:
    """One video's (T, K) probabilities -> events: argmax per segment, runs of one class merged."""
    scores = scores[:length]
    return merge_segment_runs(scores.argmax(dim=-1), scores, list(classes), len(classes), segment_s)


@dataclass
class SegmentSplits:
    train: Dataset
    val: Dataset
    classes: list[str]  # foreground names; background is label len(classes)
    spec: dict  # the features' extractor spec, recorded in checkpoints


def split_dataset(
    data: DataConfig,
    split: str,
    *,
    weak_training: bool = False,
    spec: dict | None = None,
) -> tuple[Dataset, list[str], dict]:
    """One split of a segment experiment: its dataset, the foreground class names and the features' spec.

    `data` is a `DataConfig`. `weak_training` loads video-level labels only (mil_labels.h5 and the noisy videos
    for AVE HDF5 folders). `spec` pins a checkpoint's exact features (`data.sources.make_source`).
    """
    if data.source == "ave_h5":
        if not data.ave_root:
            raise ConfigError("data.ave_root is required when data.source is 'ave_h5'")
        dataset = AVEFeatureDataset(data.ave_root, split, setting="weak" if weak_training else "full")
        spec = {"name": "vgg19_vggish", "released": True, "layout": "ave_h5"}
        return dataset, h5_classes(data.ave_root, dataset.num_labels), spec
    if not data.annotations:
        raise ConfigError("data.annotations is required (an AVE folder, its Annotations.txt, or a JSON file)")
    annotations, classes = load_segment_annotations(data.annotations, data.classes or None)
    source = make_source(data, annotations, spec=spec)
    dataset = SegmentDataset(
        source,
        annotations,
        split_ids(annotations, split),
        len(classes) + 1,
        segment_s=data.segment_s,
        weak_training=weak_training,
    )
    return dataset, classes, dict(source.spec)


def build_splits(cfg: ExperimentConfig) -> SegmentSplits:
    """The training and validation datasets of a segment experiment (`cfg` an `ExperimentConfig`)."""
    weak = cfg.segment_loss.setting == "weak"
    train, classes, spec = split_dataset(cfg.data, cfg.data.train_split, weak_training=weak)
    val, _, _ = split_dataset(cfg.data, cfg.data.val_split)
    return SegmentSplits(train, val, classes, spec)


def check_dims(model_cfg, classes: list[str], item: dict) -> None:
    """Refuse features or classes the model was not configured for (one line)."""
    visual, audio = item["visual"], item["audio"]
    if audio.shape[-1] != model_cfg.audio_dim:
        raise ConfigError(f"model.audio_dim is {model_cfg.audio_dim} but the audio features have {audio.shape[-1]}")
    if visual.shape[-1] % model_cfg.visual_dim:
        raise ConfigError(
            f"model.visual_dim is {model_cfg.visual_dim} but the visual features are {tuple(visual.shape[1:])} "
            "per segment"
        )
    if model_cfg.num_classes != len(classes):
        raise ConfigError(f"model.num_classes is {model_cfg.num_classes} but the data has {len(classes)} classes")


def training_losses(
    net: nn.Module,
    model: nn.Module,
    batch: dict,
    loss_cfg: SegmentLossConfig,
    device: torch.device,
    amp: bool = False,
) -> dict[str, Tensor]:
    """One batch's loss parts ("total" included): `net` may be the DDP wrapper of `model`; `amp` runs the
    forward in bf16 (the losses cast to float)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        output = net(*model_inputs(model, batch, device))
    targets = batch_targets({k: batch[k].to(device) for k in ("video", "segment") if k in batch})
    _, parts = segment_loss(output, targets, loss_cfg, batch["mask"].to(device))
    return parts


def validation_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_segments
    )


class SegmentTask(Task):
    """AVE-style segment-level AVEL: fixed segments, segment losses (full or weak), validation accuracy.

    Under DDP the losses are means over each rank's share and DDP averages them; contrastive terms (WCCL, LCF)
    see the rank's share of the batch only.
    """

    name = "segment"
    metric = "val_accuracy"  # percent
    metric_tag = "val/accuracy"

    def __init__(self, cfg: ExperimentConfig, model_cfg: Any, dist: DistributedContext) -> None:
        self.cfg = cfg
        splits = build_splits(cfg)
        self.train_set, self.val_set, self.classes, self.spec = splits.train, splits.val, splits.classes, splits.spec
        check_dims(model_cfg, self.classes, self.train_set[0])

    def train_loader(self, sampler: torch.utils.data.Sampler) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate_segments,
        )

    def losses(self, net: nn.Module, model: nn.Module, batch: Any, device: torch.device, world: int, amp: bool) -> dict:
        return training_losses(net, model, batch, self.cfg.segment_loss, device, amp)

    @staticmethod
    def loss_scale(world: int) -> int:
        """Means over each rank's share, averaged by DDP: nothing to rescale."""
        return 1

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        loader = validation_loader(self.val_set, self.cfg.train.batch_size, self.cfg.data.num_workers)
        pred, target = predict_segments(model, loader, device)
        return {self.metric: segment_accuracy(pred, target)}

    # -- inference -------------------------------------------------------------------------------------------------
    @classmethod
    def events(cls, ckpt: Checkpoint, feats: list[VideoFeatures], device: torch.device) -> dict[str, list[Event]]:
        """Rows averaged per segment, one label per segment, runs of a class merged into events."""
        segment_s = ckpt.data.segment_s
        items = [segment_item(f, segment_s) for f in feats]
        scores = segment_scores(ckpt.model, collate_segments(items), device)
        return {
            f.video_id: segment_events(probs, len(item["mask"]), ckpt.classes, segment_s)
            for f, item, probs in zip(feats, items, scores, strict=True)
        }

    @classmethod
    def labelled_split(cls, ckpt: Checkpoint, split: str) -> Dataset:
        """The labelled dataset of `split` from the data the checkpoint records; its classes must be the
        checkpoint's."""
        dataset, classes, _ = split_dataset(ckpt.data, split, spec=ckpt.extractor)
        first = dataset[0]
        ckpt.check_compatible(classes, (first["visual"].shape[-1], first["audio"].shape[-1]))
        return dataset

    @classmethod
    def evaluate(cls, ckpt: Checkpoint, split: str, *, device: str = "cpu", batch_size: int = 64) -> SegmentEval:
        """Segment accuracy on a split (background included), the per-class table and the confusion matrix."""
        loader = validation_loader(cls.labelled_split(ckpt, split), batch_size)
        pred, target = predict_segments(ckpt.model, loader, device)
        report = segment_report(pred, target, [*ckpt.classes, BACKGROUND_NAME])
        return SegmentEval(split, report, background_only_accuracy(target, len(ckpt.classes)))


@dataclass
class SegmentEval:
    """Segment accuracy of a checkpoint on one split."""

    split: str
    report: SegmentReport  # accuracy, per-class accuracy, confusion matrix (background last)
    background_only: float  # accuracy of always predicting background, the floor

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        rows = [[name, str(count), "-" if np.isnan(acc) else f"{acc:.2f}"] for name, count, acc in self.report.table()]
        rows.append(["all segments", str(int(self.report.confusion.sum())), f"{self.report.accuracy:.2f}"])
        rows.append(["always background", "", f"{self.background_only:.2f}"])
        return f"Segment accuracy (%), split {self.split}", ["class", "segments", "accuracy"], rows

    def save_outputs(self, checkpoint: Path, *, confusion: Path | None = None, **_: Path | None) -> list[Path]:
        """The confusion matrix PNG (default: beside the checkpoint)."""
        path = confusion or checkpoint.with_name(f"confusion_{self.split}.png")
        return [save_confusion_png(self.report.confusion, self.report.class_names, self.report.accuracy, path)]

    def as_dict(self) -> dict:
        table = self.report.table()
        return {
            "split": self.split,
            "accuracy": self.report.accuracy,
            "background_only": self.background_only,
            "per_class": {n: (None if np.isnan(a) else a) for n, _, a in table},
            "segments": {n: c for n, c, _ in table},
        }
