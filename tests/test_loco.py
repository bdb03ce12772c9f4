"""The LoCo detector end to end on a tiny configuration: shapes, masks, padding invariance, gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from avdet.errors import ConfigError
from avdet.models.loco import LoCo, LoCoConfig
from avdet.models.loss_config import LossConfig
from avdet.models.losses import PositiveNormaliser, detection_loss
from avdet.models.registry import model_entry
from conftest import seeded_model

TINY = dict(
    visual_dim=12,
    audio_dim=6,
    num_classes=5,
    max_seq_len=64,
    embed_dim=16,
    num_heads=2,
    lac_heads=2,
    num_levels=3,
    window_size=4,
    head_dim=16,
    drop_path=0.0,
)


def tiny(**changes) -> LoCo:
    return seeded_model(LoCo, LoCoConfig, TINY, **changes)


def batch(length: int, valid: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(len(valid), length, 6, generator=gen)
    visual = torch.randn(len(valid), length, 12, generator=gen)
    mask = torch.arange(length)[None, :] < torch.tensor(valid)[:, None]
    return audio, visual, mask


def test_registered() -> None:
    entry = model_entry("loco")
    assert entry.model_cls is LoCo and entry.config_cls is LoCoConfig and "dense" in entry.tasks


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        LoCoConfig(attention="deformable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LoCoConfig(lcf="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LoCoConfig(max_seq_len=100)  # not a multiple of 32
    with pytest.raises(ValueError):
        LoCoConfig(lac_heads=3)
    with pytest.raises(ValueError):
        LoCoConfig(lcf_sigma_init=0.2)


def test_config_through_the_experiment_loader() -> None:
    from avdet.pipeline.config import build_model_config

    cfg = build_model_config({"name": "loco", "attention": "fixed", "window_size": 16, "lcf": "softened"})
    assert cfg.attention == "fixed" and cfg.window_size == 16 and cfg.lcf == "softened"
    with pytest.raises(ConfigError):
        build_model_config({"name": "loco", "attention": "sparse"})


def test_padded_length() -> None:
    model = tiny()
    assert model.padded_length(10) == 64 and model.padded_length(64) == 64
    assert model.padded_length(65) == 68  # beyond max_seq_len: the next multiple of the top stride 4
    full = LoCoConfig()  # strides up to 32
    assert full.padded_length(224) == 224 and full.padded_length(225) == 256 and full.padded_length(300) == 320


@pytest.mark.parametrize("lcf", ["adaptive_gaussian", "fixed_gaussian", "softened", "diagonal", "none"])
def test_shapes_masks_and_aux(lcf: str) -> None:
    model = tiny(lcf=lcf).train()
    audio, visual, mask = batch(64, [64, 37])
    out = model(audio, visual, mask)
    assert out.strides == [1, 2, 4]
    assert [x.shape for x in out.cls_logits] == [(2, 64, 5), (2, 32, 5), (2, 16, 5)]
    assert [x.shape for x in out.offsets] == [(2, 64, 5, 2), (2, 32, 5, 2), (2, 16, 5, 2)]
    assert [x.sum(dim=1).tolist() for x in out.masks] == [[64, 37], [32, 19], [16, 10]]
    assert all(bool((x >= 0).all()) for x in out.offsets)
    if lcf == "none":
        assert out.aux == {}
    else:
        n = 64 + 37
        assert out.aux["lcf"]["targets"].shape == (n, n) and out.aux["lcf"]["visual"].shape == (n, 8)
    model.eval()
    assert model(audio, visual, mask).aux == {}  # LCF is training-only


def perturb(model: LoCo, seed: int = 5) -> LoCo:
    """Move every parameter off its initial value (norm biases, zero-initialised window adaptation, LayerScale)
    so that padding leaks and the sampling path are really exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


@pytest.mark.parametrize("attention", ["adaptive", "fixed", "global"])
def test_padding_invariance_eval(attention: str) -> None:
    model = perturb(tiny(attention=attention)).eval()
    audio, visual, mask = batch(64, [37])
    audio, visual, mask = audio[:, :37], visual[:, :37], mask[:, :37]
    outputs = []
    with torch.no_grad():
        # total lengths 48, 56, 64: multiples of the top stride 4, <= max_seq_len (longer inputs stretch the
        # position encodings) and >= 1 padded step at every level (the shared TransformerBlock and heads keep the
        # UnAV semantics, where a level with no padding at all reads zeros instead of ReLU(norm bias))
        for pad in (11, 19, 27):
            junk = (0, 0, 0, pad)  # garbage padding values: the model must zero them itself
            outputs.append(model(F.pad(audio, junk, value=3.0), F.pad(visual, junk, value=-2.0), F.pad(mask, (0, pad))))
    ref = outputs[0]
    for out in outputs[1:]:
        for level in range(3):
            m = ref.masks[level][0]
            n = m.shape[0]
            assert torch.equal(out.masks[level][0, :n], m) and not out.masks[level][0, n:].any()
            assert torch.allclose(ref.cls_logits[level][0, m], out.cls_logits[level][0, :n][m], atol=1e-4)
            assert torch.allclose(ref.offsets[level][0, m], out.offsets[level][0, :n][m], atol=1e-4)


def test_padding_does_not_change_the_lcf_terms() -> None:
    model = perturb(tiny()).train()
    audio, visual, mask = batch(64, [64, 37])
    short = model(audio, visual, mask).aux["lcf"]
    audio2, visual2 = audio.clone(), visual.clone()
    audio2[1, 37:], visual2[1, 37:] = 50.0, -50.0
    longer = model(audio2, visual2, mask).aux["lcf"]
    for key in ("visual", "audio", "targets"):
        assert torch.allclose(short[key], longer[key], atol=1e-5), key


@pytest.mark.parametrize(
    "changes",
    [
        {"decoder_shared": False, "decoder_layers": 2},
        {"encoder_layers": 0, "use_abs_pe": False},
        {"attention": "global", "lcf": "diagonal", "lac_heads": 4},
        {"window_size": 16, "num_levels": 2},
    ],
)
def test_ablation_variants_run(changes: dict) -> None:
    model = tiny(**changes).train()
    audio, visual, mask = batch(64, [64, 50])
    out = model(audio, visual, mask)
    levels = changes.get("num_levels", 3)
    assert len(out.cls_logits) == levels and out.cls_logits[-1].shape == (2, 64 // 2 ** (levels - 1), 5)
    assert all(torch.isfinite(x).all() for x in out.cls_logits + out.offsets)


def test_zero_adaptation_model_equals_fixed_windows() -> None:
    fixed = tiny(attention="fixed").eval()
    adaptive = tiny(attention="adaptive").eval()
    missing = adaptive.load_state_dict(fixed.state_dict(), strict=False).missing_keys
    assert missing and all(".adapt." in k for k in missing)
    audio, visual, mask = batch(64, [64, 29])
    with torch.no_grad():
        a, f = adaptive(audio, visual, mask), fixed(audio, visual, mask)
    for x, y in zip(a.cls_logits + a.offsets, f.cls_logits + f.offsets, strict=True):
        assert torch.allclose(x, y, atol=1e-5)


def test_any_length_at_inference() -> None:
    model = tiny().eval()
    length = model.padded_length(101)
    assert length == 104
    audio, visual, mask = batch(length, [101, 71])
    with torch.no_grad():
        out = model(audio, visual, mask)  # position encodings stretched to 104; level 2 (26 steps) pads to windows
    assert [x.shape[1] for x in out.cls_logits] == [104, 52, 26]
    assert all(torch.isfinite(x).all() for x in out.cls_logits)
    with pytest.raises(ValueError):
        model(*batch(66, [66]))  # not a multiple of the top stride
    with pytest.raises(ValueError):
        model.train()(*batch(80, [80]))  # longer than max_seq_len while training


@pytest.mark.parametrize("attention", ["adaptive", "global"])
def test_gradients_reach_every_parameter(attention: str) -> None:
    model = tiny(attention=attention).train()
    audio, visual, mask = batch(64, [64, 45])
    out = model(audio, visual, mask)
    # an event for each level: (10, 12.5) level 0, (20, 28) level 1 (point 24 reaches 4), the long ones level 2
    segs = [torch.tensor([[3.0, 20.0], [10.0, 12.5], [30.0, 60.0]]), torch.tensor([[1.0, 40.0], [20.0, 28.0]])]
    labels = [torch.tensor([0, 3, 1]), torch.tensor([4, 2])]
    losses = detection_loss(
        out,
        segs,
        labels,
        5,
        PositiveNormaliser(),
        LossConfig(regression_ranges=((0, 4), (4, 8), (8, float("inf")))),
    )
    assert set(losses) == {"cls", "reg", "lcf", "total"}
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_config_is_primitives_only() -> None:
    for f in dataclasses.fields(LoCoConfig):
        value = getattr(LoCoConfig(), f.name)
        assert value is None or isinstance(value, int | float | str | bool), f.name


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_a_few_steps_fit_a_fixed_batch() -> None:
    model = tiny().train()
    audio, visual, mask = batch(64, [64, 45])
    segs = [torch.tensor([[3.0, 20.0], [30.0, 60.0]]), torch.tensor([[1.0, 40.0]])]
    labels = [torch.tensor([0, 1]), torch.tensor([4])]
    cfg = LossConfig(regression_ranges=((0, 4), (4, 8), (8, float("inf"))))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    norm = PositiveNormaliser(momentum=0.0)  # divisor = this batch's positives: a constant, so losses compare
    history = []
    for _ in range(10):
        losses = detection_loss(model(audio, visual, mask), segs, labels, 5, norm, cfg)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        history.append([float(losses[k].detach()) for k in ("cls", "reg", "lcf")])
    (cls0, reg0, lcf0), (cls1, reg1, lcf1) = history[0], history[-1]
    assert cls1 < 0.85 * cls0 and reg1 < 0.9 * reg0 and lcf1 < 0.8 * lcf0, history
