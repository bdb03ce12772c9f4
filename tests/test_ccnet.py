"""CCNet on a tiny configuration: registry, shapes, masks, padding and batch invariance, gradients, length limit,
configs and the reference state-dict converter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avdet.errors import AvdetError, CheckpointError, ConfigError
from avdet.models.ccnet import CCNet, CCNetConfig, SequenceTooLongError
from avdet.models.keymaps import convert_state_dict
from avdet.models.loss_config import LossConfig
from avdet.models.losses import PositiveNormaliser, detection_loss
from avdet.models.registry import model_entry
from avdet.pipeline.config import build_model_config, load_config
from conftest import seeded_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: thread hand-offs cost more than they save on a shared 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(
    visual_dim=12,
    audio_dim=6,
    num_classes=3,
    max_seq_len=32,
    embed_dim=16,
    num_heads=2,
    num_levels=3,
    mtgc_dim=8,
    head_dim=16,
    drop_path=0.0,
)


def tiny(**changes) -> CCNet:
    return seeded_model(CCNet, CCNetConfig, TINY, **changes)


def batch(valid: list[int], length: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(len(valid), length, 6, generator=gen)
    visual = torch.randn(len(valid), length, 12, generator=gen)
    mask = torch.arange(length)[None, :] < torch.tensor(valid)[:, None]
    return audio, visual, mask


def test_registered_for_dense_task() -> None:
    entry = model_entry("ccnet")
    assert entry.model_cls is CCNet and entry.config_cls is CCNetConfig and entry.tasks == ("dense",)


def test_output_shapes_and_masks() -> None:
    model = tiny().eval()
    audio, visual, mask = batch([32, 20])
    with torch.no_grad():
        out = model(audio, visual, mask)
    assert out.strides == [1, 2, 4]
    for level, (logits, offsets, level_mask) in enumerate(zip(out.cls_logits, out.offsets, out.masks, strict=True)):
        steps = 32 >> level
        assert logits.shape == (2, steps, 3) and offsets.shape == (2, steps, 3, 2)
        assert level_mask.dtype == torch.bool
        assert torch.equal(level_mask, mask[:, :: 2**level])
        assert (offsets >= 0).all() and torch.isfinite(logits).all()
        # padded steps come out as zero
        assert (logits[~level_mask] == 0).all() and (offsets[~level_mask] == 0).all()
        assert (logits[level_mask] != 0).any()


def test_padded_content_does_not_matter() -> None:
    model = tiny().eval()
    audio, visual, mask = batch([32, 20])
    noisy_a, noisy_v = audio.clone(), visual.clone()
    noisy_a[~mask], noisy_v[~mask] = 100.0, -50.0
    with torch.no_grad():
        clean, noisy = model(audio, visual, mask), model(noisy_a, noisy_v, mask)
    for a, b in zip(clean.cls_logits + clean.offsets, noisy.cls_logits + noisy.offsets, strict=True):
        torch.testing.assert_close(a, b)


def test_video_output_does_not_depend_on_its_batch() -> None:
    """Every input is padded to max_seq_len, so a video gives the same output alone or batched with others."""
    model = tiny().eval()
    audio, visual, mask = batch([20, 32, 9])
    with torch.no_grad():
        together = model(audio, visual, mask)
        for i in range(3):
            alone = model(audio[i : i + 1], visual[i : i + 1], mask[i : i + 1])
            for a, b in zip(alone.cls_logits + alone.offsets, together.cls_logits + together.offsets, strict=True):
                torch.testing.assert_close(a[0], b[i], rtol=1e-5, atol=1e-5)


def test_gate_key_masking_switch_only_matters_with_padding() -> None:
    quirk, masked = tiny().eval(), tiny(tcg_mask_padded_keys=True).eval()
    masked.load_state_dict(quirk.state_dict())
    with torch.no_grad():
        full = batch([32])
        assert torch.allclose(quirk(*full).cls_logits[1], masked(*full).cls_logits[1])
        short = batch([11])
        assert not torch.allclose(quirk(*short).cls_logits[1], masked(*short).cls_logits[1])


@pytest.mark.parametrize("channel_attention", [True, False])
def test_gradients_reach_every_parameter(channel_attention: bool) -> None:
    model = tiny(channel_attention=channel_attention).train()
    audio, visual, mask = batch([32, 17])
    out = model(audio, visual, mask)
    loss = sum(x.sum() for x in out.cls_logits) + sum(x.square().sum() for x in out.offsets)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().max() == 0]
    assert not zero, zero


def test_class_agnostic_offsets_broadcast_to_classes() -> None:
    model = tiny(class_aware=False).eval()
    with torch.no_grad():
        out = model(*batch([32, 5]))
    assert out.offsets[0].shape == (2, 32, 3, 2)
    assert torch.equal(out.offsets[0][..., 0, :], out.offsets[0][..., 2, :])


def test_length_limit() -> None:
    model = tiny()
    assert model.padded_length(1) == 32 and model.padded_length(32) == 32
    with pytest.raises(SequenceTooLongError, match=r"at most max_seq_len=32 feature steps.*got 33") as err:
        model.padded_length(33)
    assert isinstance(err.value, ValueError) and isinstance(err.value, AvdetError)
    assert "\n" not in str(err.value)
    with pytest.raises(SequenceTooLongError, match="max_seq_len=32"):
        model(*batch([40], length=40))
    with pytest.raises(ValueError, match="padded to max_seq_len=32"):
        model(*batch([16], length=16))


def test_config_validation() -> None:
    assert build_model_config({"name": "ccnet", **TINY}) == CCNetConfig(**TINY)
    with pytest.raises(ConfigError, match="top stride 4"):
        build_model_config({"name": "ccnet", **TINY, "max_seq_len": 30})
    with pytest.raises(ConfigError, match="num_heads"):
        build_model_config({"name": "ccnet", **TINY, "num_heads": 3})
    with pytest.raises(ConfigError, match="unknown config key model.window_size"):
        build_model_config({"name": "ccnet", **TINY, "window_size": 8})


@pytest.mark.parametrize(
    ("name", "dims", "max_len"), [("ccnet_i3d_vggish", (2048, 128), 224), ("ccnet_onepeace", (1536, 1536), 256)]
)
def test_shipped_configs(name: str, dims: tuple[int, int], max_len: int) -> None:
    cfg = load_config(name).model_config()
    assert isinstance(cfg, CCNetConfig)
    assert (cfg.visual_dim, cfg.audio_dim, cfg.max_seq_len, cfg.num_classes) == (*dims, max_len, 100)
    assert (cfg.embed_dim, cfg.head_dim, cfg.num_levels, cfg.mtgc_dim, cfg.drop_path) == (512, 512, 6, 128, 0.1)


def test_converter_round_trip_names_and_errors() -> None:
    model = tiny(drop_path=0.1)
    ours = model.state_dict()
    reference = {
        "module.backbone.embd_norm_V.0.weight": torch.ones(1, 16, 1),
        "module.backbone.CMI_Audio.1.attn.query.weight": torch.ones(16, 16, 1),
        "module.backbone.ori_CMI_Visual.drop_path_mlp.scale": torch.ones(1, 16, 1),
        "module.backbone.audio_TCG.2.value_norm.bias": torch.ones(1, 16, 1),
        "module.backbone.visual_TCG.0.gate_linear.conv.weight": torch.ones(1, 16, 1),
        "module.MTGC_block.channel_att.2.mlp.3.weight": torch.ones(8, 8, 1),
        "module.reg_head.scale.1.scale": torch.ones(()),
    }
    converted = convert_state_dict("ccnet", reference)
    for key, value in converted.items():
        assert key in ours, key
        assert value.shape == ours[key].shape, key
    with pytest.raises(CheckpointError, match="unexpected parameter 'backbone.fancy.weight'"):
        convert_state_dict("ccnet", {"backbone.fancy.weight": torch.ones(1)})


def test_config_is_primitives_only() -> None:
    for f in dataclasses.fields(CCNetConfig):
        assert isinstance(getattr(CCNetConfig(), f.name), int | float | str | bool), f.name


@pytest.mark.slow  # trains CCNet for a few steps
def test_a_few_steps_fit_a_fixed_batch() -> None:
    model = tiny().train()
    audio, visual, mask = batch([32, 23])
    segs = [torch.tensor([[3.0, 10.0], [14.0, 30.0]]), torch.tensor([[1.0, 20.0]])]
    labels = [torch.tensor([0, 1]), torch.tensor([2])]
    cfg = LossConfig(regression_ranges=((0, 4), (4, 8), (8, float("inf"))))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    norm = PositiveNormaliser(momentum=0.0)  # divide by this batch's positives: a fixed loss scale
    totals = []
    for _ in range(12):
        losses = detection_loss(model(audio, visual, mask), segs, labels, 3, norm, cfg)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        totals.append(float(losses["total"].detach()))
    assert totals[-1] < 0.7 * totals[0], totals
