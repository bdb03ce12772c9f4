"""Annotations + cached features -> padded `(B, T, C)` batches with boolean masks and per-video time grids.

Seconds everywhere here; grid units (feature rows) only for the targets handed to the model's loss, where
grid g <-> seconds `grid.offset + g * grid.step` (offset = centre of row 0, as every reference maps time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from avdet.pipeline.data.annotations import ground_truth
from avdet.pipeline.types import TimeGrid

if TYPE_CHECKING:
    from avdet.pipeline.data.sources import VideoFeatures

log = logging.getLogger(__name__)


@dataclass
class Batch:
    video_ids: list[str]
    durations: list[float]
    grids: list[TimeGrid]
    audio: torch.Tensor  # (B, T, Ca)
    visual: torch.Tensor  # (B, T, Cv)
    mask: torch.Tensor  # (B, T) bool, True = valid
    segments: list[torch.Tensor]  # per video (N, 2) in grid units
    labels: list[torch.Tensor]  # per video (N,)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.video_ids,
            self.durations,
            self.grids,
            self.audio.to(device, non_blocking=True),
            self.visual.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            [s.to(device) for s in self.segments],
            [lab.to(device) for lab in self.labels],
        )


def seconds_to_grid(segments: np.ndarray, grid: TimeGrid) -> np.ndarray:
    return (segments - grid.offset) / grid.step


def random_crop(
    length: int,
    segments: np.ndarray,
    max_len: int,
    crop_ratio: tuple[float, float],
    keep: float,
    gen: torch.Generator,
    trials: int = 200,
) -> tuple[int, int, np.ndarray]:
    """A training window [start, end) keeping >= `keep` of at least one event (the reference's truncation).

    Sequences longer than `max_len` are cut to `max_len`; shorter ones to a random 90-100 % (`crop_ratio`) of
    their length. `segments` (N, 2) are in grid units; returns the window and the indices of the events it keeps.
    """

    def randint(lo: int, hi: int) -> int:  # inclusive, from the seeded generator
        return lo + int(torch.randint(0, hi - lo + 1, (1,), generator=gen))

    win = max_len
    if length <= max_len:
        win = randint(max(1, round(crop_ratio[0] * length)), min(length, round(crop_ratio[1] * length)))
        if win >= length:
            return 0, length, np.arange(len(segments))
    seg_len = np.maximum(segments[:, 1] - segments[:, 0], 1e-6)
    kept = np.arange(0)
    start = 0
    for _ in range(trials):
        start = randint(0, length - win)
        inter = np.minimum(segments[:, 1], start + win) - np.maximum(segments[:, 0], start)
        kept = np.nonzero(np.clip(inter, 0, None) / seg_len >= keep)[0]
        if len(kept) or len(segments) == 0:
            break
    return start, start + win, kept


class DetectionDataset(Dataset):
    """Videos of one split: features from a source (feature store or released folders) + ground truth."""

    def __init__(
        self,
        source,
        annotations: dict,
        video_ids: Sequence[str],
        *,
        training: bool = False,
        max_seq_len: int = 224,
        crop_ratio: tuple[float, float] = (0.9, 1.0),
        crop_keep_event: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.source = source
        self.annotations = annotations
        self.video_ids = list(video_ids)
        self.training = training
        self.max_seq_len = max_seq_len
        self.crop_ratio = crop_ratio
        self.crop_keep_event = crop_keep_event
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.video_ids)

    def set_epoch(self, epoch: int) -> None:
        """Crops depend on (seed, epoch, index) only: identical whatever the worker count or a resume."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        vid = self.video_ids[index]
        feats = self.source.load(vid)
        gt = ground_truth(self.annotations, vid)
        segments = seconds_to_grid(gt.segments, feats.grid)
        audio, visual, labels = feats.audio, feats.visual, gt.labels
        grid = feats.grid
        if self.training:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
            start, end, kept = random_crop(
                len(visual), segments, self.max_seq_len, self.crop_ratio, self.crop_keep_event, gen
            )
            audio, visual = audio[start:end], visual[start:end]
            segments = np.clip(segments[kept] - start, 0, end - start)
            labels = labels[kept]
            grid = TimeGrid(offset=grid.offset + start * grid.step, step=grid.step)
        return {
            "video_id": vid,
            "duration": feats.duration,
            "grid": grid,
            "audio": torch.from_numpy(np.ascontiguousarray(audio)),
            "visual": torch.from_numpy(np.ascontiguousarray(visual)),
            "segments": torch.from_numpy(segments.astype(np.float32)),
            "labels": torch.from_numpy(labels),
        }


def collate(items: list[dict], pad_to: int | None = None, multiple: int = 1) -> Batch:
    """Pad to `pad_to` (or the longest item) rounded up to `multiple`; the mask marks the real rows."""
    longest = max(it["visual"].shape[0] for it in items)
    length = max(longest, pad_to or 0)
    length = int(math.ceil(length / multiple) * multiple)
    b = len(items)
    audio = torch.zeros(b, length, items[0]["audio"].shape[1])
    visual = torch.zeros(b, length, items[0]["visual"].shape[1])
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["visual"].shape[0]
        audio[i, :n], visual[i, :n], mask[i, :n] = it["audio"], it["visual"], True
    return Batch(
        [it["video_id"] for it in items],
        [it["duration"] for it in items],
        [it["grid"] for it in items],
        audio,
        visual,
        mask,
        [it["segments"] for it in items],
        [it["labels"] for it in items],
    )


def unlabelled_item(f: VideoFeatures) -> dict:
    """A video's features as a dataset item without ground truth (what `collate` takes)."""
    return {
        "video_id": f.video_id,
        "duration": f.duration,
        "grid": f.grid,
        "audio": torch.from_numpy(f.audio),
        "visual": torch.from_numpy(f.visual),
        "segments": torch.zeros(0, 2),
        "labels": torch.zeros(0, dtype=torch.long),
    }
