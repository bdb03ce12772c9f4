"""The safe-fusion switches of LoCo (models.fusion; docs/fusion.md) each reach the computation: modality dropout
zeroes whole streams while training, the stream gates scale the streams and learn, LCF's stop-gradient keeps its
gradient out of one encoder, LCF's warm-up holds its loss at zero until its epoch, and a removed stream is zeros."""

from __future__ import annotations

import pytest
import torch
from test_loco_switches import build, inputs, logits

from avdet.models.fusion import dropout_keep, without_stream
from avdet.models.loco import LoCoConfig
from avdet.models.losses import LossConfig, PositiveNormaliser, detection_loss


def _loss(model, batch, **loss) -> dict[str, torch.Tensor]:
    out = model(*batch)
    segments = [torch.tensor([[2.0, 9.0]]), torch.tensor([[1.0, 5.0]])]
    labels = [torch.tensor([1]), torch.tensor([0])]
    return detection_loss(out, segments, labels, 3, PositiveNormaliser(5.0), LossConfig(**loss))


def _grad_norm(module: torch.nn.Module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))


def test_dropout_keep_drops_one_stream_at_rate_p_never_both() -> None:
    gen = torch.Generator().manual_seed(0)
    keep_a, keep_v = dropout_keep(20000, 0.4, gen)
    assert not (~keep_a & ~keep_v).any()  # a clip never loses both streams
    dropped = (~keep_a | ~keep_v).float().mean()
    assert abs(float(dropped) - 0.4) < 0.02 and abs(float((~keep_a).float().mean()) - 0.2) < 0.02
    assert dropout_keep(100, 0.0, gen)[0].all() and dropout_keep(100, 0.0, gen)[1].all()


def test_modality_dropout_zeroes_streams_while_training_only() -> None:
    batch = inputs()
    plain, dropped = build(), build(modality_dropout=0.9)
    assert torch.equal(logits(plain, *batch), logits(dropped, *batch))  # inference: no dropout
    seen: list[torch.Tensor] = []
    dropped.pyramid.register_forward_hook(lambda m, args, out: seen.append(torch.stack([args[0], args[1]])))
    plain.train(), dropped.train()
    torch.manual_seed(3)
    dropped(*batch)
    a, v = seen[0]  # (B, T, D) each: what the cross-modal pyramid got
    zero = [(a[b] == 0).all() or (v[b] == 0).all() for b in range(a.shape[0])]
    assert any(zero) and not any((a[b] == 0).all() and (v[b] == 0).all() for b in range(a.shape[0]))


def test_removed_stream_equals_a_dropped_one_and_restores() -> None:
    model = build(modality_dropout=0.5)
    batch = inputs()
    both = logits(model, *batch)
    with without_stream(model, "visual"):
        no_visual = logits(model, *batch)
    with without_stream(model, "audio"):
        no_audio = logits(model, *batch)
    assert not torch.allclose(both, no_visual) and not torch.allclose(both, no_audio)
    assert not torch.allclose(no_visual, no_audio)
    assert torch.equal(logits(model, *batch), both) and model.removed_stream is None
    with pytest.raises(ValueError, match="stream must be"), without_stream(model, "video"):
        pass


def test_stream_gate_scales_the_stream_and_learns() -> None:
    batch = inputs()
    model = build(stream_gate=True)
    model.train()
    out = model(*batch)
    assert out.aux["audio_gate"].shape == (2,) and (out.aux["audio_gate"] > 0.95).all()  # initialised open
    _loss(model, batch)["total"].backward()
    assert model.audio_gate.proj.weight.grad.abs().sum() > 0 and model.visual_gate.proj.weight.grad.abs().sum() > 0
    open_logits = logits(model, *batch)
    with torch.no_grad():
        model.visual_gate.proj.bias.fill_(-60.0)  # a closed gate is a removed stream
    closed = logits(model, *batch)
    assert not torch.allclose(open_logits, closed)
    with without_stream(model, "visual"):
        assert torch.allclose(closed, logits(model, *batch), atol=1e-5)


@pytest.mark.parametrize("stopped", ["none", "audio", "visual"])
def test_lcf_stop_grad_keeps_lcf_out_of_one_encoder(stopped: str) -> None:
    model = build(lcf="diagonal", lcf_stop_grad=stopped)
    model.train()
    out = model(*inputs())
    from avdet.models.losses import lcf_loss

    aux = out.aux["lcf"]
    lcf_loss(aux["visual"], aux["audio"], aux["scale"], aux["targets"]).backward()
    assert (_grad_norm(model.audio_encoder) == 0) == (stopped == "audio")
    assert (_grad_norm(model.visual_encoder) == 0) == (stopped == "visual")
    assert _grad_norm(model.lcf) > 0  # both projections still learn


def test_lcf_warm_up_holds_the_loss_at_zero_until_its_epoch() -> None:
    batch = inputs()
    model = build(lcf="diagonal", lcf_start_epoch=2)
    model.train()
    for epoch, on in ((0, False), (1, False), (2, True), (5, True)):
        model.set_epoch(epoch)
        torch.manual_seed(0)
        losses = _loss(model, batch, lcf_weight=0.5)
        assert (float(losses["lcf"].detach()) > 0) == on, epoch
        assert torch.allclose(losses["total"], losses["cls"] + losses["reg"] + 0.5 * losses["lcf"])
    assert build(lcf="diagonal").lcf_on  # the default starts at once


@pytest.mark.parametrize(
    "change",
    [
        {"modality_dropout": 1.0},
        {"modality_dropout": -0.1},
        {"lcf_stop_grad": "both"},
        {"lcf_start_epoch": -1},
        {"modality": "audio", "lcf": "none", "modality_dropout": 0.3},
        {"modality": "visual", "lcf": "none", "stream_gate": True},
        {"modality": "audio", "lcf": "none", "stream_pyramid": True},
    ],
)
def test_bad_fusion_settings_are_config_errors(change: dict) -> None:
    with pytest.raises(ValueError):
        LoCoConfig(**change)


def test_stream_pyramid_gives_each_stream_its_own_temporal_context() -> None:
    batch = inputs()
    plain, own = build(), build(stream_pyramid=True)
    assert plain.audio_pyramid is None and own.audio_pyramid is not None
    own.train()
    _loss(own, batch)["total"].backward()
    assert _grad_norm(own.audio_pyramid) > 0 and _grad_norm(own.visual_pyramid) > 0
    # with the visual stream removed, what the audio stream's own pyramid adds still reaches the output
    with without_stream(own, "visual"):
        with_own = logits(own, *batch)
        for p in own.audio_pyramid.parameters():
            p.data.zero_()
        assert not torch.allclose(with_own, logits(own, *batch))
