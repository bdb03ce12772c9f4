"""Every LoCo config switch reaches the computation: the module it builds, the targets it uses, outputs that differ.

Each test fails when its switch is ignored (hard-wired to the default): a kind that always builds adaptive_gaussian,
a decoder that is always shared, a window size fixed at 8, a PE that is always added, and so on.
"""

from __future__ import annotations

import pytest
import torch
from test_loco import TINY as LOCO_TINY

from avdet.models.lac import CrossModalAttention, WindowAdaptation
from avdet.models.lcf import gaussian_targets, lcf_targets, valid_segments
from avdet.models.loco import LoCo, LoCoConfig
from avdet.models.loss_config import LossConfig
from avdet.models.losses import PositiveNormaliser, detection_loss
from conftest import seeded_model

TINY = {**LOCO_TINY, "num_classes": 3, "max_seq_len": 32}  # test_loco's tiny LoCo, shorter


def build(**changes) -> LoCo:
    return seeded_model(LoCo, LoCoConfig, TINY, **changes)


def inputs(length: int = 32, valid: tuple[int, ...] = (32, 20)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    audio = torch.randn(len(valid), length, 6, generator=gen)
    visual = torch.randn(len(valid), length, 12, generator=gen)
    mask = torch.arange(length)[None, :] < torch.tensor(valid)[:, None]
    return audio, visual, mask


def logits(model: LoCo, *batch: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat(model(*batch).cls_logits, dim=1)


def attentions(model: LoCo) -> list[CrossModalAttention]:
    return [m for m in model.modules() if isinstance(m, CrossModalAttention)]


@pytest.mark.parametrize("kind", ["adaptive_gaussian", "fixed_gaussian", "softened", "diagonal"])
def test_lcf_kind_builds_its_targets(kind: str) -> None:
    model = build(lcf=kind, lcf_sigma_init=1.7, lcf_label_smoothing=0.3)
    model.train()
    audio, visual, mask = inputs()
    aux = model(audio, visual, mask).aux["lcf"]
    video, step = valid_segments(mask)
    assert model.lcf.kind == kind
    assert torch.allclose(aux["targets"], lcf_targets(kind, video, step, 1.7, 0.3), atol=1e-6)
    others = (
        {"adaptive_gaussian", "softened", "diagonal"} - {kind} - ({"adaptive_gaussian"} if "gauss" in kind else set())
    )
    for other in others:  # the targets really are this kind's, not another's
        assert not torch.allclose(aux["targets"], lcf_targets(other, video, step, 1.7, 0.3), atol=1e-3), other
    learnable = {n for n, _ in model.named_parameters()}
    assert ("lcf.sigma_raw" in learnable) == (kind == "adaptive_gaussian")


def test_lcf_none_builds_nothing_and_adds_no_term() -> None:
    model = build(lcf="none")
    model.train()
    out = model(*inputs())
    assert model.lcf is None and "lcf" not in out.aux
    losses = detection_loss(
        out, [torch.tensor([[2.0, 9.0]])] * 2, [torch.tensor([1])] * 2, 3, PositiveNormaliser(5), LossConfig()
    )
    assert "lcf" not in losses


def test_lcf_numbers_reach_the_module() -> None:
    model = build(lcf_dim=6, lcf_sigma_init=2.5, lcf_sigma_floor=0.5, lcf_tau_init=0.2)
    assert model.lcf.proj_audio.out_features == 6 and model.lcf.proj_visual.out_features == 6
    assert model.lcf.sigma.item() == pytest.approx(2.5) and model.lcf.sigma_floor == 0.5
    assert model.lcf.log_scale.exp().item() == pytest.approx(5.0)
    model.train()
    audio, visual, mask = inputs()
    video, step = valid_segments(mask)
    assert torch.allclose(model(audio, visual, mask).aux["lcf"]["targets"], gaussian_targets(video, step, 2.5))


def test_lcf_weight_reaches_the_total() -> None:
    model = build()
    model.train()
    out = model(*inputs())
    gt = ([torch.tensor([[2.0, 9.0]])] * 2, [torch.tensor([1])] * 2)
    totals = {}
    for weight in (0.0, 0.5):
        losses = detection_loss(out, *gt, 3, PositiveNormaliser(5), LossConfig(lcf_weight=weight))
        totals[weight] = losses["total"].item()
        base = losses["cls"].item() + losses["reg"].item()
    assert totals[0.0] == pytest.approx(base, rel=1e-5)
    assert totals[0.5] == pytest.approx(base + 0.5 * losses["lcf"].item(), rel=1e-5)


def test_decoder_shared_switch() -> None:
    shared, per_level = build(decoder_shared=True), build(decoder_shared=False)
    assert len(shared.decoder.stacks) == 1 and len(per_level.decoder.stacks) == TINY["num_levels"]
    calls = [0] * TINY["num_levels"]
    for i, stack in enumerate(per_level.decoder.stacks):
        stack[0].register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    logits(per_level, *inputs())
    assert calls == [1] * TINY["num_levels"]  # each level through its own stack, once
    # the unshared decoder differs from the shared one once its stacks differ
    with torch.no_grad():
        for p in per_level.decoder.stacks[2].parameters():
            p.add_(0.5)
    before = logits(build(decoder_shared=False), *inputs())
    assert not torch.allclose(before, logits(per_level, *inputs()))


@pytest.mark.parametrize("attention", ["fixed", "adaptive"])
def test_window_size_reaches_the_attention(attention: str) -> None:
    small, large = build(attention=attention, window_size=2), build(attention=attention, window_size=8)
    assert {m.window for m in attentions(small)} == {2} and {m.window for m in attentions(large)} == {8}
    if attention == "adaptive":
        assert {m.window for m in small.modules() if isinstance(m, WindowAdaptation)} == {2}
    large.load_state_dict(small.state_dict())  # same weights: only the window differs
    batch = inputs()
    assert not torch.allclose(logits(small, *batch), logits(large, *batch), atol=1e-4)


def test_attention_kind_reaches_the_blocks() -> None:
    models = {kind: build(attention=kind) for kind in ("global", "fixed", "adaptive")}
    for kind, model in models.items():
        assert {m.attention for m in attentions(model)} == {kind}
        assert all((m.adapt is not None) == (kind == "adaptive") for m in attentions(model))
    models["global"].load_state_dict(models["fixed"].state_dict())
    batch = inputs()
    assert not torch.allclose(logits(models["global"], *batch), logits(models["fixed"], *batch), atol=1e-4)


def test_lac_heads_and_encoder_switches() -> None:
    model = build(lac_heads=4, encoder_layers=3, decoder_layers=2, embed_convs=1, use_abs_pe=False)
    assert {m.num_heads for m in attentions(model)} == {4}
    assert len(model.audio_encoder.blocks) == 3 and len(model.visual_encoder.blocks) == 3
    assert all(len(stack) == 2 for stack in model.decoder.stacks)
    assert len(model.audio_encoder.convs) == 1 and model.audio_encoder.pos_embed is None
    with_pe = build(lac_heads=4, encoder_layers=3, decoder_layers=2, embed_convs=1, use_abs_pe=True)
    with_pe.load_state_dict(model.state_dict())
    batch = inputs()
    assert not torch.allclose(logits(model, *batch), logits(with_pe, *batch), atol=1e-4)
