"""CCNet against the reference (zzhhfut/CCNet-AAAI2025 `CCNet_base_TCG_Transformer`): golden ccnet_model.pt.

The reference state dict is loaded through `convert_state_dict("ccnet", ...)` (strict), each video is run alone as
the reference evaluates it, and the per-level logits, offsets, masks and the final detections must match.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avdet.models.ccnet import CCNet, CCNetConfig
from avdet.models.keymaps import convert_state_dict, reference_config
from avdet.pipeline.postprocess import postprocess
from avdet.pipeline.types import TimeGrid
from conftest import reference_postprocess


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: thread hand-offs cost more than they save on a shared 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    path = golden_dir / "ccnet_model.pt"
    if not path.is_file():
        pytest.fail(f"golden fixture missing: {path}", pytrace=False)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def model(golden: dict) -> CCNet:
    net = CCNet(CCNetConfig(**reference_config("ccnet", golden["model_config"])))
    net.load_state_dict(convert_state_dict("ccnet", golden["state_dict"]), strict=True)
    return net.eval()


def padded_inputs(model: CCNet, videos: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Videos' (T, C) features -> zero-padded (B, L, C) audio, visual and (B, L) mask, L = padded_length."""
    length = model.padded_length(max(v["visual"].shape[0] for v in videos))
    audio = torch.zeros(len(videos), length, videos[0]["audio"].shape[1])
    visual = torch.zeros(len(videos), length, videos[0]["visual"].shape[1])
    mask = torch.zeros(len(videos), length, dtype=torch.bool)
    for i, video in enumerate(videos):
        n = video["visual"].shape[0]
        audio[i, :n], visual[i, :n], mask[i, :n] = video["audio"][:n], video["visual"], True
    return audio, visual, mask


def grid_of(video: dict) -> TimeGrid:
    """The reference's grid -> seconds mapping: t = (g * feat_stride + num_frames / 2) / fps."""
    fps = float(video["fps"])
    return TimeGrid(0.5 * video["feat_num_frames"] / fps, video["feat_stride"] / fps)


def assert_levels_match(out, index: int, expected: dict) -> None:
    assert len(out.cls_logits) == len(expected["cls_logits"])
    for level, (logits, offsets, mask) in enumerate(
        zip(expected["cls_logits"], expected["offsets"], expected["masks"], strict=True)
    ):
        where = f"level {level}"
        torch.testing.assert_close(out.masks[level][index], mask.bool(), msg=lambda m, w=where: f"{w} masks: {m}")
        torch.testing.assert_close(
            out.cls_logits[level][index], logits, rtol=1e-4, atol=1e-5, msg=lambda m, w=where: f"{w} logits: {m}"
        )
        torch.testing.assert_close(
            out.offsets[level][index], offsets, rtol=1e-4, atol=1e-5, msg=lambda m, w=where: f"{w} offsets: {m}"
        )


def assert_detections_match(events: list, expected: dict) -> None:
    assert len(events) == len(expected["scores"])
    labels = torch.tensor([e.label_id for e in events], dtype=torch.long)
    seconds = torch.tensor([[e.start, e.end] for e in events], dtype=torch.float64)
    scores = torch.tensor([e.score for e in events], dtype=torch.float64)
    assert torch.equal(labels, expected["labels"].long())
    torch.testing.assert_close(seconds, expected["segments"].double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(scores, expected["scores"].double(), rtol=0, atol=1e-4)


def test_reference_state_dict_loads_strictly(golden: dict, model: CCNet) -> None:
    converted = convert_state_dict("ccnet", golden["state_dict"])
    assert len(converted) == len(golden["state_dict"]) == len(model.state_dict())


@pytest.mark.parametrize("index", [0, 1])
def test_each_video_alone_matches_reference(golden: dict, model: CCNet, index: int) -> None:
    video, expected = golden["inputs"][index], golden["outputs"][index]
    audio, visual, mask = padded_inputs(model, [video])
    assert mask.shape[1] == expected["padded_len"]
    with torch.no_grad():
        out = model(audio, visual, mask)
    assert_levels_match(out, 0, expected)
    (events,) = postprocess(
        out, [grid_of(video)], [float(video["duration"])], reference_postprocess(golden["test_config"]), None
    )
    assert_detections_match(events, expected)


def test_batched_videos_match_reference(golden: dict, model: CCNet) -> None:
    """Both videos in one batch give what each gives alone (every input is padded to max_seq_len)."""
    audio, visual, mask = padded_inputs(model, golden["inputs"])
    with torch.no_grad():
        out = model(audio, visual, mask)
    cfg = reference_postprocess(golden["test_config"])
    grids = [grid_of(v) for v in golden["inputs"]]
    durations = [float(v["duration"]) for v in golden["inputs"]]
    for index, (events, expected) in enumerate(
        zip(postprocess(out, grids, durations, cfg, None), golden["outputs"], strict=True)
    ):
        assert_levels_match(out, index, expected)
        assert_detections_match(events, expected)
