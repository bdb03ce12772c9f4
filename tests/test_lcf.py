"""LCF target matrices for every variant against hand-computed cases, and the module's parameters."""

from __future__ import annotations

import math

import pytest
import torch

from avdet.models.lcf import (
    LCFModulation,
    diagonal_targets,
    gaussian_targets,
    lcf_targets,
    softened_targets,
    valid_segments,
)
from avdet.models.losses import lcf_loss

# two videos: video 0 has three valid segments, video 1 two
VIDEO = torch.tensor([0, 0, 0, 1, 1])
STEP = torch.tensor([0, 1, 2, 0, 1])


def test_valid_segments_order() -> None:
    mask = torch.tensor([[True, True, False], [True, False, False]])
    video, step = valid_segments(mask)
    assert video.tolist() == [0, 0, 1] and step.tolist() == [0, 1, 0]


def test_diagonal_targets() -> None:
    assert torch.equal(diagonal_targets(VIDEO, STEP), torch.eye(5))


def test_gaussian_targets_hand_values() -> None:
    a, b = math.exp(-0.5), math.exp(-2.0)  # distance 1 and 2 with sigma 1
    expected = torch.tensor(
        [
            [1, a, b, 0, 0],
            [a, 1, a, 0, 0],
            [b, a, 1, 0, 0],
            [0, 0, 0, 1, a],
            [0, 0, 0, a, 1],
        ]
    )
    assert torch.allclose(gaussian_targets(VIDEO, STEP, 1.0), expected)
    wide = gaussian_targets(VIDEO, STEP, torch.tensor(2.0))
    assert wide[0, 1].item() == pytest.approx(math.exp(-1 / 8))
    assert wide[0, 2].item() == pytest.approx(math.exp(-4 / 8))
    assert wide[0, 3].item() == 0.0  # other video: negative whatever sigma


def test_softened_targets_hand_values() -> None:
    expected = torch.tensor(
        [
            [0.9, 0.05, 0.05, 0, 0],
            [0.05, 0.9, 0.05, 0, 0],
            [0.05, 0.05, 0.9, 0, 0],
            [0, 0, 0, 0.9, 0.1],
            [0, 0, 0, 0.1, 0.9],
        ]
    )
    assert torch.allclose(softened_targets(VIDEO, STEP, 0.1), expected)
    single = softened_targets(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 0.2)
    assert single[0].tolist() == pytest.approx([1.0, 0.0, 0.0])  # a one-segment video keeps its diagonal


def test_lcf_targets_dispatch() -> None:
    assert torch.equal(lcf_targets("diagonal", VIDEO, STEP, 1.0, 0.1), torch.eye(5))
    assert torch.allclose(lcf_targets("fixed_gaussian", VIDEO, STEP, 1.0, 0.1), gaussian_targets(VIDEO, STEP, 1.0))
    assert torch.allclose(lcf_targets("softened", VIDEO, STEP, 1.0, 0.1), softened_targets(VIDEO, STEP, 0.1))
    with pytest.raises(ValueError):
        lcf_targets("none", VIDEO, STEP, 1.0, 0.1)


def test_sigma_parameters_per_variant() -> None:
    adaptive = LCFModulation(8, 4, "adaptive_gaussian", sigma_init=1.0, sigma_floor=0.25)
    fixed = LCFModulation(8, 4, "fixed_gaussian", sigma_init=1.0, sigma_floor=0.25)
    assert adaptive.sigma.item() == pytest.approx(1.0)
    assert fixed.sigma.item() == pytest.approx(1.0)
    names = {n for n, _ in adaptive.named_parameters()}
    assert "sigma_raw" in names and "log_scale" in names
    assert "sigma_raw" not in {n for n, _ in fixed.named_parameters()}
    with torch.no_grad():
        adaptive.sigma_raw.fill_(-50.0)
    assert adaptive.sigma.item() >= 0.25  # the floor stops a collapse to a one-hot target
    with pytest.raises(ValueError):
        LCFModulation(8, 4, "none")
    with pytest.raises(ValueError):
        LCFModulation(8, 4, sigma_init=0.2, sigma_floor=0.25)


def test_forward_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    lcf = LCFModulation(8, 4, "adaptive_gaussian", tau_init=0.07)
    audio, visual = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    out = lcf(audio, visual, mask)
    assert out["visual"].shape == (9, 4) and out["audio"].shape == (9, 4) and out["targets"].shape == (9, 9)
    assert torch.allclose(out["visual"].norm(dim=-1), torch.ones(9))
    assert out["scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    # padded steps never enter: changing them changes nothing
    audio2 = audio.clone()
    audio2[1, 3:] = 100.0
    assert torch.equal(lcf(audio2, visual, mask)["audio"], out["audio"])
    loss = lcf_loss(out["visual"], out["audio"], out["scale"], out["targets"])
    loss.backward()
    for name, p in lcf.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _arc_embeddings(n: int, angle: float) -> torch.Tensor:
    """(n, 2) unit vectors at angles 0, angle, 2 angle, ...: cos similarities fall off like a Gaussian of i - j."""
    theta = torch.arange(n, dtype=torch.float32) * angle
    return torch.stack([theta.cos(), theta.sin()], dim=1)


@pytest.mark.parametrize(("sigma_init", "direction"), [(1.0, 1.0), (4.0, -1.0)])
def test_adaptive_sigma_moves_towards_the_similarity_spread(sigma_init: float, direction: float) -> None:
    # scale * cos((i - j) a) ~ const - (i - j)^2 / (2 s^2) with s^2 = 1 / (scale a^2) = 4: the similarities of a
    # Gaussian of sigma 2. A learnable sigma must move towards 2 from either side; with the plain cross-entropy
    # its gradient always shrinks it (a sharper target is "easier"), the fault this guards against.
    emb = _arc_embeddings(9, 0.1)
    video, step = torch.zeros(9, dtype=torch.long), torch.arange(9)
    sigma = torch.tensor(sigma_init, requires_grad=True)
    loss = lcf_loss(emb, emb, torch.tensor(25.0), gaussian_targets(video, step, sigma))
    loss.backward()
    assert direction * -sigma.grad.item() > 0  # a gradient step moves sigma towards 2
    # the reported value stays the paper's cross-entropy
    plain = lcf_loss(emb, emb, torch.tensor(25.0), gaussian_targets(video, step, sigma.detach()))
    assert loss.item() == pytest.approx(plain.item())
