"""Segment-task losses and predictions (models/segment_losses.py) and metrics (pipeline/metrics/accuracy.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avdet.models.base import DetectorOutput
from avdet.models.segment_losses import (
    SegmentLossConfig,
    SegmentTargets,
    fee_loss,
    multiclass_focal_loss,
    segment_logits,
    segment_loss,
    segment_predictions,
    video_class,
    wccl_loss,
)
from avdet.pipeline.data.ave import video_labels_from_segments
from avdet.pipeline.data.segments import collate_segments
from avdet.pipeline.metrics.accuracy import confusion_matrix, per_class_accuracy, segment_accuracy
from avdet.pipeline.tasks.segment import batch_targets


def _output(logits: torch.Tensor, mask: torch.Tensor | None = None, **aux) -> DetectorOutput:
    mask = torch.ones(logits.shape[:2], dtype=torch.bool) if mask is None else mask
    return DetectorOutput(cls_logits=[logits], offsets=[], masks=[mask], strides=[1], aux=dict(aux))


def test_accuracy_hand_cases() -> None:
    target = np.array([[0, 0, 2, 2], [1, 2, 2, 2]])
    pred = np.array([[0, 1, 2, 2], [1, 2, 0, 0]])
    assert segment_accuracy(pred, target) == pytest.approx(100 * 5 / 8)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    assert segment_accuracy(pred, target, mask) == pytest.approx(100 * 5 / 6)
    # A -1 target (padding) never counts.
    assert segment_accuracy([3, 1], [-1, 1]) == 100.0
    with pytest.raises(ValueError):
        segment_accuracy([1, 2], [1, 2, 3])


def test_accuracy_matches_the_reference_argmax_loop() -> None:
    """AVE-ECCV18's val(): per segment argmax of the scores vs argmax of the one-hot label, accuracy_score."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 10, 29))
    onehot = np.eye(29)[rng.integers(0, 29, size=(7, 10))]
    correct = total = 0
    for i in range(7):
        for j in range(10):
            correct += int(np.argmax(scores[i, j]) == np.argmax(onehot[i, j]))
            total += 1
    reference = correct / total
    ours = segment_accuracy(segment_predictions(_output(torch.from_numpy(scores))), onehot.argmax(-1))
    assert ours == pytest.approx(100 * reference)


def test_confusion_and_per_class() -> None:
    matrix = confusion_matrix([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 1], 4)
    assert matrix[0, 0] == 1 and matrix[1, 1] == 1 and matrix[1, 2] == 1 and matrix[2, 1] == 1 and matrix[2, 2] == 2
    acc = per_class_accuracy(matrix)
    assert acc[:3] == pytest.approx([100.0, 50.0, 200 / 3])
    assert math.isnan(acc[3])


def test_video_labels() -> None:
    seg = torch.tensor([[3, 1, 1, -1], [3, 3, 3, 3], [0, 2, 3, 3]])
    video = video_labels_from_segments(seg, 4)
    assert video.tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]
    assert video_class(video).tolist() == [1, 3, 0]
    # the real path: AVE's one-hot labels -> the dataset's argmax -> a padded batch -> the loss targets
    segment = torch.eye(4)[torch.tensor([3, 2, 2])].argmax(dim=-1)  # (T, C + 1) -> (T,)
    items = [
        {
            "mask": torch.ones(n, dtype=torch.bool),
            "segment": segment[:n],
            "video": video_labels_from_segments(segment[None, :n], 4)[0],
        }
        for n in (3, 2)
    ]
    full = batch_targets(collate_segments(items))
    assert full.segment.tolist() == [[3, 2, 2], [3, 2, -1]]
    assert full.video.tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]
    weak = batch_targets(collate_segments([{k: v for k, v in it.items() if k != "segment"} for it in items]))
    assert weak.segment is None


def test_multiclass_focal_hand_case() -> None:
    logits = torch.zeros(1, 2, 3)
    labels = torch.tensor([[1, -1]])  # the second segment is padding
    # p = 0.5 everywhere: positive slot alpha * 0.5^2 * ln 2, two negatives (1 - alpha) * 0.5^2 * ln 2 each.
    expected = math.log(2) * 0.25 * (0.25 + 2 * 0.75)
    assert float(multiclass_focal_loss(logits, labels, 0.25, 2.0)) == pytest.approx(expected, rel=1e-5)


def test_fee_loss_skips_background_videos() -> None:
    logits = torch.tensor([[2.0, 0.0], [5.0, -5.0]])
    video = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # video 2 is background only
    expected = -torch.log_softmax(logits[0], 0)[1]
    assert float(fee_loss(logits, video)) == pytest.approx(float(expected))
    assert float(fee_loss(logits[1:], video[1:])) == 0.0


def test_wccl_hand_computed() -> None:
    """Two videos (labels 0, 1), two views each, orthonormal embeddings, delta = 1.

    Anchor e1 sees e2 (s = 0), e1 (s = 1, positive), e2 (s = 0): loss = -log(e / (e + 2)) for every anchor.
    """
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    fusion = torch.stack([e1, e2])
    visual = torch.stack([e1, e2]) * 3.0  # scale must not matter (embeddings are L2-normalised)
    loss = wccl_loss([fusion, visual], torch.tensor([0, 1]), temperature=1.0)
    assert float(loss) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)


def test_wccl_matches_the_equation_loop() -> None:
    torch.manual_seed(0)
    views = [torch.randn(5, 4), torch.randn(5, 4)]
    labels = torch.tensor([0, 1, 0, 2, 1])
    delta = 0.3
    z = torch.nn.functional.normalize(torch.cat(views), dim=1)
    y = labels.repeat(2)
    terms = []
    for i in range(10):
        others = [a for a in range(10) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        denominator = sum(torch.exp(z[i] @ z[a] / delta) for a in others)
        terms.append(-torch.log(sum(torch.exp(z[i] @ z[p] / delta) / denominator for p in positives) / len(positives)))
    assert float(wccl_loss(views, labels, delta)) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)


def test_multi_level_segment_logits() -> None:
    """LoCo-AVEL: level logits repeated by their stride and averaged over the levels that cover a segment."""
    level0 = torch.zeros(1, 4, 2)
    level1 = torch.tensor([[[2.0, 0.0], [4.0, 0.0]]])
    out = DetectorOutput(
        cls_logits=[level0, level1],
        offsets=[],
        masks=[torch.ones(1, 4, dtype=torch.bool), torch.tensor([[True, False]])],
        strides=[1, 2],
    )
    merged = segment_logits(out, 3)
    assert merged[0, :, 0].tolist() == [1.0, 1.0, 0.0]  # segment 2 is covered by an invalid level-1 point


def test_segment_loss_settings() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, requires_grad=True)
    seg = torch.tensor([[0, 0, 2, 2], [1, 2, 2, 2]])
    video = video_labels_from_segments(seg, 3)
    full_cfg = SegmentLossConfig()
    total, parts = segment_loss(_output(logits), SegmentTargets(video, seg), full_cfg)
    assert set(parts) == {"focal", "total"} and total.requires_grad
    weak_cfg = SegmentLossConfig(setting="weak")
    with pytest.raises(ValueError, match="segment labels"):
        segment_loss(_output(logits), SegmentTargets(video, seg), weak_cfg)
    with pytest.raises(ValueError, match="needs segment labels"):
        segment_loss(_output(logits), SegmentTargets(video), full_cfg)
    weak, _ = segment_loss(_output(logits), SegmentTargets(video), weak_cfg)
    weak.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_ccln_terms_weighted() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3)
    seg = torch.tensor([[0, 0, 2, 2], [1, 2, 2, 2]])
    targets = SegmentTargets(video_labels_from_segments(seg, 3), seg)
    fee = torch.randn(2, 2)
    views = [torch.randn(2, 4), torch.randn(2, 4)]
    cfg = SegmentLossConfig(fee_weight=2.0, wccl_weight=3.0)
    total, parts = segment_loss(_output(logits, fee=fee, contrast=views), targets, cfg)
    assert float(total) == pytest.approx(float(parts["focal"] + 2 * parts["fee"] + 3 * parts["wccl"]), rel=1e-6)
    with pytest.raises(ValueError):
        SegmentLossConfig(setting="semi")
