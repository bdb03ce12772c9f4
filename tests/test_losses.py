"""Focal, DIoU / GIoU, LCF and the assembled detection loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from avdet.models.base import DetectorOutput
from avdet.models.losses import (
    LossConfig,
    PositiveNormaliser,
    detection_loss,
    diou_loss_1d,
    giou_loss_1d,
    lcf_loss,
    sigmoid_focal_loss,
    soft_cross_entropy,
)

LN2 = math.log(2.0)


def test_focal_hand_values() -> None:
    logits = torch.tensor([0.0, 0.0, 2.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    loss = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    # p = 0.5: alpha_t * (1 - p_t)^2 * ln 2; logit 2 as a negative: p = 0.880797, -ln(1 - p) = 2.126928
    expected = torch.tensor([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2, 0.75 * 0.880797**2 * 2.126928])
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.isclose(sigmoid_focal_loss(logits, targets, reduction="sum"), expected.sum(), atol=1e-5)
    # alpha < 0 disables the balance, gamma 0 gives plain BCE
    assert torch.isclose(sigmoid_focal_loss(logits[:1], targets[:1], alpha=-1, gamma=0.0)[0], torch.tensor(LN2))


def test_diou_and_giou_hand_values() -> None:
    pred = torch.tensor([[1.0, 3.0], [0.0, 1.0], [2.0, 2.0]])
    target = torch.tensor([[2.0, 2.0], [2.0, 0.0], [2.0, 2.0]])
    # case 1: inter 3, union 5, enclosing 5, centre gap 1 -> GIoU 0.4, DIoU 0.4 + (1/5)^2
    # case 2: inter 0, union 3, enclosing 3, centre gap 1.5 -> GIoU 1, DIoU 1 + 0.25; case 3: identical -> 0
    assert torch.allclose(giou_loss_1d(pred, target), torch.tensor([0.4, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(diou_loss_1d(pred, target), torch.tensor([0.44, 1.25, 0.0]), atol=1e-6)


def test_positive_normaliser_ema_and_state() -> None:
    norm = PositiveNormaliser()
    assert norm.value == 250.0
    assert norm.update(10) == pytest.approx(226.0)
    assert norm.update(0) == pytest.approx(0.9 * 226.0 + 0.1)  # at least one positive
    resumed = PositiveNormaliser()
    resumed.load_state_dict(norm.state_dict())
    assert resumed.update(7) == pytest.approx(norm.update(7))
    assert all(isinstance(v, float) for v in norm.state_dict().values())


def test_soft_cross_entropy_and_lcf_hand_values() -> None:
    emb = torch.eye(2)
    logits = emb @ emb.T
    # one-hot rows: -log(e / (e + 1)); uniform rows (normalised from ones): log(1 + e) - 0.5
    assert torch.isclose(soft_cross_entropy(logits, torch.eye(2)), torch.tensor(math.log1p(math.exp(-1))))
    assert torch.isclose(soft_cross_entropy(logits, torch.ones(2, 2)), torch.tensor(math.log1p(math.e) - 0.5))
    assert torch.isclose(lcf_loss(emb, emb, torch.tensor(1.0), torch.eye(2)), torch.tensor(math.log1p(math.exp(-1))))
    # asymmetric targets: the two directions differ and the loss is their mean
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    both = lcf_loss(emb, emb, torch.tensor(1.0), t)
    assert torch.isclose(both, 0.5 * (soft_cross_entropy(logits, t) + soft_cross_entropy(logits.T, t.T)))


def _output(mask0: torch.Tensor, mask1: torch.Tensor, aux: dict | None = None) -> DetectorOutput:
    """Two levels (8 and 4 points, strides 1 and 2), 3 classes, zero logits, unit offsets."""
    logits = [torch.zeros(1, 8, 3, requires_grad=True), torch.zeros(1, 4, 3, requires_grad=True)]
    offsets = [torch.ones(1, 8, 3, 2, requires_grad=True), torch.ones(1, 4, 3, 2, requires_grad=True)]
    return DetectorOutput(logits, offsets, [mask0, mask1], [1, 2], aux or {})


# positive slots of events (1.5, 4.5) class 0 and (2, 7) class 2, ranges [0, 4], [4, inf] (see test_targets)
POSITIVE_TARGETS = [
    (0.5, 2.5),
    (1.5, 1.5),
    (1.0, 4.0),
    (2.5, 0.5),
    (2.0, 3.0),
    (3.0, 2.0),
    (4.0, 1.0),
    (2.0, 0.5),
]


def test_detection_loss_assembly() -> None:
    cfg = LossConfig(regression_ranges=((0.0, 4.0), (4.0, math.inf)))
    out = _output(torch.ones(1, 8, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    norm = PositiveNormaliser()
    segs, labels = [torch.tensor([[1.5, 4.5], [2.0, 7.0]])], [torch.tensor([0, 2])]
    losses = detection_loss(out, segs, labels, 3, norm, cfg)
    assert set(losses) == {"cls", "reg", "total"}
    # 6 positive points (5 on level 0, 1 on level 1) -> normaliser 0.9 * 250 + 0.1 * 6
    divisor = 0.9 * 250 + 0.6
    assert norm.value == pytest.approx(divisor)
    # 8 positive and 28 negative slots, all logits 0
    expected_cls = (8 * 0.25 * 0.25 * LN2 + 28 * 0.75 * 0.25 * LN2) / divisor
    assert losses["cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    expected_reg = diou_loss_1d(torch.ones(8, 2), torch.tensor(POSITIVE_TARGETS)).sum() / divisor
    assert losses["reg"].item() == pytest.approx(expected_reg.item(), rel=1e-5)
    assert losses["total"].item() == pytest.approx(expected_cls + expected_reg.item(), rel=1e-5)
    losses["total"].backward()
    assert out.offsets[0].grad is not None and out.offsets[0].grad.abs().sum() > 0

    giou = detection_loss(out, segs, labels, 3, PositiveNormaliser(), LossConfig(reg_loss="giou", **_ranges()))
    expected_giou = giou_loss_1d(torch.ones(8, 2), torch.tensor(POSITIVE_TARGETS)).sum() / divisor
    assert giou["reg"].item() == pytest.approx(expected_giou.item(), rel=1e-5)


def _ranges() -> dict:
    return {"regression_ranges": ((0.0, 4.0), (4.0, math.inf))}


def test_detection_loss_ignores_padding() -> None:
    mask0 = torch.tensor([[True] * 6 + [False] * 2])
    mask1 = torch.tensor([[True] * 3 + [False]])
    out = _output(mask0, mask1)
    norm = PositiveNormaliser()
    losses = detection_loss(
        out,
        [torch.tensor([[1.5, 4.5], [2.0, 7.0]])],
        [torch.tensor([0, 2])],
        3,
        norm,
        LossConfig(**_ranges()),
    )
    # valid: level-0 points 0..5 (positives 2, 3, 4, 5 -> 6 slots), level-1 points 0, 2, 4 (none positive)
    divisor = 0.9 * 250 + 0.4
    assert norm.value == pytest.approx(divisor)
    expected_cls = (6 * 0.25 * 0.25 * LN2 + (27 - 6) * 0.75 * 0.25 * LN2) / divisor
    assert losses["cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    expected_reg = diou_loss_1d(torch.ones(6, 2), torch.tensor(POSITIVE_TARGETS[:6])).sum() / divisor
    assert losses["reg"].item() == pytest.approx(expected_reg.item(), rel=1e-5)


def test_detection_loss_without_events_and_with_lcf() -> None:
    emb = torch.eye(2, requires_grad=True)
    aux = {"lcf": {"visual": emb, "audio": torch.eye(2), "scale": torch.tensor(1.0), "targets": torch.eye(2)}}
    out = _output(torch.ones(1, 8, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool), aux)
    losses = detection_loss(
        out,
        [torch.zeros(0, 2)],
        [torch.zeros(0, dtype=torch.long)],
        3,
        PositiveNormaliser(),
        LossConfig(**_ranges()),
    )
    assert losses["reg"].item() == 0.0 and losses["reg"].requires_grad
    lcf = math.log1p(math.exp(-1))
    assert losses["lcf"].item() == pytest.approx(lcf, rel=1e-5)
    assert losses["total"].item() == pytest.approx(losses["cls"].item() + 0.1 * lcf, rel=1e-5)
    losses["total"].backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_loss_config_validation() -> None:
    with pytest.raises(ValueError):
        LossConfig(label_smoothing=1.0)
    with pytest.raises(ValueError):
        LossConfig(regression_ranges=((4.0, 2.0),))
    out = _output(torch.ones(1, 8, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError):  # 3 ranges for a 2-level output
        detection_loss(
            out,
            [torch.zeros(0, 2)],
            [torch.zeros(0)],
            3,
            PositiveNormaliser(),
            LossConfig(regression_ranges=((0.0, 4.0), (4.0, 8.0), (8.0, math.inf))),
        )
