from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from avdet.errors import DataError
from avdet.extractors.base import Features, grid_times
from avdet.pipeline.data.annotations import read_classes
from avdet.pipeline.data.dense import collate, random_crop, seconds_to_grid
from avdet.pipeline.data.sources import align_modalities, grid_of
from avdet.pipeline.types import TimeGrid


def feats(rows: int, dim: int = 3) -> Features:
    return Features(np.ones((rows, dim), np.float32), grid_times(rows, 0.96, 0.32))


def test_grid_of_unav_rows_matches_reference_time_mapping() -> None:
    grid = grid_of(grid_times(10, 0.96, 0.32))
    assert grid.offset == pytest.approx(0.48) and grid.step == pytest.approx(0.32)
    # The reference: grid = (t * fps - num_frames / 2) / feat_stride with fps 25, 24 frames, stride 8.
    t = np.array([[1.0, 7.5]])
    np.testing.assert_allclose(seconds_to_grid(t, grid), (t * 25 - 12) / 8)


def test_align_modalities_warns_on_one_row_and_refuses_more(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        v, a = align_modalities("vid", feats(10), feats(9))
    assert len(v) == len(a) == 9 and "differ by one" in caplog.text
    with pytest.raises(DataError, match="vid: visual has 10 feature rows but audio has 8"):
        align_modalities("vid", feats(10), feats(8))


def test_random_crop_keeps_half_an_event_and_is_seeded() -> None:
    segments = np.array([[10.0, 30.0], [200.0, 260.0]])
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        start, end, kept = random_crop(300, segments, 224, (0.9, 1.0), 0.5, gen)
        assert end - start == 224 and len(kept) >= 1
        for k in kept:
            inter = min(end, segments[k, 1]) - max(start, segments[k, 0])
            assert inter / (segments[k, 1] - segments[k, 0]) >= 0.5
    a = random_crop(300, segments, 224, (0.9, 1.0), 0.5, torch.Generator().manual_seed(3))
    b = random_crop(300, segments, 224, (0.9, 1.0), 0.5, torch.Generator().manual_seed(3))
    assert a[:2] == b[:2]


def test_short_sequences_are_cropped_to_90_to_100_percent() -> None:
    lengths = set()
    for seed in range(30):
        start, end, _ = random_crop(
            100, np.array([[0.0, 99.0]]), 224, (0.9, 1.0), 0.5, torch.Generator().manual_seed(seed)
        )
        lengths.add(end - start)
        assert start >= 0 and end <= 100
    assert min(lengths) >= 90 and max(lengths) <= 100 and len(lengths) > 3


def test_collate_pads_with_a_mask() -> None:
    items = [
        {
            "video_id": f"v{n}",
            "duration": n * 0.32,
            "grid": TimeGrid(0.48, 0.32),
            "audio": torch.ones(n, 2),
            "visual": torch.ones(n, 3),
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
        }
        for n in (5, 9)
    ]
    batch = collate(items, pad_to=12, multiple=8)
    assert batch.visual.shape == (2, 16, 3) and batch.audio.shape == (2, 16, 2)
    assert batch.mask.sum(1).tolist() == [5, 9]
    assert batch.visual[0, 5:].abs().sum() == 0


def test_read_classes_from_annotations_and_tsv(tmp_path) -> None:
    ann = {"database": {"a": {"annotations": [{"label": "dog", "label_id": 1}, {"label": "cat", "label_id": 0}]}}}
    assert read_classes(ann) == ["cat", "dog"]
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("label_id\tlabel\tnum_events\n0\tcat\t3\n1\tdog\t4\n")
    assert read_classes(ann, tsv) == ["cat", "dog"]
