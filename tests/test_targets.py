"""Point assignment against hand-computed cases and a loop transcription of the reference rules."""

from __future__ import annotations

import math

import pytest
import torch

from avdet.models.targets import assign_batch, assign_targets, default_regression_ranges, make_points


def test_make_points_layout() -> None:
    pts = make_points([4, 2], [1, 2], [(0.0, 4.0), (4.0, math.inf)])
    expected = torch.tensor(
        [
            [0, 0, 4, 1],
            [1, 0, 4, 1],
            [2, 0, 4, 1],
            [3, 0, 4, 1],
            [0, 4, math.inf, 2],
            [2, 4, math.inf, 2],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(pts, expected)


def test_make_points_rejects_mismatched_levels() -> None:
    with pytest.raises(ValueError):
        make_points([4, 2], [1, 2], [(0.0, 4.0)])


def test_default_ranges() -> None:
    assert default_regression_ranges(6)[0] == (0.0, 4.0)
    assert default_regression_ranges(6)[-1] == (64.0, math.inf)
    assert default_regression_ranges(3) == ((0.0, 4.0), (4.0, 8.0), (8.0, math.inf))


def test_overlapping_events_of_different_classes_and_ranges_per_level() -> None:
    # level 0: points 0..7 (stride 1, range [0, 4]); level 1: points 0, 2, 4, 6 (stride 2, range [4, inf])
    pts = make_points([8, 4], [1, 2], [(0.0, 4.0), (4.0, math.inf)])
    segs = torch.tensor([[1.5, 4.5], [2.0, 7.0]])
    labels = torch.tensor([0, 2])
    cls, reg = assign_targets(pts, segs, labels, num_classes=3)
    assert cls.shape == (12, 3) and reg.shape == (12, 3, 2)

    exp_cls = torch.zeros(12, 3)
    exp_reg = torch.zeros(12, 3, 2)
    # event 0 (class 0): points 2, 3, 4 strictly inside, max distance 2.5 / 1.5 / 2.5 <= 4
    for p, lr in {2: (0.5, 2.5), 3: (1.5, 1.5), 4: (2.5, 0.5)}.items():
        exp_cls[p, 0] = 1
        exp_reg[p, 0] = torch.tensor(lr)
    # event 1 (class 2): point 2 is on its boundary (not strictly inside); point 3 reaches 4 (inclusive bound)
    for p, lr in {3: (1.0, 4.0), 4: (2.0, 3.0), 5: (3.0, 2.0), 6: (4.0, 1.0)}.items():
        exp_cls[p, 2] = 1
        exp_reg[p, 2] = torch.tensor(lr)
    # level 1: only grid 6 reaches 4 for event 1 -> (4, 1) / stride 2; event 0 reaches at most 2.5 there
    exp_cls[8 + 3, 2] = 1
    exp_reg[8 + 3, 2] = torch.tensor([2.0, 0.5])
    assert torch.equal(cls, exp_cls)
    assert torch.allclose(reg, exp_reg)


def test_same_class_events_last_listed_wins() -> None:
    pts = make_points([5], [1], [(0.0, math.inf)])
    segs = torch.tensor([[0.5, 3.5], [1.5, 3.0]])
    labels = torch.tensor([1, 1])
    cls, reg = assign_targets(pts, segs, labels, num_classes=2)
    assert cls[:, 1].tolist() == [0, 1, 1, 1, 0]
    assert cls[:, 0].sum() == 0
    assert reg[1, 1].tolist() == [0.5, 2.5]  # only event 0 holds point 1
    assert reg[2, 1].tolist() == [0.5, 1.0]  # both hold point 2: the later event gives the target
    assert reg[3, 1].tolist() == [2.5, 0.5]  # point 3 is event 1's end: not strictly inside it
    _, reg_swapped = assign_targets(pts, segs.flip(0), labels, num_classes=2)
    assert reg_swapped[2, 1].tolist() == [1.5, 1.5]


def test_no_events_gives_empty_targets() -> None:
    pts = make_points([4], [1], [(0.0, math.inf)])
    cls, reg = assign_targets(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), num_classes=3)
    assert cls.shape == (4, 3) and reg.shape == (4, 3, 2)
    assert cls.sum() == 0 and reg.sum() == 0


def test_label_out_of_range_is_an_error() -> None:
    pts = make_points([4], [1], [(0.0, math.inf)])
    with pytest.raises(ValueError):
        assign_targets(pts, torch.tensor([[0.5, 2.5]]), torch.tensor([3]), num_classes=3)


def _reference_loop(pts: torch.Tensor, segs: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """The UnAV rules written out point by point, event by event (later events overwrite earlier ones)."""
    cls = torch.zeros(pts.shape[0], num_classes)
    reg = torch.zeros(pts.shape[0], num_classes, 2)
    for i, (p, low, high, stride) in enumerate(pts.tolist()):
        for (s, e), c in zip(segs.tolist(), labels.tolist(), strict=True):
            left, right = p - s, e - p
            if min(left, right) > 0 and low <= max(left, right) <= high:
                cls[i, c] = 1
                reg[i, c] = torch.tensor([left / stride, right / stride])
    return cls, reg


def test_matches_reference_rules_on_random_events() -> None:
    gen = torch.Generator().manual_seed(0)
    pts = make_points([64, 32, 16, 8], [1, 2, 4, 8], default_regression_ranges(4))
    for _ in range(5):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        start = torch.rand(n, generator=gen) * 60 - 2
        length = torch.rand(n, generator=gen) * 40 + 0.3
        segs = torch.stack([start, start + length], dim=1)
        labels = torch.randint(0, 4, (n,), generator=gen)
        cls, reg = assign_targets(pts, segs, labels, num_classes=4)
        exp_cls, exp_reg = _reference_loop(pts, segs, labels, 4)
        assert torch.equal(cls, exp_cls)
        assert torch.allclose(reg, exp_reg, atol=1e-5)


def test_assign_batch_stacks_videos() -> None:
    pts = make_points([8], [1], [(0.0, math.inf)])
    cls, reg = assign_batch(
        pts, [torch.tensor([[1.0, 3.0]]), torch.zeros(0, 2)], [torch.tensor([0]), torch.zeros(0)], 2
    )
    assert cls.shape == (2, 8, 2) and reg.shape == (2, 8, 2, 2)
    assert cls[0, 2, 0] == 1 and cls[1].sum() == 0
