"""Soft-NMS and the whole decode -> soft-NMS -> seconds path against the UnAV reference fixtures."""

from __future__ import annotations

import torch

from avdet.models.base import DetectorOutput
from avdet.pipeline.postprocess import PostprocessConfig, postprocess
from avdet.pipeline.types import TimeGrid
from conftest import reference_postprocess, video_nms

STRIDES = [1, 2, 4, 8, 16, 32]


def test_soft_nms_matches_reference_cases(golden_dir):
    golden = torch.load(golden_dir / "softnms.pt", weights_only=True)
    assert len(golden["cases"]) >= 5
    for case in golden["cases"]:
        p = case["params"]
        segs, scores, labels = video_nms(
            case["segments"],
            case["scores"],
            case["labels"],
            sigma=p["sigma"],
            min_score=p["min_score"],
            max_seg_num=p["max_seg_num"],
        )
        assert len(scores) == len(case["out_scores"])
        assert torch.equal(labels, case["out_labels"])  # same order, same classes
        torch.testing.assert_close(scores, case["out_scores"], rtol=0, atol=1e-6)
        torch.testing.assert_close(segs, case["out_segments"], rtol=0, atol=1e-6)


def _config(test_config: dict) -> PostprocessConfig:
    cfg = reference_postprocess(test_config)  # every reference key must map
    assert (cfg.sigma, cfg.multiclass, cfg.nms_method) == (test_config["nms_sigma"], True, "soft")
    return cfg


def _grid(video: dict) -> TimeGrid:
    # the reference maps grid g to (g * feat_stride + num_frames / 2) / fps
    return TimeGrid(0.5 * video["feat_num_frames"] / video["fps"], video["feat_stride"] / video["fps"])


def _check(events, expected: dict) -> None:
    assert len(events) == len(expected["scores"])
    assert [e.label_id for e in events] == expected["labels"].tolist()
    got_segs = torch.tensor([[e.start, e.end] for e in events], dtype=torch.float64)
    got_scores = torch.tensor([e.score for e in events], dtype=torch.float64)
    torch.testing.assert_close(got_segs, expected["segments"].double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(got_scores, expected["scores"].double(), rtol=0, atol=1e-6)


def test_unav_outputs_to_final_detections(golden_dir):
    golden = torch.load(golden_dir / "unav_model.pt", weights_only=True)
    cfg = _config(golden["test_config"])
    for video, expected in zip(golden["inputs"], golden["outputs"], strict=True):
        out = DetectorOutput(
            [x[None] for x in expected["cls_logits"]],  # (T_l, C) -> (1, T_l, C)
            [x[None] for x in expected["offsets"]],  # (T_l, C, 2) -> (1, T_l, C, 2)
            [x[None] for x in expected["masks"]],
            STRIDES,
        )
        (events,) = postprocess(out, [_grid(video)], [video["duration"]], cfg, [f"c{i}" for i in range(5)])
        _check(events, expected)
        assert all(0.0 <= e.start <= e.end <= video["duration"] for e in events)
        assert events[0].label == f"c{events[0].label_id}"


def test_unav_outputs_batched_with_padding(golden_dir):
    """The three videos in one padded batch give each video's own reference detections."""
    golden = torch.load(golden_dir / "unav_model.pt", weights_only=True)
    cfg = _config(golden["test_config"])
    outs = golden["outputs"]
    cls, offs, masks = [], [], []
    for level in range(len(STRIDES)):
        length = max(o["cls_logits"][level].shape[0] for o in outs)

        def pad(x: torch.Tensor, length: int = length) -> torch.Tensor:
            extra = torch.zeros((length - x.shape[0], *x.shape[1:]), dtype=x.dtype)
            return torch.cat([x, extra])

        cls.append(torch.stack([pad(o["cls_logits"][level]) for o in outs]))  # (B, T_l, C)
        offs.append(torch.stack([pad(o["offsets"][level]) for o in outs]))  # (B, T_l, C, 2)
        masks.append(torch.stack([pad(o["masks"][level]) for o in outs]))  # (B, T_l)
    out = DetectorOutput(cls, offs, masks, STRIDES)
    grids = [_grid(v) for v in golden["inputs"]]
    events = postprocess(out, grids, [v["duration"] for v in golden["inputs"]], cfg, None)
    for evs, expected in zip(events, outs, strict=True):
        _check(evs, expected)
