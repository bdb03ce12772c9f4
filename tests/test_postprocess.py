"""Decoding and soft-NMS: a line-by-line port of the reference C++ loop is the oracle, ties included."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from avdet.errors import ConfigError
from avdet.models.base import DetectorOutput
from avdet.pipeline.nms import NMSSettings, batched_nms, segment_voting
from avdet.pipeline.postprocess import PostprocessConfig, decode_video, postprocess
from avdet.pipeline.types import Event, TimeGrid
from conftest import reference_postprocess, video_nms


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
        _check_against_transcription(segs, scores, labels, sigma, min_score, max_num)


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
        got_segs, got_scores, got_labels = video_nms(
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
    out_segs, out_scores, out_labels = video_nms(segs, scores, labels, PostprocessConfig(nms_method="hard"))
    assert out_segs.tolist() == [[0.0, 10.0], [5.0, 15.0]] and out_labels.tolist() == [0, 0]
    assert out_scores.tolist() == pytest.approx([0.9, 0.7])
    _, sc, _ = video_nms(segs, scores, labels, PostprocessConfig(nms_method="hard", iou_threshold=0.3))
    assert sc.tolist() == pytest.approx([0.9])
    # "none": the reference skips NMS and its limits, candidates stay in their order
    none = video_nms(segs, scores, labels, PostprocessConfig(nms_method="none", max_seg_num=1))
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
        batched = batched_nms(segs, scores, labels, video, 5, cfg.nms)
        assert len(batched) == 5 and len(batched[1][1]) == 0 and len(batched[4][1]) == 0
        for v, (s, sc, lab) in enumerate(parts):
            alone = video_nms(torch.from_numpy(s).reshape(-1, 2), torch.from_numpy(sc), torch.from_numpy(lab), cfg)
            for got, want in zip(batched[v], alone, strict=True):
                assert torch.equal(got, want)


def test_every_reference_test_cfg_key_maps_to_a_postprocess_field():
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
    cfg = reference_postprocess(test_cfg)
    assert (cfg.pre_nms_thresh, cfg.pre_nms_topk, cfg.iou_threshold, cfg.min_score) == (0.01, 500, 0.6, 0.002)
    assert (cfg.max_seg_num, cfg.nms_method, cfg.sigma, cfg.duration_thresh) == (50, "hard", 0.5, 0.1)
    assert (cfg.multiclass, cfg.voting_thresh) == (False, 0.9)
    with pytest.raises(AssertionError, match="external classification scores"):
        reference_postprocess({"ext_score_file": "scores.json"})
    with pytest.raises(AssertionError, match="unknown reference test_cfg key 'bogus'"):
        reference_postprocess({"bogus": 1})
    with pytest.raises(ConfigError, match="nms_method"):
        PostprocessConfig(nms_method="linear")


def test_soft_nms_decays_overlaps_and_keeps_disjoint():
    segs = torch.tensor([[0.0, 10.0], [0.0, 10.0], [20.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 0])
    out_segs, out_scores, _ = video_nms(segs, scores, labels, sigma=0.5, min_score=0.001, max_seg_num=10)
    # identical segment: iou ~1 -> 0.8 * exp(-1 / 0.5); the disjoint one keeps its score
    assert out_scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-2.0)], rel=1e-5)
    assert out_segs[1].tolist() == [20.0, 30.0]
    # another class is not suppressed
    _, sc2, lab2 = video_nms(segs, scores, torch.tensor([0, 1, 0]), sigma=0.5, min_score=0.001, max_seg_num=10)
    assert sc2.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert lab2.tolist() == [0, 1, 0]


def test_soft_nms_empty_and_limits():
    segs, scores, labels = video_nms(
        torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long), sigma=0.4, min_score=0.001, max_seg_num=5
    )
    assert segs.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)
    rng = np.random.default_rng(3)
    s, sc, lab = _random_case(rng, 300, 4, False)
    _, out_scores, _ = video_nms(
        torch.from_numpy(s), torch.from_numpy(sc), torch.from_numpy(lab), sigma=0.4, min_score=0.001, max_seg_num=17
    )
    assert len(out_scores) == 17
    assert torch.all(out_scores[:-1] >= out_scores[1:])


def test_class_agnostic_nms_with_voting():
    segs = torch.tensor([[0.0, 10.0], [1.0, 10.0], [30.0, 40.0]])
    scores = torch.tensor([0.9, 0.6, 0.5])
    labels = torch.tensor([0, 1, 2])
    out_segs, out_scores, out_labels = video_nms(
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


CONFIG_ERRORS = {  # one bad field each -> the whole message a config user sees
    "nms_method": ("linear", "postprocess.nms_method must be one of soft, hard, none"),
    "sigma": (0.0, "postprocess.sigma must be > 0"),
    "iou_threshold": (1.5, "postprocess.iou_threshold must be in [0, 1]"),
    "pre_nms_topk": (0, "postprocess.pre_nms_topk must be >= 1"),
    "max_seg_num": (0, "postprocess.max_seg_num must be >= 1"),
    "pre_nms_thresh": (1.0, "postprocess.pre_nms_thresh must be in [0, 1)"),
    "min_score": (-0.1, "postprocess.min_score must be in [0, 1)"),
    "duration_thresh": (-1.0, "postprocess.duration_thresh must be >= 0"),
    "voting_thresh": (2.0, "postprocess.voting_thresh must be in [0, 1]"),
    "output_threshold": (1.1, "postprocess.output_threshold must be in [0, 1]"),
}


@pytest.mark.parametrize("field", sorted(CONFIG_ERRORS))
def test_each_bad_field_gives_its_config_message(field):
    value, message = CONFIG_ERRORS[field]
    with pytest.raises(ConfigError) as err:
        PostprocessConfig(**{field: value})
    assert str(err.value) == message
    if field in ("pre_nms_topk", "pre_nms_thresh", "duration_thresh", "output_threshold"):
        return
    with pytest.raises(ConfigError) as err:  # the same check, on the NMS settings alone
        NMSSettings(**{"method" if field == "nms_method" else field: value})
    assert str(err.value) == message


def test_nms_settings_are_the_configs_nms_fields_frozen():
    from dataclasses import FrozenInstanceError, fields

    names = {"method": "nms_method"}  # NMSSettings field -> PostprocessConfig field
    assert PostprocessConfig().nms == NMSSettings()  # same defaults: the UnAV reference test settings
    cfg = PostprocessConfig(
        nms_method="hard", sigma=0.5, iou_threshold=0.6, min_score=0.01, max_seg_num=7, multiclass=False
    )
    cfg.voting_thresh = 0.9  # a config changed after construction: `nms` follows it
    for f in fields(NMSSettings):
        assert getattr(cfg.nms, f.name) == getattr(cfg, names.get(f.name, f.name)), f.name
    with pytest.raises(FrozenInstanceError):
        cfg.nms.sigma = 0.1  # type: ignore[misc]


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


# -- the early stop, the large-block decay and the float32 exp ------------------------------------------------------
def _check_against_transcription(segs, scores, labels, sigma, min_score, max_num):
    want_idx, want_scores = reference_batched(segs, scores, labels, sigma, min_score, max_num)
    got_segs, got_scores, got_labels = video_nms(
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


@pytest.mark.parametrize("quantise", [False, True])
def test_early_stop_with_many_classes_keeps_the_reference_top(quantise):
    """Many classes, few kept: most classes stop after a pick or two. With quantised scores, equal scores across
    classes sit at the cut, where the final order (class, then pick order) decides what is kept."""
    rng = np.random.default_rng(21 if quantise else 22)
    for trial in range(8):
        segs, scores, labels = _random_case(rng, int(rng.integers(50, 400)), int(rng.integers(10, 40)), quantise)
        max_num = [5, 12, 30, 1][trial % 4]
        _check_against_transcription(segs, scores, labels, 0.4, 0.001, max_num)


@pytest.mark.parametrize("quantise", [False, True])
def test_large_block_decay_matches_the_dense_one(quantise, monkeypatch):
    """Blocks above _DENSE_SIZE decay only the overlapping candidates: forced on small cases, same results."""
    import avdet.pipeline.nms as nms

    monkeypatch.setattr(nms, "_DENSE_SIZE", 0)
    rng = np.random.default_rng(31 if quantise else 32)
    for trial in range(10):
        segs, scores, labels = _random_case(rng, int(rng.integers(1, 150)), int(rng.integers(1, 8)), quantise)
        sigma, min_score, max_num = [0.4, 0.9, 0.1][trial % 3], [0.001, 0.05, 0.3][trial % 3], [100, 7, 3][trial % 3]
        _check_against_transcription(segs, scores, labels, sigma, min_score, max_num)


def test_batched_early_stop_per_video():
    """Each video stops its classes against its own best max_seg_num, whatever the other videos hold."""
    rng = np.random.default_rng(41)
    parts = [_random_case(rng, n, 25, q) for n, q in ((300, False), (5, True), (200, True), (120, False))]
    segs = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    scores = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[2] for p in parts]))
    video = torch.repeat_interleave(torch.arange(4), torch.tensor([len(p[1]) for p in parts]))
    batched = batched_nms(segs, scores, labels, video, 4, NMSSettings(sigma=0.4, min_score=0.001, max_seg_num=10))
    for (s, sc, lab), got in zip(parts, batched, strict=True):
        want_idx, want_scores = reference_batched(s, sc, lab, 0.4, 0.001, 10)
        assert got[2].tolist() == lab[want_idx].tolist()
        np.testing.assert_array_equal(got[0].numpy(), s[want_idx].reshape(-1, 2))
        np.testing.assert_allclose(got[1].numpy(), want_scores, rtol=1e-6, atol=0)


def test_expf_is_glibc_expf():
    """The Gaussian weight's exp gives glibc's float32 expf, as the reference's std::exp(float): bit for bit."""
    import ctypes
    import ctypes.util

    from avdet.pipeline.nms import _expf

    x = np.array([0.0, -0.0, -1.0, -2.5, -1e-8], dtype=np.float32)
    np.testing.assert_array_equal(
        _expf(x).view(np.uint32), [0x3F800000, 0x3F800000, 0x3EBC5AB2, 0x3DA81C2E, 0x3F800000]
    )
    libm = ctypes.util.find_library("m")
    if libm is None or "libm.so.6" not in libm:
        pytest.skip("not glibc: no expf to compare with")
    expf = ctypes.CDLL(libm).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    ovr = np.random.default_rng(0).random(20000).astype(np.float32)
    arg = -(ovr * ovr) / np.float32(0.4)
    want = np.array([expf(float(a)) for a in arg], dtype=np.float32)
    np.testing.assert_array_equal(_expf(arg), want)
    assert (np.exp(arg.astype(np.float64)).astype(np.float32) != want).any()  # a float64 exp would not do


def test_tiny_sigma_decays_to_zero_as_the_reference():
    """sigma < 0.01: exp(-ovr^2 / sigma) underflows to 0 (glibc's expf flushes below -103.97); with min_score 0
    the zeroed scores stay, in the reference's order."""
    rng = np.random.default_rng(51)
    for _ in range(4):
        segs, scores, labels = _random_case(rng, int(rng.integers(20, 80)), 2, False)
        _check_against_transcription(segs, scores, labels, 0.005, 0.0, 30)


def test_expf_is_glibc_expf_over_the_whole_range():
    """Arguments down to -110 (tiny sigma), where the scale table runs to its far end and glibc flushes to 0."""
    import ctypes
    import ctypes.util

    from avdet.pipeline.nms import _expf

    libm = ctypes.util.find_library("m")
    if libm is None or "libm.so.6" not in libm:
        pytest.skip("not glibc: no expf to compare with")
    expf = ctypes.CDLL(libm).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    edges = [-110.0, -109.99, -104.0, -103.97, -103.9, -87.3, -0.5, -1e-30]
    arg = np.concatenate([np.random.default_rng(1).uniform(-110, 0, 20000), edges]).astype(np.float32)
    want = np.array([expf(float(a)) for a in arg], dtype=np.float32)
    np.testing.assert_array_equal(_expf(arg).view(np.uint32), want.view(np.uint32))


def _tie_free_picks(segs, scores, labels, video, sigma, min_score, max_keep):
    """`_soft_picks` (None at a tied maximum) and the order-tracking `_pick_loop` on the same groups."""
    import avdet.pipeline.nms as kernel

    n_cls = int(labels.max()) + 1
    order, row, col, row_key = kernel._layout(video * n_cls + labels)
    row_video, shape = row_key // n_cls, (len(row_key), int(col.max()) + 1)
    geo = np.zeros((3, *shape), dtype=np.float32)
    geo[:2, row, col] = segs[order].T
    np.add(geo[1] - geo[0], np.float32(1e-6), out=geo[2])
    settings = NMSSettings(sigma=sigma, min_score=min_score, max_seg_num=max_keep, iou_threshold=0.7)
    fast = kernel._soft_picks(geo.copy(), kernel._padded(scores[order], row, col, shape, -np.inf), row_video, settings)
    score = kernel._padded(scores[order], row, col, shape, -np.inf)
    slot = np.tile(np.arange(shape[1]), (shape[0], 1))
    groups = kernel._Groups(geo, score, score > -np.inf, slot, np.arange(shape[0]), row_video)
    return fast, kernel._pick_loop(groups, settings)


@pytest.mark.parametrize("min_score", [0.0, 0.001, 0.3])
def test_untracked_soft_loop_matches_the_order_tracking_one(min_score):
    """The fast soft-NMS loop leaves dropped candidates in place: without tied maxima it makes the same picks as the
    loop that tracks the reference's array order, also for classes whose every score is below min_score (picked
    once, at step 0), with tiny sigma and with several videos."""
    rng = np.random.default_rng(61)
    compared = 0
    for trial in range(8):
        n, n_cls = int(rng.integers(30, 300)), int(rng.integers(2, 12))
        segs, scores, labels = _random_case(rng, n, n_cls, False)
        below = (labels == 0) & (min_score > 0)
        scores[below] = (min_score * rng.uniform(0.2, 0.9, below.sum())).astype(np.float32)  # class 0: all below
        video = np.sort(rng.integers(0, 2, n))
        fast, tracked = _tie_free_picks(segs, scores, labels, video, [0.4, 0.005][trial % 2], min_score, 20)
        if fast is None:  # a tied maximum (with min_score 0, scores of 0 at class 0 or after a tiny sigma's decay)
            continue
        compared += 1
        for got, want in zip(fast, tracked, strict=True):
            np.testing.assert_array_equal(got, want)
    assert compared >= 3
