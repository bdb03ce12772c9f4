"""Decoding and soft-NMS: a line-by-line port of the reference C++ loop is the oracle, ties included."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from avdet.errors import ConfigError
from avdet.models.base import DetectorOutput
from avdet.pipeline.postprocess import (
    PostprocessConfig,
    batched_nms,
    decode_video,
    nms,
    postprocess,
    segment_voting,
    soft_nms,
)
from avdet.pipeline.types import Event, TimeGrid


def reference_softnms_1d(segs: np.ndarray, scores: np.ndarray, sigma: float, min_score: float):
    """`softnms_1d_cpu` (method 2) transcribed with float32 scalars: returns picked (index, score) in order."""
    f32 = np.float32
    x1, x2, sc = segs[:, 0].astype(f32).copy(), segs[:, 1].astype(f32).copy(), scores.astype(f32).copy()
    areas = (x2 - x1 + f32(1e-6)).astype(f32)
    inds = list(range(len(sc)))
    n = len(sc)
    out = []
    i = 0
    while i < n:
        max_pos = i
        for pos in range(i + 1, n):
            if sc[max_pos] < sc[pos]:
                max_pos = pos
        ix1, ix2, iscore, iarea, iind = x1[max_pos], x2[max_pos], sc[max_pos], areas[max_pos], inds[max_pos]
        x1[max_pos], x2[max_pos], sc[max_pos], areas[max_pos], inds[max_pos] = x1[i], x2[i], sc[i], areas[i], inds[i]
        x1[i], x2[i], sc[i], areas[i], inds[i] = ix1, ix2, iscore, iarea, iind
        out.append((iind, float(iscore)))
        pos = i + 1
        while pos < n:
            inter = max(f32(0), min(ix2, x2[pos]) - max(ix1, x1[pos]))
            ovr = f32(inter / (iarea + areas[pos] - inter))
            sc[pos] = f32(sc[pos] * f32(math.exp(-(ovr * ovr) / f32(sigma))))
            if sc[pos] < f32(min_score):
                last = n - 1
                x1[pos], x2[pos], sc[pos], areas[pos], inds[pos] = x1[last], x2[last], sc[last], areas[last], inds[last]
                n -= 1
                pos -= 1
            pos += 1
        i += 1
    return out


def reference_batched(segs, scores, labels, sigma, min_score, max_seg_num):
    """`batched_nms(use_soft_nms=True, multiclass=True)` on top of the transcribed loop."""
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked += [(idx[i], s) for i, s in reference_softnms_1d(segs[idx], scores[idx], sigma, min_score)][:max_seg_num]
    order = sorted(range(len(picked)), key=lambda k: -picked[k][1])[:max_seg_num]  # stable
    return [picked[k][0] for k in order], [picked[k][1] for k in order]


def _random_case(rng: np.random.Generator, n: int, n_cls: int, quantise: bool):
    start = rng.uniform(0, 50, n)
    segs = np.stack([start, start + rng.uniform(0.05, 20, n)], axis=1).astype(np.float32)
    scores = rng.uniform(0.0005, 1, n).astype(np.float32)
    if quantise:  # many exact ties, the case where the reference's swap order decides
        scores = (np.round(scores * 8) / 8 + 0.01).astype(np.float32)
        segs[: n // 4] = segs[n // 4 : 2 * (n // 4)]  # duplicated segments too
    labels = rng.integers(0, n_cls, n)
    return segs, scores, labels


@pytest.mark.parametrize("quantise", [False, True])
def test_soft_nms_matches_transcribed_reference(quantise):
    rng = np.random.default_rng(0 if quantise else 1)
    for trial in range(12):
        n = int(rng.integers(1, 120))
        segs, scores, labels = _random_case(rng, n, int(rng.integers(1, 6)), quantise)
        sigma, min_score, max_num = [0.4, 0.9, 0.1][trial % 3], [0.001, 0.05, 0.3][trial % 3], [100, 7, 3][trial % 3]
        want_idx, want_scores = reference_batched(segs, scores, labels, sigma, min_score, max_num)
        got_segs, got_scores, got_labels = soft_nms(
            torch.from_numpy(segs),
            torch.from_numpy(scores),
            torch.from_numpy(labels),
            sigma=sigma,
            min_score=min_score,
            max_seg_num=max_num,
        )
        assert got_labels.tolist() == labels[want_idx].tolist()
        np.testing.assert_array_equal(got_segs.numpy(), segs[want_idx].reshape(-1, 2))
        np.testing.assert_allclose(got_scores.numpy(), want_scores, rtol=1e-6, atol=0)


def reference_hard_nms(segs, scores, labels, iou_threshold, min_score, max_seg_num):
    """`batched_nms(use_soft_nms=False, multiclass=True)`: filter > min_score, `nms_1d_cpu` per class, limits."""
    f32 = np.float32
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & (scores > min_score))
        x1, x2 = segs[idx, 0].astype(f32), segs[idx, 1].astype(f32)
        areas = (x2 - x1 + f32(1e-6)).astype(f32)
        order = np.argsort(-scores[idx], kind="stable")
        selected = np.ones(len(idx), dtype=bool)
        keep = []
        for a in range(len(order)):
            if not selected[a]:
                continue
            i = order[a]
            keep.append(i)
            for b in range(a + 1, len(order)):
                j = order[b]
                inter = max(f32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
                if f32(inter / (areas[i] + areas[j] - inter)) >= iou_threshold:
                    selected[b] = False
        picked += [(idx[i], float(scores[idx[i]])) for i in keep[:max_seg_num]]
    order = sorted(range(len(picked)), key=lambda k: -picked[k][1])[:max_seg_num]
    return [picked[k][0] for k in order]


@pytest.mark.parametrize("quantise", [False, True])
def test_hard_nms_matches_transcribed_reference(quantise):
    rng = np.random.default_rng(5 if quantise else 6)
    for trial in range(10):
        segs, scores, labels = _random_case(rng, int(rng.integers(1, 150)), int(rng.integers(1, 5)), quantise)
        thr, min_score, max_num = [0.7, 0.3, 0.5][trial % 3], [0.001, 0.2, 0.6][trial % 3], [100, 9, 4][trial % 3]
        want = reference_hard_nms(segs, scores, labels, thr, min_score, max_num)
        cfg = PostprocessConfig(nms_method="hard", iou_threshold=thr, min_score=min_score, max_seg_num=max_num)
        got_segs, got_scores, got_labels = nms(
            torch.from_numpy(segs), torch.from_numpy(scores), torch.from_numpy(labels), cfg
        )
        assert got_labels.tolist() == labels[want].tolist()
        np.testing.assert_array_equal(got_segs.numpy(), segs[want].reshape(-1, 2))
        np.testing.assert_array_equal(got_scores.numpy(), scores[want])  # hard NMS never changes scores


def test_hard_nms_suppresses_by_threshold_and_none_keeps_everything():
    segs = torch.tensor([[0.0, 10.0], [1.0, 10.0], [5.0, 15.0], [0.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.0005])
    labels = torch.tensor([0, 0, 0, 1])
    # iou([0,10],[1,10]) = 0.9 -> suppressed; iou([0,10],[5,15]) = 1/3 -> kept; class 1 is below min_score
    out_segs, out_scores, out_labels = nms(segs, scores, labels, PostprocessConfig(nms_method="hard"))
    assert out_segs.tolist() == [[0.0, 10.0], [5.0, 15.0]] and out_labels.tolist() == [0, 0]
    assert out_scores.tolist() == pytest.approx([0.9, 0.7])
    _, sc, _ = nms(segs, scores, labels, PostprocessConfig(nms_method="hard", iou_threshold=0.3))
    assert sc.tolist() == pytest.approx([0.9])
    # "none": the reference skips NMS and its limits, candidates stay in their order
    none = nms(segs, scores, labels, PostprocessConfig(nms_method="none", max_seg_num=1))
    assert torch.equal(none[0], segs) and torch.equal(none[1], scores) and torch.equal(none[2], labels)


def test_batched_nms_equals_per_video_calls():
    rng = np.random.default_rng(11)
    parts = [_random_case(rng, n, 3, True) for n in (40, 0, 25, 60)]
    segs = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    scores = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    video = torch.repeat_interleave(torch.arange(4), torch.tensor([len(p[1]) for p in parts]))
    for method in ("soft", "hard"):
        cfg = PostprocessConfig(nms_method=method, max_seg_num=12, min_score=0.05)
        batched = batched_nms(
            segs, scores, labels, video, 5, method=method, min_score=0.05, max_seg_num=12, sigma=cfg.sigma
        )
        assert len(batched) == 5 and len(batched[1][1]) == 0 and len(batched[4][1]) == 0
        for v, (s, sc, lab) in enumerate(parts):
            alone = nms(torch.from_numpy(s).reshape(-1, 2), torch.from_numpy(sc), torch.from_numpy(lab), cfg)
            for got, want in zip(batched[v], alone, strict=True):
                assert torch.equal(got, want)


def test_from_reference_maps_every_test_cfg_key():
    test_cfg = {
        "pre_nms_thresh": 0.01,
        "pre_nms_topk": 500,
        "iou_threshold": 0.6,
        "min_score": 0.002,
        "max_seg_num": 50,
        "nms_method": "hard",
        "nms_sigma": 0.5,
        "duration_thresh": 0.1,
        "multiclass_nms": False,
        "ext_score_file": None,
        "voting_thresh": 0.9,
    }
    cfg = PostprocessConfig.from_reference(test_cfg)
    assert (cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.iou_threshold, cfg.min_score) == (0.01, 500, 0.6, 0.002)
    assert (cfg.max_seg_num, cfg.nms_method, cfg.sigma, cfg.duration_thresh) == (50, "hard", 0.5, 0.1)
    assert (cfg.multiclass, cfg.voting_thresh) == (False, 0.9)
    with pytest.raises(ConfigError, match="ext_score_file"):
        PostprocessConfig.from_reference({"ext_score_file": "scores.json"})
    with pytest.raises(ConfigError, match="unknown reference test_cfg key 'bogus'"):
        PostprocessConfig.from_reference({"bogus": 1})
    with pytest.raises(ConfigError, match="nms_method"):
        PostprocessConfig(nms_method="linear")


def test_soft_nms_decays_overlaps_and_keeps_disjoint():
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 0])
    out_segs, out_scores, _ = soft_nms(segs, scores, labels, sigma=0.5, min_score=0.001, max_seg_num=10)
    # identical segment: iou ~1 -> 0.8 * exp(-1 / 0.5); the disjoint one keeps its score
    assert out_scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-2.0)], rel=1e-5)
    assert out_segs[1].tolist() == [20.0, 30.0]
    # another class is not suppressed
    _, sc2, lab2 = soft_nms(segs, scores, torch.tensor([0, 1, 0]), sigma=0.5, min_score=0.001, max_seg_num=10)
    assert sc2.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert lab2.tolist() == [0, 1, 0]


def test_soft_nms_empty_and_limits():
    segs, scores, labels = soft_nms(
        torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long), sigma=0.4, min_score=0.001, max_seg_num=5
    )
    assert segs.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)
    rng = np.random.default_rng(3)
    s, sc, lab = _random_case(rng, 300, 4, False)
    _, out_scores, _ = soft_nms(
        torch.from_numpy(s), torch.from_numpy(sc), torch.from_numpy(lab), sigma=0.4, min_score=0.001, max_seg_num=17
    )
    assert len(out_scores) == 17
    assert torch.all(out_scores[:-1] >= out_scores[1:])


def test_class_agnostic_nms_with_voting():
    segs = torch.tensor([[0.0, 10.0], [1.0, 10.0], [30.0, 40.0]])
    scores = torch.tensor([0.9, 0.6, 0.5])
    labels = torch.tensor([0, 1, 2])
    out_segs, out_scores, out_labels = soft_nms(
        segs, scores, labels, sigma=0.4, min_score=0.001, max_seg_num=10, multiclass=False, voting_thresh=0.75
    )
    assert out_labels.tolist()[:2] == [0, 2]  # the overlapping class-1 segment was decayed below the disjoint one
    refined = (0.9 * segs[0] + 0.6 * segs[1]) / 1.5  # iou 0.9 >= 0.75: averaged, weighted by score
    assert out_segs[0].tolist() == pytest.approx(refined.tolist(), rel=1e-6)
    assert segment_voting(segs[2:], segs, scores, 0.75)[0].tolist() == pytest.approx([30.0, 40.0])


def _single_level_output(logits: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor, stride: int):
    return DetectorOutput([logits[None]], [offsets[None]], [mask[None]], [stride])


def test_decode_points_offsets_mask_and_thresholds():
    t, c = 6, 3
    logits = torch.full((t, c), -20.0)
    logits[2, 1] = 2.0  # point 2, class 1
    logits[4, 0] = 1.0  # point 4, class 0
    logits[5, 2] = 3.0  # masked out below
    offsets = torch.zeros(t, c, 2)
    offsets[2, 1] = torch.tensor([1.5, 0.5])
    offsets[4, 0] = torch.tensor([0.01, 0.01])  # 0.04 grid units long at stride 2: under duration_thresh 0.05
    mask = torch.tensor([True] * 5 + [False])
    out = _single_level_output(logits, offsets, mask, stride=2)
    segs, scores, labels = decode_video(out, 0, PostprocessConfig())
    assert labels.tolist() == [1]
    # point 2 at stride 2 sits at grid 4; offsets are in units of the stride
    assert segs.tolist() == [[4 - 3.0, 4 + 1.0]]
    assert scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item()])
    # top-k keeps the best candidates
    logits2 = torch.linspace(-2, 2, t * c).reshape(t, c)
    out2 = _single_level_output(logits2, torch.ones(t, c, 2), torch.ones(t, dtype=torch.bool), 1)
    _, sc2, lab2 = decode_video(out2, 0, PostprocessConfig(pre_nms_topk=4))
    assert len(sc2) == 4 and lab2.tolist() == [2, 1, 0, 2]
    assert torch.all(sc2[:-1] >= sc2[1:])


def test_postprocess_seconds_clamping_and_names():
    t, c = 8, 2
    logits = torch.full((t, c), -20.0)
    logits[0, 0] = 3.0
    logits[7, 1] = 1.0
    offsets = torch.zeros(t, c, 2)
    offsets[0, 0] = torch.tensor([2.0, 3.0])  # grid [-2, 3]: starts before 0 s
    offsets[7, 1] = torch.tensor([1.0, 9.0])  # grid [6, 16]: ends after the video
    out = _single_level_output(logits, offsets, torch.ones(t, dtype=torch.bool), 1)
    grid = TimeGrid(offset=0.48, step=0.32)
    (events,) = postprocess(out, [grid], [4.0], PostprocessConfig(), ["dog barking", "car"])
    assert [e.label for e in events] == ["dog barking", "car"]
    assert events[0] == Event("dog barking", 0, 0.0, pytest.approx(0.48 + 3 * 0.32), events[0].score)
    assert events[1].start == pytest.approx(0.48 + 6 * 0.32) and events[1].end == 4.0
    assert isinstance(events[0].start, float) and isinstance(events[0].label_id, int)


def test_postprocess_video_without_candidates():
    logits = torch.full((2, 4, 3), -30.0)
    logits[1, 0, 0] = 2.0
    out = DetectorOutput([logits], [torch.ones(2, 4, 3, 2)], [torch.ones(2, 4, dtype=torch.bool)], [1])
    grids = [TimeGrid(0.5, 0.25)] * 2
    first, second = postprocess(out, grids, [10.0, 10.0], PostprocessConfig(), None)
    assert first == [] and len(second) == 1 and second[0].label == "class_0"
    out.cls_logits[0][1] = -30.0
    assert postprocess(out, grids, [10.0, 10.0], PostprocessConfig(), None) == [[], []]


def test_config_validation():
    with pytest.raises(ConfigError, match="sigma"):
        PostprocessConfig(sigma=0.0)
    with pytest.raises(ConfigError, match="max_seg_num"):
        PostprocessConfig(max_seg_num=0)
    cfg = PostprocessConfig()
    assert (cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.duration_thresh) == (0.001, 2000, 0.05)
    assert (cfg.sigma, cfg.min_score, cfg.max_seg_num) == (0.4, 0.001, 100)


def test_soft_nms_is_fast_on_a_full_video():
    """A batch of 8 full videos' candidates (100 classes, 6 levels, top 2000 each) in well under a second each."""
    torch.manual_seed(0)
    lengths = [224, 112, 56, 28, 14, 7]
    b, c = 8, 100
    logits = [torch.randn(b, t, c) - 2.0 for t in lengths]
    offsets = [torch.rand(b, t, c, 2) * 4 for t in lengths]
    masks = [torch.ones(b, t, dtype=torch.bool) for t in lengths]
    out = DetectorOutput(logits, offsets, masks, [1, 2, 4, 8, 16, 32])
    start = time.perf_counter()
    events = postprocess(out, [TimeGrid(0.48, 0.32)] * b, [72.0] * b, PostprocessConfig(), None)
    elapsed = time.perf_counter() - start
    assert all(len(e) == 100 for e in events)
    assert elapsed < 8.0, f"postprocess took {elapsed:.2f} s for {b} videos"
