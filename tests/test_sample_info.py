"""make-sample's per-stream informativeness levels (`visual_info`, `audio_info`): each reaches the media it
renders, the plan and the audio-visual ground truth never change, and "full" renders exactly what it did before."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import ConfigError
from avdet.pipeline.synth import clips as sample
from avdet.pipeline.synth.clips import CATALOGUE, SampleConfig, plan_dataset, shown_occurrences

TINY = SampleConfig(num_videos=3, seed=3, min_duration=4.0, max_duration=6.0, width=96, height=64)


def _frames(plan: sample.VideoPlan, cfg: SampleConfig) -> np.ndarray:
    return np.concatenate(list(sample.render_frames(plan, cfg)))  # (n, H, W, 3)


def _colour_pixels(frames: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Pixels per frame within 45 of a class colour on every channel: (n,)."""
    diff = np.abs(frames.astype(np.int16) - np.asarray(rgb, np.int16))
    return (diff.max(axis=-1) <= 45).sum(axis=(1, 2))


def _with(**change: str) -> SampleConfig:
    return dataclasses.replace(TINY, **change)


def test_full_is_the_plan_and_levels_keep_plan_and_audio_visual_truth() -> None:
    plans = plan_dataset(TINY)
    for level in sample.STREAM_LEVELS["visual"]:
        cfg = _with(visual_info=level)
        assert plan_dataset(cfg) == plans  # the plan (and so the audio-visual events) never changes
        assert sample.annotations(plans, cfg) == sample.annotations(plans, TINY)
    for plan in plans:
        assert shown_occurrences(plan, TINY, "visual") == tuple(o for o in plan.occurrences if o.visible)
        assert shown_occurrences(plan, TINY, "audio") == tuple(o for o in plan.occurrences if o.audible)


@pytest.mark.parametrize("level", ["weak", "unrelated", "crowded", "static"])
def test_each_visual_level_reaches_the_frames_and_leaves_the_sound(level: str) -> None:
    cfg = _with(visual_info=level)
    # "weak" moves each object with probability 1/2: take a clip where it moved one
    plan = next(
        p for p in plan_dataset(TINY) if shown_occurrences(p, cfg, "visual") != shown_occurrences(p, TINY, "visual")
    )
    full, frames = _frames(plan, TINY), _frames(plan, cfg)
    assert frames.shape == full.shape and not np.array_equal(frames, full)
    assert np.array_equal(sample.render_audio(plan, cfg), sample.render_audio(plan, TINY))
    assert sample.clip_fingerprint(plan, cfg) != sample.clip_fingerprint(plan, TINY)
    colours = np.stack([_colour_pixels(frames, spec.rgb) for spec in CATALOGUE[: TINY.num_classes]])  # (C, n)
    if level == "static":  # one frame, no object
        assert (frames == frames[:1]).all() and colours.max() == 0
    elif level == "crowded":  # every class on screen in every frame
        assert (colours > 0).all()


@pytest.mark.parametrize("level", ["weak", "unrelated", "crowded", "silent"])
def test_each_audio_level_reaches_the_soundtrack_and_leaves_the_picture(level: str) -> None:
    cfg = _with(audio_info=level)
    plan = next(
        p for p in plan_dataset(TINY) if shown_occurrences(p, cfg, "audio") != shown_occurrences(p, TINY, "audio")
    )
    full, wave = sample.render_audio(plan, TINY), sample.render_audio(plan, cfg)
    assert wave.shape == full.shape and not np.array_equal(wave, full)
    assert np.array_equal(_frames(plan, cfg), _frames(plan, TINY))
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    if level == "silent":
        assert rms < 0.01  # the background hiss alone
    elif level == "crowded":
        assert rms > float(np.sqrt(np.mean(full.astype(np.float64) ** 2)))


def test_unrelated_and_weak_move_the_shown_occurrences() -> None:
    cfg = SampleConfig(num_videos=40, seed=1)
    plans = plan_dataset(cfg)
    for level, lo, hi in (("weak", 0.25, 0.75), ("unrelated", 0.0, 0.3)):
        kept = total = 0
        for plan in plans:
            real = [o for o in plan.occurrences if o.visible]
            shown = shown_occurrences(plan, dataclasses.replace(cfg, visual_info=level), "visual")
            assert len(shown) == len(real)
            kept += sum(s == o for s, o in zip(shown, real, strict=True))
            total += len(real)
        # a moved occurrence may land on its own class and time by chance; "unrelated" keeps none on purpose
        assert lo <= kept / total <= hi, (level, kept, total)


def test_unimodal_truth_is_what_the_stream_shows(tmp_path: Path) -> None:
    cfg = _with(visual_info="unrelated", audio_info="silent")
    sample.make_sample(tmp_path, cfg)
    visual = json.loads((tmp_path / "annotations_visual.json").read_text())["database"]
    audio = json.loads((tmp_path / "annotations_audio.json").read_text())["database"]
    plans = {p.video_id: p for p in plan_dataset(cfg)}
    for video_id, entry in visual.items():
        shown = shown_occurrences(plans[video_id], cfg, "visual")
        assert sorted(a["segment"][0] for a in entry["annotations"]) == sorted(round(o.start, 4) for o in shown)
        assert audio[video_id]["annotations"] == []


@pytest.mark.parametrize("change", [{"visual_info": "blurry"}, {"audio_info": "static"}])
def test_unknown_levels_are_config_errors(change: dict) -> None:
    with pytest.raises(ConfigError, match="_info must be one of"):
        plan_dataset(_with(**change))
