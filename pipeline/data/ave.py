"""The AVE dataset (segment-level AVEL), read in place: annotation text files, released HDF5 features, metrics.

Text files (`Annotations.txt`, `trainSet.txt`, `valSet.txt`, `testSet.txt`): one video per line,
`Category&VideoID&Quality&StartTime&EndTime` (integer seconds), an optional header line with those names. Video
ids may start with `-`; categories contain commas and spaces but never `&`.

Released features (YapengTian/AVE-ECCV18 layout; every file one HDF5 dataset under the key `avadataset`, rows in
`Annotations.txt` order): `visual_feature.h5` (N, 10, 7, 7, 512), `audio_feature.h5` (N, 10, 128), `labels.h5`
(N, 10, 29) one-hot with background = 28; `train_order.h5` / `val_order.h5` / `test_order.h5` (key `order`): row
indices of each split. Weak setting: `mil_labels.h5` (N, 29) video-level labels, and background-only "noisy"
videos `visual_feature_noisy.h5` (AVE-ECCV18 calls it `video_feature_noisy.h5`), `audio_feature_noisy.h5`,
`labels_noisy.h5`, used for training only (as the reference does).

Conversion: `ave_to_annotations` turns the text files into avdet's annotation model (the UnAV-100-style JSON
dict), one event per video spanning its [start, end) seconds, so raw AVE videos go through `avdet extract`.

Metric (REFERENCE.md, "Segment-level AVEL"): segment accuracy over all test segments, background included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from avdet.errors import DataError
from avdet.pipeline.io.atomic import atomic_path
from avdet.pipeline.types import Event

log = logging.getLogger(__name__)

# Label ids of the release (labels.h5 columns), the order every AVE code base uses; background is the 29th.
AVE_CATEGORIES: tuple[str, ...] = (
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
)
BACKGROUND_NAME = "Background"
NUM_SEGMENTS = 10
SEGMENT_S = 1.0
HEADER = ("Category", "VideoID", "Quality", "StartTime", "EndTime")
SPLIT_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}
ORDER_FILES = {"train": "train_order.h5", "validation": "val_order.h5", "test": "test_order.h5"}
H5_KEY = "avadataset"
ORDER_KEY = "order"
VISUAL_FILE, AUDIO_FILE, LABELS_FILE = "visual_feature.h5", "audio_feature.h5", "labels.h5"
MIL_LABELS_FILE = "mil_labels.h5"
NOISY_VISUAL_FILES = ("visual_feature_noisy.h5", "video_feature_noisy.h5")
NOISY_AUDIO_FILE, NOISY_LABELS_FILE = "audio_feature_noisy.h5", "labels_noisy.h5"


def video_labels_from_segments(segment: Tensor, num_labels: int) -> Tensor:
    """(B, T) segment labels (-1 = padding) -> (B, C + 1) multi-hot of the event classes present.

    A video whose valid segments are all background gets the background label; otherwise background is left out
    (the AVE weak-setting `mil_labels` convention: one event class per clean video).
    """
    background = num_labels - 1
    out = torch.zeros(segment.shape[0], num_labels, device=segment.device)
    valid = segment >= 0
    onehot = F.one_hot(segment.clamp(min=0), num_labels).float() * valid[..., None]  # (B, T, K)
    present = onehot.amax(dim=1)  # (B, K)
    has_event = present[:, :background].sum(dim=1) > 0
    out[:, :background] = present[:, :background]
    out[:, background] = (~has_event).float()
    return out


# ---------------------------------------------------------------------------------------------- text files


@dataclass(frozen=True)
class AVEEntry:
    category: str
    video_id: str
    quality: str
    start: int  # seconds, inclusive
    end: int  # seconds, exclusive


def parse_ave_lines(lines: Sequence[str], source: str = "<text>") -> list[AVEEntry]:
    """Parse `&`-separated AVE lines (header and blank lines skipped); bad lines are a `DataError` naming them."""
    entries: list[AVEEntry] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        fields = [f.strip() for f in line.split("&")]
        if tuple(f.lower() for f in fields) == tuple(h.lower() for h in HEADER):
            continue
        if len(fields) != 5:
            raise DataError(f"{source}:{number}: expected 5 '&'-separated fields, found {len(fields)}: {line[:80]!r}")
        category, video_id, quality, start_s, end_s = fields
        try:
            start, end = int(float(start_s)), int(float(end_s))
        except ValueError:
            raise DataError(
                f"{source}:{number}: start/end must be integer seconds, not {start_s!r}/{end_s!r}"
            ) from None
        if not category or not video_id:
            raise DataError(f"{source}:{number}: empty category or video id")
        if not 0 <= start < end:
            raise DataError(f"{source}:{number}: event [{start}, {end}) is empty or negative")
        entries.append(AVEEntry(category, video_id, quality, start, end))
    return entries


def read_ave_annotations(path: str | Path) -> list[AVEEntry]:
    """Entries of one AVE text file, in file order (the row order of the released HDF5 files)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read AVE annotations ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    return parse_ave_lines(text.splitlines(), str(path))


def write_ave_annotations(path: str | Path, entries: Sequence[AVEEntry], header: bool = True) -> Path:
    path = Path(path)
    lines = ["&".join(HEADER)] if header else []
    lines += [f"{e.category}&{e.video_id}&{e.quality}&{e.start}&{e.end}" for e in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ave_classes(entries: Sequence[AVEEntry]) -> list[str]:
    """Foreground class names by label id: the release's order when every category is an AVE one, else the order
    of first appearance (generated or foreign sets)."""
    seen = list(dict.fromkeys(e.category for e in entries))
    if set(seen) <= set(AVE_CATEGORIES):
        return list(AVE_CATEGORIES)
    return seen


def segment_labels(entry: AVEEntry, class_id: int, background: int, num_segments: int = NUM_SEGMENTS) -> np.ndarray:
    """(num_segments,) int64: the class inside [start, end), background elsewhere."""
    labels = np.full(num_segments, background, dtype=np.int64)
    labels[max(entry.start, 0) : min(entry.end, num_segments)] = class_id
    return labels


def ave_to_annotations(
    entries: Sequence[AVEEntry],
    subsets: dict[str, str] | None = None,
    classes: Sequence[str] | None = None,
    duration: float = NUM_SEGMENTS * SEGMENT_S,
) -> dict:
    """AVE entries -> avdet's annotation dict (UnAV-100 JSON layout), one event per video in whole seconds.

    subsets: video id -> "train" / "validation" / "test" (videos not listed are left out when given).
    A repeated video id keeps its first line (a warning).
    """
    classes = list(classes) if classes is not None else ave_classes(entries)
    index = {name: i for i, name in enumerate(classes)}
    database: dict[str, dict] = {}
    for e in entries:
        if e.category not in index:
            raise DataError(f"video {e.video_id}: category {e.category!r} is not in the class list")
        if subsets is not None and e.video_id not in subsets:
            continue
        if e.video_id in database:
            log.warning("AVE video %s listed twice; keeping its first line", e.video_id)
            continue
        end = min(float(e.end), duration)
        database[e.video_id] = {
            "duration": float(duration),
            "subset": subsets[e.video_id] if subsets is not None else "train",
            "annotations": [{"segment": [float(e.start), end], "label": e.category, "label_id": index[e.category]}],
        }
    return {"version": "ave", "database": database}


def load_ave_annotations(root: str | Path, classes: Sequence[str] | None = None) -> tuple[dict, list[str]]:
    """The annotation dict of an AVE folder (`Annotations.txt` + the three split files) and the class names
    (`classes` when given, e.g. from a class-list TSV, else `ave_classes`)."""
    root = Path(root)
    entries = read_ave_annotations(root / "Annotations.txt")
    known = {e.video_id for e in entries}
    subsets: dict[str, str] = {}
    for subset, name in SPLIT_FILES.items():
        for e in read_ave_annotations(root / name):
            if e.video_id not in known:
                raise DataError(f"{root / name}: video {e.video_id} is not in Annotations.txt")
            subsets.setdefault(e.video_id, subset)
    classes = list(classes) if classes is not None else ave_classes(entries)
    return ave_to_annotations(entries, subsets, classes), classes


def grid_segment_labels(
    annotations: Sequence[dict], num_rows: int, background: int, segment_s: float = SEGMENT_S
) -> np.ndarray:
    """(num_rows,) int64 labels of consecutive `segment_s` segments from avdet annotations ({"segment": [s, e],
    "label_id": k}): a segment takes the class of the event covering its centre (the later event where two do),
    background otherwise. This is how store-extracted 1 s rows get the AVE labels back."""
    labels = np.full(num_rows, background, dtype=np.int64)
    centres = (np.arange(num_rows) + 0.5) * segment_s
    for ann in annotations:
        start, end = float(ann["segment"][0]), float(ann["segment"][1])
        labels[(centres >= start) & (centres < end)] = int(ann["label_id"])
    return labels


def merge_segment_runs(
    labels: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    background: int,
    segment_s: float = SEGMENT_S,
) -> list[Event]:
    """Segment predictions -> events: each run of equal non-background labels becomes one event spanning its
    segments, scored by the mean probability of its class over the run.

    labels: (T,) predicted labels; scores: (T, K) per-segment probabilities (softmax of the logits)."""
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    prob = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    events: list[Event] = []
    start = 0
    for t in range(1, len(lab) + 1):
        if t < len(lab) and lab[t] == lab[start]:
            continue
        k = int(lab[start])
        if k != background:
            score = float(prob[start:t, k].mean())
            events.append(Event(class_names[k], k, start * segment_s, t * segment_s, score))
        start = t
    return events


# ---------------------------------------------------------------------------------------------- HDF5 files


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("reading the AVE HDF5 features needs h5py: pip install 'avdet[hdf5]'") from None
    return h5py


def _h5_dataset(path: str | Path, key: str, take: Callable[[Any], Any]) -> Any:
    """`take(dataset)` of dataset `key` of an HDF5 file; a missing file or key is a one-line `DataError`."""
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: AVE feature file not found")
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DataError(f"{path}: no dataset {key!r} (found {', '.join(f.keys()) or 'none'})")
            return take(f[key])
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None


def read_h5_array(path: str | Path, key: str = H5_KEY) -> np.ndarray:
    """The whole dataset `key` of an HDF5 file as an array."""
    return _h5_dataset(path, key, lambda d: d[()])


def write_h5_array(path: str | Path, array: np.ndarray, key: str = H5_KEY) -> Path:
    """Write one dataset under a temporary name and rename it: an interrupted write leaves no half file."""
    h5py = _h5py()
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(key, data=array)
    return path


def _h5_shape(path: Path, key: str) -> tuple[int, ...]:
    return _h5_dataset(path, key, lambda d: tuple(d.shape))


def video_level(labels: np.ndarray) -> np.ndarray:
    """(N, K) or (N, T, K) label files -> (N, K) video-level multi-hot (max over segments)."""
    labels = np.asarray(labels, dtype=np.float32)
    return labels.max(axis=1) if labels.ndim == 3 else labels


class H5Rows:
    """Row-wise lazy access to one HDF5 dataset (the visual file of AVE is several GB); opened on first use, so
    every DataLoader worker opens its own handle."""

    def __init__(self, path: Path, key: str = H5_KEY) -> None:
        self.path, self.key = path, key
        self.shape = _h5_shape(path, key)
        self._data = None

    def __getitem__(self, index: int) -> np.ndarray:
        if self._data is None:
            self._data = _h5py().File(self.path, "r")[self.key]
        return np.asarray(self._data[int(index)], dtype=np.float32)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}


class AVEFeatureDataset(Dataset):
    """One split of the released AVE features.

    Items: {"audio" (T, 128), "visual" (T, 7, 7, 512) (the models reduce the map), "mask" (T,), "video"
    (K,) video-level labels, and "segment" (T,) int64 labels unless this is weak-setting training}.
    `setting="weak"` on the train split reads the video-level labels of `mil_labels.h5` (never `labels.h5`) and
    appends the background-only noisy videos when their files exist.
    """

    def __init__(self, root: str | Path, split: str, setting: str = "full") -> None:
        if split not in ORDER_FILES:
            raise DataError(f"AVE split must be one of {', '.join(ORDER_FILES)}, not {split!r}")
        root = Path(root)
        self.root, self.split, self.setting = root, split, setting
        self.weak_train = setting == "weak" and split == "train"
        self.visual = H5Rows(root / VISUAL_FILE)
        self.audio = H5Rows(root / AUDIO_FILE)
        n = self.visual.shape[0]
        if self.audio.shape[0] != n or self.visual.shape[1] != self.audio.shape[1]:
            raise DataError(f"{root}: visual {self.visual.shape} and audio {self.audio.shape} disagree")
        self.order = read_h5_array(root / ORDER_FILES[split], ORDER_KEY).astype(np.int64).reshape(-1)
        if self.order.size and (self.order.min() < 0 or self.order.max() >= n):
            raise DataError(f"{root / ORDER_FILES[split]}: row indices must lie in 0..{n - 1}")
        self.segments: np.ndarray | None = None
        if self.weak_train:
            self.video_labels = video_level(read_h5_array(root / MIL_LABELS_FILE))
            if self.video_labels.shape[0] != n:
                raise DataError(f"{root / MIL_LABELS_FILE}: {self.video_labels.shape[0]} rows for {n} videos")
        else:
            onehot = read_h5_array(root / LABELS_FILE).astype(np.float32)
            if onehot.ndim != 3 or onehot.shape[:2] != self.audio.shape[:2]:
                raise DataError(f"{root / LABELS_FILE}: shape {onehot.shape}, expected ({n}, T, K)")
            self.segments = onehot.argmax(axis=-1).astype(np.int64)  # (N, T)
            seg = torch.from_numpy(self.segments)
            self.video_labels = video_labels_from_segments(seg, onehot.shape[-1]).numpy()
        self.num_labels = int(self.video_labels.shape[-1])
        self.noisy: tuple[H5Rows, H5Rows, np.ndarray] | None = None
        if self.weak_train:
            self.noisy = self._noisy(root)

    def _noisy(self, root: Path) -> tuple[H5Rows, H5Rows, np.ndarray] | None:
        visual = next((root / f for f in NOISY_VISUAL_FILES if (root / f).is_file()), None)
        if visual is None or not (root / NOISY_AUDIO_FILE).is_file() or not (root / NOISY_LABELS_FILE).is_file():
            log.info("%s: no background-only (noisy) videos found; weak training uses the clean videos only", root)
            return None
        v, a = H5Rows(visual), H5Rows(root / NOISY_AUDIO_FILE)
        labels = video_level(read_h5_array(root / NOISY_LABELS_FILE))
        if not v.shape[0] == a.shape[0] == labels.shape[0] or labels.shape[-1] != self.num_labels:
            raise DataError(f"{root}: noisy files disagree: visual {v.shape}, audio {a.shape}, labels {labels.shape}")
        return v, a, labels

    def __len__(self) -> int:
        return len(self.order) + (self.noisy[0].shape[0] if self.noisy else 0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < len(self.order):
            row = int(self.order[i])
            visual, audio, video = self.visual[row], self.audio[row], self.video_labels[row]
        else:
            assert self.noisy is not None
            j = i - len(self.order)
            visual, audio, video = self.noisy[0][j], self.noisy[1][j], self.noisy[2][j]
            row = -1
        item = {
            "audio": torch.from_numpy(audio),
            "visual": torch.from_numpy(np.ascontiguousarray(visual)),
            "mask": torch.ones(audio.shape[0], dtype=torch.bool),
            "video": torch.from_numpy(np.asarray(video, dtype=np.float32)),
            "row": torch.tensor(row),
        }
        if not self.weak_train:
            assert self.segments is not None
            item["segment"] = torch.from_numpy(self.segments[row])
        return item


# ---------------------------------------------------------------------------------------------- metrics


# ---------------------------------------------------------------------------------------------- generated sets
