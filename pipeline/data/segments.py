"""The segment task (AVE-style segment-level AVEL) on avdet's pipeline: data, the training step, validation,
and segment predictions turned into events.

A video is cut into fixed `segment_s` segments (AVE: ten 1 s segments); each gets one of C classes or background
(label C). Features come from the AVE release's HDF5 files (`data.source: ave_h5`, `pipeline.ave`) or from any
feature source of the dense pipeline (the store, released folders), whose rows are averaged per segment, so raw
videos extracted by `avdet extract` (e.g. with `vgg19_vggish`, one row per second) train and evaluate the same way.

Items (dicts of tensors) and batches share one layout: audio (T, Ca), visual (T, Cv) or a spatial map
(T, H, W, Cv), mask (T,) bool, video (K,) video-level multi-hot with K = C + 1, and segment (T,) int64 labels
(-1 = padding) except in weakly supervised training, where no segment label is ever loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from avdet.errors import DataError
from avdet.pipeline.data import ave
from avdet.pipeline.data.annotations import load_annotations, read_classes
from avdet.pipeline.data.sources import VideoFeatures

if TYPE_CHECKING:
    pass

BACKGROUND_NAME = ave.BACKGROUND_NAME


# ---------------------------------------------------------------------------------------------- annotations


def load_segment_annotations(path: str | Path, classes_tsv: str | Path | None = None) -> tuple[dict, list[str]]:
    """Annotations and foreground class names for the segment task: an AVE folder (or its `Annotations.txt`),
    read in place and converted, or an avdet / UnAV-100-format JSON file."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == ".txt":
        root = p if p.is_dir() else p.parent
        classes = read_classes({"database": {}}, classes_tsv) if classes_tsv else None
        return ave.load_ave_annotations(root, classes)
    annotations = load_annotations(p)
    return annotations, read_classes(annotations, classes_tsv or None)


def h5_classes(root: str | Path, num_labels: int) -> list[str]:
    """Foreground names of an AVE HDF5 folder: from its `Annotations.txt` when present (the release's order),
    else generic names; the count must match the label files' K - 1."""
    text = Path(root) / "Annotations.txt"
    names = ave.ave_classes(ave.read_ave_annotations(text)) if text.is_file() else []
    if not names and num_labels - 1 == len(ave.AVE_CATEGORIES):
        names = list(ave.AVE_CATEGORIES)
    if not names:
        names = [f"class {k}" for k in range(num_labels - 1)]
    if len(names) != num_labels - 1:
        raise DataError(f"{text}: {len(names)} categories but the label files have {num_labels - 1} event classes")
    return names


# ---------------------------------------------------------------------------------------------- features


def num_segments(duration: float, segment_s: float) -> int:
    """Segments of a clip: its duration in whole segments (10 s AVE clips decode to 9.98-10.02 s), at least 1."""
    return max(1, int(math.floor(duration / segment_s + 0.5)))


def pool_segments(values: np.ndarray, centres: np.ndarray, count: int, segment_s: float) -> np.ndarray:
    """(T, C) feature rows with row-centre times (T,) -> (count, C): the mean of the rows whose centre falls in
    each segment; a segment no row centre falls in takes the row nearest its centre. Rows already one per
    segment (vgg19_vggish) come back unchanged."""
    index = np.clip(np.floor(centres / segment_s).astype(np.int64), 0, count - 1)
    sums = np.zeros((count, values.shape[1]), dtype=np.float64)
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=count)
    out = sums / np.maximum(counts, 1)[:, None]
    empty = np.nonzero(counts == 0)[0]
    if len(empty):
        nearest = np.abs(centres[None, :] - (empty[:, None] + 0.5) * segment_s).argmin(axis=1)  # (E,)
        out[empty] = values[nearest]
    return out.astype(np.float32)


def segment_item(feats: VideoFeatures, segment_s: float) -> dict:
    """A video's features (`data.VideoFeatures`) as an unlabelled segment item: rows averaged per segment."""
    count = num_segments(feats.duration, segment_s)
    centres = feats.grid.offset + np.arange(len(feats.audio)) * feats.grid.step
    return {
        "audio": torch.from_numpy(pool_segments(feats.audio, centres, count, segment_s)),
        "visual": torch.from_numpy(pool_segments(feats.visual, centres, count, segment_s)),
        "mask": torch.ones(count, dtype=torch.bool),
    }


def video_targets(labels: Iterable[int], num_labels: int) -> np.ndarray:
    """(K,) video-level multi-hot from a video's event label ids; background (K - 1) when it has none."""
    out = np.zeros(num_labels, dtype=np.float32)
    for k in labels:
        out[int(k)] = 1.0
    if not out[:-1].any():
        out[-1] = 1.0
    return out


class SegmentDataset(Dataset):
    """One split of segment-task videos from a dense-pipeline feature source (store or released folders).

    Rows are averaged per `segment_s` segment; labels come from the annotations' events (`ave.grid_segment_labels`:
    a segment takes the class covering its centre). `weak_training` yields video-level labels only.
    """

    def __init__(
        self,
        source,
        annotations: dict,
        video_ids: Sequence[str],
        num_labels: int,
        *,
        segment_s: float = 1.0,
        weak_training: bool = False,
    ) -> None:
        self.source, self.annotations, self.video_ids = source, annotations, list(video_ids)
        self.num_labels, self.segment_s, self.weak_training = num_labels, segment_s, weak_training

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> dict:
        vid = self.video_ids[index]
        item = segment_item(self.source.load(vid), self.segment_s)
        count = len(item["mask"])
        events = self.annotations["database"][vid].get("annotations", [])
        item["video_id"] = vid
        item["video"] = torch.from_numpy(video_targets((e["label_id"] for e in events), self.num_labels))
        if not self.weak_training:
            labels = ave.grid_segment_labels(events, count, self.num_labels - 1, self.segment_s)
            item["segment"] = torch.from_numpy(labels)
        return item


def collate_segments(items: list[dict]) -> dict:
    """Stack items into a batch, right-padding shorter videos (mask False, segment label -1); non-tensor fields
    (video ids) become lists."""
    length = max(int(it["mask"].shape[0]) for it in items)
    fill = {"mask": False, "segment": -1}
    batch: dict = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if not isinstance(values[0], Tensor):
            batch[key] = values
            continue
        if key in ("audio", "visual", "mask", "segment"):
            padded = []
            for v in values:
                extra = length - v.shape[0]
                if extra:
                    pad = torch.full((extra, *v.shape[1:]), fill.get(key, 0), dtype=v.dtype)
                    v = torch.cat([v, pad])
                padded.append(v)
            values = padded
        batch[key] = torch.stack(values)
    return batch


# ---------------------------------------------------------------------------------------------- prediction


# ---------------------------------------------------------------------------------------------- training
