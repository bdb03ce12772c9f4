"""Annotations + cached features -> padded `(B, T, C)` batches with boolean masks and per-video time grids.

Seconds everywhere here; grid units (feature rows) only for the targets handed to the model's loss, where
grid g <-> seconds `grid.offset + g * grid.step` (offset = centre of row 0, as every reference maps time).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from avdet.errors import DataError
from avdet.extractors.base import Features
from avdet.pipeline.postprocess import TimeGrid
from avdet.pipeline.store import FeatureStore, default_cache_dir, spec_hash

if TYPE_CHECKING:
    from avdet.pipeline.config import DataConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFeatures:
    video_id: str
    duration: float
    audio: np.ndarray  # (T, Ca) float32
    visual: np.ndarray  # (T, Cv) float32
    grid: TimeGrid


@dataclass(frozen=True)
class GroundTruth:
    segments: np.ndarray  # (N, 2) seconds
    labels: np.ndarray  # (N,) int64


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


def read_classes(annotations: dict, classes_tsv: str | Path | None = None) -> list[str]:
    """Class names by label id: from a TSV (label_id, label) when given, else from the annotations."""
    if classes_tsv:
        path = Path(classes_tsv)
        try:
            with path.open(newline="") as f:
                rows = [r for r in csv.reader(f, delimiter="\t") if r]
        except OSError as err:
            raise DataError(f"{path}: cannot read class list ({err.strerror})") from None
        if rows and not rows[0][0].strip().lstrip("-").isdigit():
            rows = rows[1:]  # header
        try:
            table = {int(r[0]): r[1] for r in rows}
        except (ValueError, IndexError):
            raise DataError(f"{path}: expected 'label_id<TAB>label' lines") from None
    else:
        table = {}
        for video in annotations["database"].values():
            for ann in video.get("annotations", []):
                table[int(ann["label_id"])] = ann["label"]
    if sorted(table) != list(range(len(table))):
        raise DataError(f"class ids must be 0..N-1, got {sorted(table)[:5]}...")
    return [table[i] for i in range(len(table))]


def ground_truth(annotations: dict, video_id: str) -> GroundTruth:
    anns = annotations["database"][video_id].get("annotations", [])
    segments = np.array([a["segment"] for a in anns], dtype=np.float64).reshape(-1, 2)
    labels = np.array([a["label_id"] for a in anns], dtype=np.int64)
    return GroundTruth(segments, labels)


def split_ids(annotations: dict, split: str) -> list[str]:
    ids = sorted(v for v, d in annotations["database"].items() if d.get("subset") == split)
    if not ids:
        raise DataError(f"no videos in split {split!r} of the annotations")
    return ids


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


class StoreSource:
    """Features of one extractor recipe from the feature store, looked up by video id."""

    def __init__(self, store: FeatureStore, extractor: str, spec: dict | None = None) -> None:
        self.store = store
        self.key, self.spec = (spec_hash(spec), spec) if spec is not None else self._resolve(store, extractor)

    @staticmethod
    def _resolve(store: FeatureStore, extractor: str) -> tuple[str, dict]:
        """The spec folder of `extractor` with the most extracted videos (a newer recipe version starts empty)."""
        found = []
        for spec_file in sorted(store.root.glob("*/spec.json")):
            spec = json.loads(spec_file.read_text())
            if spec.get("name") == extractor:
                key = spec_file.parent.name
                found.append((len(store.entries(key, "done")), key, spec))
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
        from avdet.pipeline.released import ReleasedFeatures

        self.released = ReleasedFeatures(root, layout)
        self.durations = {v: float(d["duration"]) for v, d in annotations["database"].items()}
        self.spec = {"name": layout, "released": True}

    def load(self, video_id: str) -> VideoFeatures:
        visual, audio = self.released.load(video_id)
        return to_video_features(video_id, visual, audio, self.durations[video_id])


def make_source(data: DataConfig, annotations: dict) -> StoreSource | ReleasedSource:
    """The feature source a `DataConfig` names: the feature store or released folders."""
    if data.source == "released":
        if not data.released_root:
            raise DataError("data.released_root is required when data.source is 'released'")
        return ReleasedSource(data.released_root, data.released_layout, annotations)
    return StoreSource(FeatureStore(data.cache or default_cache_dir()), data.extractor)
