"""Parameter and FLOP counting (benchmarks/flops.py, the benchmarks' model-size helper)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avdet.models.unav import UnAV, UnAVConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from flops import count_flops, count_params, synthetic_inputs  # noqa: E402


class _LinearDetector(nn.Module):
    """Known cost: two linear maps, 2 * B * T * in * out FLOPs each."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(audio_dim=6, visual_dim=10)
        self.audio = nn.Linear(6, 4)
        self.visual = nn.Linear(10, 4)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.audio(audio) + self.visual(visual)) * mask[..., None]


def _tiny_unav(**kw) -> UnAV:
    cfg = dict(visual_dim=12, audio_dim=8, num_classes=3, max_seq_len=32, embed_dim=16, num_heads=2, num_levels=3)
    cfg |= dict(dependency_dim=8, head_dim=16)
    return UnAV(UnAVConfig(**(cfg | kw)))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_count_params_counts_shared_tensors_once() -> None:
    shared = nn.Linear(4, 3)
    model = nn.Sequential(shared, nn.ReLU(), nn.Linear(3, 4), shared)
    assert count_params(model) == (4 * 3 + 3) + (3 * 4 + 4)
    model[2].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == (4 * 3 + 3) + 4


def test_count_params_of_unav_matches_state() -> None:
    model = _tiny_unav()
    assert count_params(model) == sum(v.numel() for v in model.state_dict().values())


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_count_flops_analytic() -> None:
    model = _LinearDetector()
    assert count_flops(model, 7) == 2 * 7 * (6 * 4 + 10 * 4)
    assert count_flops(model, 7, batch=3) == 3 * 2 * 7 * (6 * 4 + 10 * 4)


def test_count_flops_accepts_inputs_and_keeps_mode() -> None:
    model = _tiny_unav().train()
    inputs = synthetic_inputs(model, 32)
    assert [tuple(t.shape) for t in inputs] == [(1, 32, 8), (1, 32, 12), (1, 32)]
    assert count_flops(model, inputs) == count_flops(model, 32)
    assert model.training


def test_unav_flops_scale_with_batch_and_length() -> None:
    model = _tiny_unav()
    one = count_flops(model, 32)
    assert one > 0
    assert count_flops(model, 32, batch=2) == 2 * one
    assert count_flops(model, 64) > 2 * one  # attention is quadratic in T


def test_unav_flops_include_the_dependency_block() -> None:
    with_dep, without = _tiny_unav(), _tiny_unav(use_dependency=False)
    # the dependency block's expand and squeeze convs alone: 2 convs x 2 FLOPs x T_l x k x 2D x (K*H) per level
    convs = sum(2 * 2 * t * 3 * 32 * (3 * 8) for t in (32, 16, 8))
    assert count_flops(with_dep, 32) - count_flops(without, 32) > convs
