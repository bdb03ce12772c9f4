"""Synthetic features in the AVE release's exact HDF5 layout (`avdet make-sample --ave --features`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from avdet.pipeline.data.ave import (
    AUDIO_FILE,
    LABELS_FILE,
    MIL_LABELS_FILE,
    NOISY_AUDIO_FILE,
    NOISY_LABELS_FILE,
    NOISY_VISUAL_FILES,
    NUM_SEGMENTS,
    ORDER_FILES,
    ORDER_KEY,
    SPLIT_FILES,
    VISUAL_FILE,
    AVEEntry,
    write_ave_annotations,
    write_h5_array,
)


def write_synthetic_ave(
    root: str | Path,
    *,
    num_videos: int = 60,
    num_classes: int = 4,
    num_noisy: int = 10,
    visual_shape: tuple[int, int, int] = (7, 7, 512),
    audio_dim: int = 128,
    num_segments: int = NUM_SEGMENTS,
    noise: float = 1.0,
    seed: int = 0,
    splits: tuple[float, float] = (0.6, 0.2),
) -> Path:
    """Write an AVE-style set in the release's file layout with class-dependent synthetic features.

    Every video holds one event class on a random span of >= 2 segments, background elsewhere. In event segments
    the audio carries the class's audio prototype and one spatial location of the visual map the class's visual
    prototype (so audio-guided attention has something to find); all features get Gaussian noise. The text
    files (with a header, and one video id starting with `-`), labels, video-level labels, split orders and
    background-only noisy videos are written as the release names them.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w, cv = visual_shape
    k = num_classes + 1
    proto_a = rng.normal(0.0, 1.0, (num_classes, audio_dim)) * 1.5
    proto_v = rng.normal(0.0, 1.0, (num_classes, cv)) * 1.5
    names = [f"class {i}, synthetic" for i in range(num_classes)]

    def features(count: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        audio = rng.normal(0.0, noise, (count, num_segments, audio_dim))
        visual = rng.normal(0.0, noise, (count, num_segments, h * w, cv))
        for i in range(count):
            where = rng.integers(0, h * w)
            for t in range(num_segments):
                if labels[i, t] < num_classes:
                    audio[i, t] += proto_a[labels[i, t]]
                    visual[i, t, where] += proto_v[labels[i, t]]
        visual = visual.reshape(count, num_segments, h, w, cv)  # (N, T, H*W, C) -> (N, T, H, W, C)
        return visual.astype(np.float32), audio.astype(np.float32)

    entries: list[AVEEntry] = []
    seg_labels = np.full((num_videos, num_segments), num_classes, dtype=np.int64)
    for i in range(num_videos):
        cls = i % num_classes
        length = int(rng.integers(2, num_segments + 1))
        start = int(rng.integers(0, num_segments - length + 1))
        seg_labels[i, start : start + length] = cls
        vid = f"-vid{i:04d}" if i == 0 else f"vid{i:04d}"
        entries.append(AVEEntry(names[cls], vid, "good", start, start + length))
    visual, audio = features(num_videos, seg_labels)
    onehot = np.eye(k, dtype=np.float32)[seg_labels]  # (N, T, K)
    write_h5_array(root / VISUAL_FILE, visual)
    write_h5_array(root / AUDIO_FILE, audio)
    write_h5_array(root / LABELS_FILE, onehot)
    mil = onehot[:, :, :num_classes].max(axis=1)
    write_h5_array(root / MIL_LABELS_FILE, np.concatenate([mil, np.zeros((num_videos, 1), np.float32)], axis=1))

    perm = rng.permutation(num_videos)
    n_train = int(math.floor(splits[0] * num_videos))
    n_val = int(math.floor(splits[1] * num_videos))
    parts = {"train": perm[:n_train], "validation": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    write_ave_annotations(root / "Annotations.txt", entries, header=True)
    for split, rows in parts.items():
        write_h5_array(root / ORDER_FILES[split], np.sort(rows).astype(np.int64), ORDER_KEY)
        write_ave_annotations(root / SPLIT_FILES[split], [entries[r] for r in sorted(rows)], header=False)

    if num_noisy:
        bg = np.full((num_noisy, num_segments), num_classes, dtype=np.int64)
        nv, na = features(num_noisy, bg)
        write_h5_array(root / NOISY_VISUAL_FILES[0], nv)
        write_h5_array(root / NOISY_AUDIO_FILE, na)
        write_h5_array(root / NOISY_LABELS_FILE, np.eye(k, dtype=np.float32)[np.full(num_noisy, num_classes)])
    return root
