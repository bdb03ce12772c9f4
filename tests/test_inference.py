"""Inference in windows of the trained length: batched == alone for every detector, whatever the lengths; short
videos as before; long videos in bounded forward passes."""

from __future__ import annotations

import pytest
import torch

from avdet.models.registry import model_entry
from avdet.pipeline.config import load_config
from avdet.pipeline.data.dense import collate
from avdet.pipeline.inference import pad_inputs, plan_windows, predict
from avdet.pipeline.postprocess import PostprocessConfig, postprocess
from avdet.pipeline.types import TimeGrid

CLASSES = [f"c{i}" for i in range(5)]
GRID = TimeGrid(0.48, 0.32)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: intra-op threads only add waiting on a shared machine
    yield
    torch.set_num_threads(before)


def tiny_model(config: str) -> torch.nn.Module:
    torch.manual_seed(0)
    mcfg = load_config(f"configs/{config}.yaml").model_config()
    model = model_entry(load_config(f"configs/{config}.yaml").model["name"]).model_cls(mcfg)
    with torch.no_grad():  # spread the class scores (random heads all score near the 0.01 prior)
        for name, p in model.named_parameters():
            if "cls_head" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def items(lengths: list[int], seed: int = 1) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "video_id": f"v{i}",
            "duration": n * GRID.step,
            "grid": GRID,
            "audio": torch.randn(n, 128, generator=gen),
            "visual": torch.randn(n, 304, generator=gen),
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
        }
        for i, n in enumerate(lengths)
    ]


def assert_same_events(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.label_id == y.label_id
        assert x.start == pytest.approx(y.start, abs=1e-4) and x.end == pytest.approx(y.end, abs=1e-4)
        assert x.score == pytest.approx(y.score, abs=1e-5)


@pytest.mark.parametrize(("length", "size"), [(10, 64), (64, 64), (65, 64), (150, 64), (1000, 64), (97, 32)])
def test_windows_tile_the_video(length: int, size: int) -> None:
    plans = plan_windows(length, size, align=8)
    assert plans[0][1] == 0 and plans[-1][2] == length
    assert len(plans) == 1 or plans[-1][0] + size - 8 < length <= plans[-1][0] + size
    for (start, lo, hi), nxt in zip(plans, [*plans[1:], None], strict=True):
        assert start % 8 == 0 and start <= lo < hi <= start + size
        if nxt is not None:
            assert nxt[1] == hi and 0 < nxt[0] - start <= size // 2  # owned parts meet; overlap >= half


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
@pytest.mark.parametrize("config", ["tiny", "tiny_unav", "tiny_ccnet"])
def test_batched_equals_alone_with_mixed_lengths(config: str) -> None:
    """Videos below, at and above max_seq_len (64) get in a batch the events they get alone."""
    model = tiny_model(config)
    videos = items([30, 150, 64, 83, 17])
    cfg = PostprocessConfig()
    together = predict(model, [collate(videos)], cfg, CLASSES)
    for video in videos:
        alone = predict(model, [collate([video])], cfg, CLASSES)
        assert_same_events(together[video["video_id"]], alone[video["video_id"]])
    assert any(together[v["video_id"]] for v in videos)


@pytest.mark.parametrize("config", ["tiny", "tiny_unav", "tiny_ccnet"])
def test_short_videos_as_one_forward_pass(config: str) -> None:
    """Up to the trained length, windowed inference is the plain padded forward pass + postprocess, exactly."""
    model = tiny_model(config)
    videos = items([30, 64, 17, 50])
    batch = collate(videos)
    with torch.no_grad():
        out = model(*pad_inputs(model, batch.audio, batch.visual, batch.mask))
    expected = postprocess(out, batch.grids, batch.durations, PostprocessConfig(), CLASSES)
    got = predict(model, [batch], PostprocessConfig(), CLASSES)
    for video, want in zip(videos, expected, strict=True):
        assert got[video["video_id"]] == want


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_long_video_runs_in_forward_passes_of_the_trained_length() -> None:
    model = tiny_model("tiny")
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[2].shape)))
    (video,) = items([1000])
    events = predict(model, [collate([video])], PostprocessConfig(), CLASSES)["v0"]
    assert shapes and all(s == (1, 64) for s in shapes)
    assert len(shapes) == len(plan_windows(1000, 64, align=8))
    assert events and max(e.end for e in events) > 0.9 * video["duration"]  # the whole video is covered


def test_each_point_of_a_long_video_is_reported_once() -> None:
    """Windows overlap, but every (level, point, class) candidate comes from exactly one of them."""
    model = tiny_model("tiny")
    with torch.no_grad():  # every offset > 0, so no candidate is dropped as too short
        model.reg_head.regressor.conv.bias.fill_(10.0)
    (video,) = items([300])
    cfg = PostprocessConfig(nms_method="none", pre_nms_thresh=0.0, pre_nms_topk=10**6, duration_thresh=0.0)
    events = predict(model, [collate([video])], cfg, CLASSES)["v0"]
    points = sum(-(-300 // stride) for stride in model.cfg.strides)
    assert len(events) == points * len(CLASSES)
