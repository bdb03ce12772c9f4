"""UnAV against the reference (`golden/unav_model.pt`): per-level outputs and final detections."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avdet.errors import CheckpointError, ConfigError
from avdet.models.keymaps import convert_state_dict, reference_config
from avdet.models.unav import UnAV, UnAVConfig
from avdet.pipeline.checkpoint import load_checkpoint
from avdet.pipeline.convert import convert_checkpoint
from avdet.pipeline.postprocess import postprocess
from avdet.pipeline.types import TimeGrid
from conftest import reference_postprocess


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    path = golden_dir / "unav_model.pt"
    if not path.is_file():
        pytest.fail(f"golden fixture missing: {path}", pytrace=False)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A tiny model on a shared machine: one thread avoids oversubscription (10x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(golden: dict) -> UnAV:
    net = UnAV(UnAVConfig(**reference_config("unav", golden["model_config"])))
    net.load_state_dict(convert_state_dict("unav", golden["state_dict"]))
    return net.eval()


def _batch(model: UnAV, videos: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = [v["visual"].shape[0] for v in videos]
    total = model.padded_length(max(lengths))
    visual = torch.zeros(len(videos), total, videos[0]["visual"].shape[1])
    audio = torch.zeros(len(videos), total, videos[0]["audio"].shape[1])
    for i, v in enumerate(videos):
        visual[i, : lengths[i]] = v["visual"]
        audio[i, : lengths[i]] = v["audio"]
    mask = torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]
    return audio, visual, mask


@pytest.fixture(scope="module")
def solo_outputs(golden: dict, model: UnAV) -> list:
    """Each video run alone, as the reference evaluates."""
    outs = []
    for inputs in golden["inputs"]:
        with torch.no_grad():
            outs.append(model(*_batch(model, [inputs])))
    return outs


def _check_levels(out, index: int, expected: dict) -> None:
    assert len(out.cls_logits) == len(expected["cls_logits"])
    for level, (logits, offsets, mask) in enumerate(
        zip(expected["cls_logits"], expected["offsets"], expected["masks"], strict=True)
    ):
        assert torch.equal(out.masks[level][index], mask), f"mask of level {level}"
        torch.testing.assert_close(out.cls_logits[level][index], logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.offsets[level][index], offsets, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("video", [0, 1, 2])
def test_unav_levels_match_reference(golden: dict, model: UnAV, solo_outputs: list, video: int) -> None:
    inputs, expected = golden["inputs"][video], golden["outputs"][video]
    assert model.padded_length(inputs["visual"].shape[0]) == expected["padded_len"]
    out = solo_outputs[video]
    assert out.masks[0].shape[1] == expected["padded_len"]
    assert out.strides == [1, 2, 4, 8, 16, 32]
    _check_levels(out, 0, expected)


def test_unav_batch_matches_single_videos(golden: dict, model: UnAV) -> None:
    """Videos padded to the same length give their solo outputs in a batch (the dependency block's masks)."""
    audio, visual, mask = _batch(model, golden["inputs"][:2])
    with torch.no_grad():
        out = model(audio, visual, mask)
    for i in range(2):
        _check_levels(out, i, golden["outputs"][i])


@pytest.mark.parametrize("video", [0, 1, 2])
def test_unav_detections_match_reference(golden: dict, solo_outputs: list, video: int) -> None:
    inputs, expected, out = golden["inputs"][video], golden["outputs"][video], solo_outputs[video]
    cfg = reference_postprocess(golden["test_config"])
    fps, stride, frames = inputs["fps"], inputs["feat_stride"], inputs["feat_num_frames"]
    grid = TimeGrid(offset=0.5 * frames / fps, step=stride / fps)
    (events,) = postprocess(out, [grid], [inputs["duration"]], cfg, None)
    assert len(events) == len(expected["scores"])
    segments = torch.tensor([[e.start, e.end] for e in events], dtype=torch.float64)
    torch.testing.assert_close(segments, expected["segments"].double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(
        torch.tensor([e.score for e in events], dtype=torch.float64), expected["scores"].double(), rtol=0, atol=1e-4
    )
    assert [e.label_id for e in events] == expected["labels"].tolist()


def test_convert_checkpoint_roundtrip(golden: dict, tmp_path: Path) -> None:
    """A reference training checkpoint (EMA weights under DataParallel names) -> an avdet checkpoint that loads."""
    src = tmp_path / "unav_reference.pth.tar"
    ema = {f"module.{k}": v for k, v in golden["state_dict"].items()}
    torch.save({"epoch": 3, "state_dict": {}, "state_dict_ema": ema}, src)
    classes = [f"class {i}" for i in range(5)]
    spec = {"name": "i3d_vggish", "visual_dim": 48, "audio_dim": 24}
    dst = tmp_path / "unav.ckpt"
    convert_checkpoint(src, dst, "unav", classes, spec, model_config=golden["model_config"])
    loaded = load_checkpoint(dst)
    assert loaded.name == "unav" and loaded.classes == classes and loaded.extractor == spec
    inputs = golden["inputs"][1]
    audio, visual, mask = _batch(loaded.model, [inputs])
    with torch.no_grad():
        out = loaded.model(audio, visual, mask)
    _check_levels(out, 0, golden["outputs"][1])


def test_convert_checkpoint_infers_sizes_without_config(golden: dict, tmp_path: Path) -> None:
    src = tmp_path / "bare.pth"
    torch.save(golden["state_dict"], src)
    ref = dict(golden["model_config"])
    # what the weights cannot tell: the sequence length, heads and architecture depths
    partial = {k: ref[k] for k in ("max_seq_len", "n_head", "backbone_arch", "head_dim")}
    payload = convert_checkpoint(src, tmp_path / "out.ckpt", "unav", list("abcde"), {}, model_config=partial)
    cfg = payload["model"]["config"]
    assert (cfg["visual_dim"], cfg["audio_dim"], cfg["embed_dim"], cfg["num_classes"]) == (48, 24, 32, 5)


def test_convert_errors_are_one_line(golden: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unexpected parameter 'backbone.unknown.weight' in a UnAV reference"):
        convert_state_dict("unav", {"backbone.unknown.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="no reference converter"):
        convert_state_dict("nope", {})
    with pytest.raises(ConfigError, match="regression_range"):
        reference_config("unav", {**golden["model_config"], "regression_range": [(0, 2)] * 6})
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "x.ckpt", "unav", ["a"], {})
    src = tmp_path / "bare.pth"
    torch.save(golden["state_dict"], src)
    with pytest.raises(CheckpointError, match="5 classes but 2"):
        convert_checkpoint(src, tmp_path / "x.ckpt", "unav", ["a", "b"], {}, model_config=golden["model_config"])


# -- model behaviour beyond the fixture ----------------------------------------------------------------------------
def _tiny(**kw) -> UnAV:
    cfg = dict(visual_dim=12, audio_dim=8, num_classes=3, max_seq_len=32, embed_dim=16, num_heads=2, num_levels=3)
    return UnAV(UnAVConfig(**(cfg | dict(dependency_dim=8, head_dim=16) | kw)))


def _perturbed(model: UnAV) -> UnAV:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def test_unav_is_registered_for_dense_only() -> None:
    from avdet.models.registry import model_entry

    entry = model_entry("unav")
    assert entry.model_cls is UnAV and entry.config_cls is UnAVConfig and entry.tasks == ("dense",)


def test_unav_ignores_what_padding_holds() -> None:
    model = _perturbed(_tiny()).eval()
    gen = torch.Generator().manual_seed(1)
    audio, visual = torch.randn(2, 32, 8, generator=gen), torch.randn(2, 32, 12, generator=gen)
    mask = torch.arange(32)[None, :] < torch.tensor([32, 19])[:, None]
    with torch.no_grad():
        clean = model(audio * mask[..., None], visual * mask[..., None], mask)
        noisy = model(audio, visual, mask)
    for a, b, m in zip(
        clean.cls_logits + clean.offsets, noisy.cls_logits + noisy.offsets, clean.masks * 2, strict=True
    ):
        torch.testing.assert_close(a, b)
        assert torch.all(b[~m] == 0)


def test_unav_gradients_reach_every_parameter() -> None:
    model = _perturbed(_tiny()).eval()  # eval: no stochastic depth, so no branch is dropped by chance
    audio, visual = torch.randn(2, 32, 8), torch.randn(2, 32, 12)
    mask = torch.arange(32)[None, :] < torch.tensor([32, 25])[:, None]
    out = model(audio, visual, mask)
    (sum(t.square().sum() for t in out.cls_logits) + sum(t.sum() for t in out.offsets)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unav_variants_and_input_checks() -> None:
    model = _tiny(use_dependency=False, class_aware=False, use_abs_pe=False).train()
    audio, visual, mask = torch.randn(1, 32, 8), torch.randn(1, 32, 12), torch.ones(1, 32, dtype=torch.bool)
    out = model(audio, visual, mask)
    assert model.dependency is None and model.pos_embed is None
    assert [tuple(t.shape) for t in out.offsets] == [(1, 32, 1, 2), (1, 16, 1, 2), (1, 8, 1, 2)]
    with pytest.raises(ValueError, match="multiple of 4"):
        model(audio[:, :30], visual[:, :30], mask[:, :30])
    with pytest.raises(ValueError, match="expects"):
        model(audio, visual[..., :10], mask)
    pe_model = _tiny().train()
    with pytest.raises(ValueError, match="max_seq_len"):
        pe_model(torch.randn(1, 64, 8), torch.randn(1, 64, 12), torch.ones(1, 64, dtype=torch.bool))
    assert pe_model.padded_length(20) == 32 and pe_model.padded_length(33) == 36
    with pytest.raises(ValueError, match="multiple of the top stride"):
        UnAVConfig(max_seq_len=100)
