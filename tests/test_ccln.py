"""CCLN (models/ccln.py): shapes, masks, gradient flow, SBI gate and FEE TopK against hand cases."""

from __future__ import annotations

import pytest
import torch

from avdet.models.ccln import CCLN, CCLNConfig, gate_rows, masked_topk_mean
from avdet.models.loss_config import SegmentLossConfig
from avdet.models.registry import model_entry
from avdet.models.segment_losses import SegmentTargets, segment_loss
from avdet.pipeline.data.ave import video_labels_from_segments

SMALL = dict(num_classes=5, audio_dim=16, visual_dim=24, d_model=32, agva_hidden=32, agva_att=8, ffn_dim=48)


def _inputs(b: int = 3, t: int = 10, hw: int = 3, cfg: CCLNConfig | None = None, seed: int = 0):
    cfg = cfg or CCLNConfig(**SMALL)
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, t, cfg.audio_dim, generator=g)
    visual = torch.randn(b, t, hw, hw, cfg.visual_dim, generator=g)
    return audio, visual


def test_registered_for_the_segment_task() -> None:
    entry = model_entry("ccln")
    assert entry.tasks == ("segment",) and entry.config_cls is CCLNConfig and entry.model_cls is CCLN


def test_paper_settings_shapes_and_parameter_count() -> None:
    cfg = CCLNConfig()
    model = CCLN(cfg).eval()
    audio = torch.randn(2, 10, 128)
    visual = torch.randn(2, 10, 7, 7, 512)
    mask = torch.ones(2, 10, dtype=torch.bool)
    out = model(audio, visual, mask)
    assert out.cls_logits[0].shape == (2, 10, 29)
    assert out.aux["fee"].shape == (2, 28)
    assert out.aux["visual_attention"].shape == (2, 10, 49)
    assert torch.allclose(out.aux["visual_attention"].sum(-1), torch.ones(2, 10))
    assert [v.shape for v in out.aux["contrast"]] == [(2, 10), (2, 10)]
    # The flattened store layout (T, 7*7*512) gives the same result as the 5-D release layout.
    flat = model(audio, visual.reshape(2, 10, -1), mask)
    assert torch.allclose(flat.cls_logits[0], out.cls_logits[0], atol=1e-5)
    params = sum(p.numel() for p in model.parameters())
    assert 3_000_000 < params < 4_500_000  # 3,701,924 at these settings (reported in the issue note)


def test_pooled_visual_skips_attention() -> None:
    cfg = CCLNConfig(**SMALL)
    model = CCLN(cfg).eval()
    audio, visual = _inputs(cfg=cfg)
    out = model(audio, visual.mean(dim=(2, 3)), torch.ones(3, 10, dtype=torch.bool))
    assert out.cls_logits[0].shape == (3, 10, 6) and "visual_attention" not in out.aux
    with pytest.raises(ValueError):
        model(audio, torch.randn(3, 10, 25), torch.ones(3, 10, dtype=torch.bool))


def test_valid_steps_ignore_padding() -> None:
    """Changing padded content, or appending more padding, leaves every valid output unchanged."""
    torch.manual_seed(0)
    cfg = CCLNConfig(**SMALL)
    model = CCLN(cfg).eval()
    audio, visual = _inputs(b=2, t=8, cfg=cfg)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    out = model(audio, visual, mask)
    audio2, visual2 = audio.clone(), visual.clone()
    audio2[1, 5:] = 100.0
    visual2[1, 5:] = -50.0
    out2 = model(audio2, visual2, mask)
    assert torch.allclose(out.cls_logits[0][mask], out2.cls_logits[0][mask], atol=1e-5)
    assert torch.allclose(out.aux["fee"], out2.aux["fee"], atol=1e-5)
    longer = model(
        torch.cat([audio, torch.randn(2, 4, cfg.audio_dim)], 1),
        torch.cat([visual, torch.randn(2, 4, *visual.shape[2:])], 1),
        torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1),
    )
    assert torch.allclose(longer.cls_logits[0][:, :8][mask], out.cls_logits[0][mask], atol=1e-5)
    assert torch.allclose(longer.aux["fee"], out.aux["fee"], atol=1e-5)
    with pytest.raises(ValueError, match="valid steps come first"):
        model(audio, visual, torch.tensor([[True] * 8, [False] + [True] * 7]))


@pytest.mark.parametrize("setting", ["full", "weak"])
def test_gradients_reach_every_parameter(setting: str) -> None:
    torch.manual_seed(0)
    cfg = CCLNConfig(**SMALL, setting=setting, tau=0.05 if setting == "full" else 0.06)
    model = CCLN(cfg).train()
    audio, visual = _inputs(b=4, cfg=cfg)
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[2, 6:] = False
    seg = torch.randint(0, 6, (4, 10)).masked_fill(~mask, -1)
    video = video_labels_from_segments(seg, 6)
    targets = SegmentTargets(video, seg if setting == "full" else None)
    out = model(audio, visual, mask)
    loss, parts = segment_loss(out, targets, SegmentLossConfig(setting=setting))
    assert {"focal", "fee", "wccl"} <= set(parts) and torch.isfinite(loss)
    if setting == "weak":
        assert out.aux["video_logits"].shape == (4, 6)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if "agva" in n or "sbi" in n)


def test_ablation_switches_and_branches() -> None:
    cfg = CCLNConfig(**SMALL, use_agva=False, use_sbi=False, use_fee=False, branches=("visual", "audio"))
    model = CCLN(cfg).eval()
    audio, visual = _inputs(cfg=cfg)
    out = model(audio, visual, torch.ones(3, 10, dtype=torch.bool))
    assert "fee" not in out.aux and "av_correlation" not in out.aux and len(out.aux["contrast"]) == 3
    assert model.agva is None and model.sbi is None and model.fee_head is None  # nothing unused is built
    for bad in (dict(setting="semi"), dict(branches=("depth",)), dict(d_model=30), dict(tau=1.5)):
        with pytest.raises(ValueError):
            CCLNConfig(**bad)


def test_sbi_gate_hand_case() -> None:
    h = torch.tensor([[0.5, 0.3, 0.04, 0.16], [0.01, 0.02, 0.03, 0.04]])
    gated = gate_rows(h, 0.05)
    assert torch.allclose(gated[0], torch.tensor([0.5, 0.3, 0.0, 0.16]) / 0.96)
    assert torch.equal(gated[1], torch.zeros(4))  # nothing above tau: no message


def test_masked_topk_mean_hand_case() -> None:
    x = torch.tensor([[[1.0], [5.0], [3.0], [9.0]], [[2.0], [4.0], [8.0], [7.0]]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert masked_topk_mean(x, mask, 2)[:, 0].tolist() == [4.0, 2.0]  # (5 + 3) / 2; one valid step -> itself


@pytest.mark.parametrize(
    ("name", "setting", "tau", "lr"), [("ccln_ave", "full", 0.05, 1e-3), ("ccln_ave_weak", "weak", 0.06, 1e-4)]
)
def test_configs_hold_the_paper_settings(name: str, setting: str, tau: float, lr: float) -> None:
    import yaml

    from avdet.pipeline.config import CONFIG_DIR, from_dict

    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert raw["task"] == "segment"
    section = dict(raw["model"])
    assert section.pop("name") == "ccln"
    model_cfg = from_dict(CCLNConfig, section, "model")
    loss_cfg = from_dict(SegmentLossConfig, raw["segment_loss"], "segment_loss")
    assert (model_cfg.setting, model_cfg.tau, loss_cfg.setting) == (setting, tau, setting)
    assert raw["train"]["lr"] == lr and raw["train"]["batch_size"] == 128 and raw["train"]["epochs"] == 200
    assert (loss_cfg.fee_weight, loss_cfg.wccl_weight) == (150.0, 25.0)
