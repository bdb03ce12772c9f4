"""The dense task (UnAV-100): untrimmed videos -> events (class, start, end, score); metric mAP at tIoU thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from avdet.errors import ConfigError, DataError
from avdet.models.losses import detection_loss
from avdet.models.pyramid import streams
from avdet.pipeline.config import ExperimentConfig
from avdet.pipeline.data.annotations import load_annotations, read_classes, split_ids
from avdet.pipeline.data.dense import DetectionDataset, collate
from avdet.pipeline.data.sources import VideoFeatures, make_source
from avdet.pipeline.distributed import DistributedContext, SyncedNormaliser, count_replicated_once, enable_lcf_gather
from avdet.pipeline.inference import predict, video_candidates
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.metrics.mean_ap import MapScores, evaluate, events_to_predictions
from avdet.pipeline.operating_point import choose_thresholds
from avdet.pipeline.tasks.base import Task
from avdet.pipeline.types import Event, OperatingPoint

if TYPE_CHECKING:
    from avdet.pipeline.checkpoint import Checkpoint


class DenseTask(Task):
    """UnAV-100-style dense detection: cropped variable-length videos, detection losses, validation mAP."""

    name = "dense"
    metric = "val_mAP"  # a fraction
    metric_tag = "val/average_mAP"  # its TensorBoard scalar

    def __init__(self, cfg: ExperimentConfig, model_cfg: Any, dist: DistributedContext) -> None:
        self.cfg = cfg
        if not cfg.data.annotations:  # say which setting, not ": annotations file not found"
            raise ConfigError("data.annotations is empty: set it with --set data.annotations=FILE or in the config")
        self.annotations = load_annotations(cfg.data.annotations)
        self.classes = read_classes(self.annotations, cfg.data.classes or None)
        source = make_source(cfg.data, self.annotations)
        self.spec = dict(source.spec)
        self.max_seq_len = model_cfg.max_seq_len
        self.train_set = DetectionDataset(
            source,
            self.annotations,
            split_ids(self.annotations, cfg.data.train_split),
            training=True,
            max_seq_len=model_cfg.max_seq_len,
            crop_ratio=cfg.data.crop_ratio,
            crop_keep_event=cfg.data.crop_keep_event,
            seed=cfg.train.seed,
        )
        self.val_set = DetectionDataset(source, self.annotations, split_ids(self.annotations, cfg.data.val_split))
        self._candidates: dict[str, list[Event]] | None = None  # of the last validation pass
        self.normaliser = SyncedNormaliser(dist, cfg.loss.norm_init, cfg.loss.norm_momentum)
        if model_cfg.num_classes != len(self.classes):
            raise ConfigError(
                f"model.num_classes is {model_cfg.num_classes} but the data has {len(self.classes)} classes"
            )
        self._preflight(source, model_cfg)

    def _preflight(self, source: Any, model_cfg: Any) -> None:
        """Every video the run will see (train, validation, test) has features of the model's dims and a length
        the model takes: a run that cannot finish fails now, not at its first validation hours later."""
        used = streams(getattr(model_cfg, "modality", "audio_visual"))  # a unimodal model: its stream only
        want = tuple(getattr(model_cfg, f"{n}_dim") for n in used)
        splits = (self.cfg.data.train_split, self.cfg.data.val_split, self.cfg.data.test_split)
        database = self.annotations["database"]
        for split in dict.fromkeys(splits):
            for vid in sorted(v for v, d in database.items() if d.get("subset") == split):
                feats = source.load(vid)
                got = tuple(getattr(feats, n).shape[1] for n in used)
                if got != want:
                    raise ConfigError(
                        f"{vid} ({split}): model expects feature dims {want} ({', '.join(used)}), got {got}"
                    )
                if split == self.cfg.data.train_split:
                    continue  # training crops to max_seq_len
                try:
                    model_cfg.padded_length(len(feats.visual))
                except ValueError as err:
                    raise ConfigError(f"{vid} ({split}): {err}") from None

    def prepare(self, model: nn.Module, world: int) -> None:
        if world > 1:
            enable_lcf_gather(model)

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)

    def train_loader(self, sampler: torch.utils.data.Sampler) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.cfg.data.num_workers,
            collate_fn=partial(collate, pad_to=self.max_seq_len),
        )

    def losses(self, net: nn.Module, model: nn.Module, batch: Any, device: torch.device, world: int, amp: bool) -> dict:
        """Loss parts of one batch (bf16 forward with `amp`, float losses). With `loss_scale` DDP's gradient
        average gives the single-process gradient: the terms are sums over this rank's share divided by the
        global normaliser, hence the world factor."""
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(batch.audio, batch.visual, batch.mask)
        losses = detection_loss(out, batch.segments, batch.labels, len(self.classes), self.normaliser, self.cfg.loss)
        return count_replicated_once(losses, self.cfg.loss.lcf_weight, world)

    @staticmethod
    def loss_scale(world: int) -> int:
        """Factor on the loss before backward (see `losses`)."""
        return world

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        loader = DataLoader(
            self.val_set,
            batch_size=self.cfg.train.batch_size,
            shuffle=False,
            num_workers=self.cfg.data.num_workers,
            collate_fn=collate,
        )
        events = predict(model, loader, self.cfg.postprocess, self.classes, device)
        self._candidates = events  # what `calibration` chooses the operating point on
        result = evaluate(self.annotations, events_to_predictions(events), split=self.cfg.data.val_split)
        metrics = {self.metric: result.average_mAP}
        for tiou, ap in zip(result.tiou_thresholds, result.mAP, strict=True):
            metrics[f"val_mAP@{tiou:.1f}"] = float(ap)
        return metrics

    def calibration(self) -> OperatingPoint | None:
        """Per-class thresholds and overlap suppression chosen on the last validation pass's candidates: what
        `avdet calibrate` would choose for the checkpoint of that pass on the validation split."""
        if self._candidates is None:
            return None
        return choose_thresholds(self.annotations, self._candidates, len(self.classes), self.cfg.data.val_split)

    def state_dict(self) -> dict:
        return self.normaliser.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.normaliser.load_state_dict(state)

    # -- inference -------------------------------------------------------------------------------------------------
    @classmethod
    def events(cls, ckpt: Checkpoint, feats: list[VideoFeatures], device: torch.device) -> dict[str, list[Event]]:
        return video_candidates(ckpt.model, feats, ckpt.postprocess, ckpt.classes, device)

    @classmethod
    def evaluate(cls, ckpt: Checkpoint, split: str, *, device: str = "cpu", batch_size: int = 16) -> MapReport:
        """Detect over a split's cached (or released) features and score every candidate against its
        annotations (mAP uses the full ranked list)."""
        if not ckpt.data.annotations:
            raise DataError(f"{ckpt.path}: no annotations recorded in the checkpoint; pass --annotations")
        annotations = load_annotations(ckpt.data.annotations)
        classes = read_classes(annotations, ckpt.data.classes or None)
        source = make_source(ckpt.data, annotations, spec=ckpt.extractor)
        dataset = DetectionDataset(source, annotations, split_ids(annotations, split))
        first = dataset[0]
        ckpt.check_compatible(classes, (first["visual"].shape[1], first["audio"].shape[1]))
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
        events = predict(ckpt.model, loader, ckpt.postprocess, classes, device)
        return MapReport(split, evaluate(annotations, events_to_predictions(events), split=split), events)


@dataclass
class MapReport(MapScores):
    """UnAV-100 mAP of a checkpoint on one split, with the events it was computed from."""

    events: dict[str, list[Event]]  # every candidate per video (the predictions file)

    def save_outputs(self, checkpoint: Path, *, predictions: Path | None = None, **_: Path | None) -> list[Path]:
        """The predictions file in the UnAV-100 results format (default: beside the checkpoint)."""
        path = predictions or checkpoint.with_name(f"predictions_{self.split}.json")
        write_text_atomic(path, json.dumps(events_to_predictions(self.events)))
        return [path]
