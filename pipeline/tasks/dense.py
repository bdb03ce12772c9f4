"""The dense task (UnAV-100)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from avdet.errors import ConfigError
from avdet.models.losses import detection_loss
from avdet.pipeline.config import ExperimentConfig
from avdet.pipeline.data.annotations import load_annotations, read_classes, split_ids
from avdet.pipeline.data.dense import DetectionDataset, collate
from avdet.pipeline.data.sources import make_source
from avdet.pipeline.distributed import Dist, SyncedNormaliser, count_replicated_once, enable_lcf_gather
from avdet.pipeline.inference import predict
from avdet.pipeline.metrics.mean_ap import evaluate, events_to_predictions


class DenseTask:
    """UnAV-100-style dense detection: cropped variable-length videos, detection losses, validation mAP."""

    metric = "val_mAP"  # a fraction
    metric_tag = "val/average_mAP"  # its TensorBoard scalar

    def __init__(self, cfg: ExperimentConfig, model_cfg: Any, dist: Dist) -> None:
        self.cfg = cfg
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
        self.normaliser = SyncedNormaliser(dist, cfg.loss.norm_init, cfg.loss.norm_momentum)
        sample = self.train_set[0]
        got = (sample["visual"].shape[1], sample["audio"].shape[1])
        want = (model_cfg.visual_dim, model_cfg.audio_dim)
        if got != want:
            raise ConfigError(f"model expects feature dims {want} (visual, audio) but the data has {got}")
        if model_cfg.num_classes != len(self.classes):
            raise ConfigError(
                f"model.num_classes is {model_cfg.num_classes} but the data has {len(self.classes)} classes"
            )

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
        result = evaluate(self.annotations, events_to_predictions(events), split=self.cfg.data.val_split)
        metrics = {self.metric: result.average_mAP}
        for tiou, ap in zip(result.tiou_thresholds, result.mAP, strict=True):
            metrics[f"val_mAP@{tiou:.1f}"] = float(ap)
        return metrics

    def state_dict(self) -> dict:
        return self.normaliser.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.normaliser.load_state_dict(state)
