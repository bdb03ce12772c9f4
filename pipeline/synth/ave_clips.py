"""AVE-style clips (`avdet make-sample --ave`): 10 s, one event class per clip with whole-second boundaries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avdet.errors import ConfigError
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.synth.clips import (
    SUBSETS,
    Kind,
    Occurrence,
    SampleConfig,
    VideoPlan,
    _occurrence,
    check_sample_dir,
    class_names,
    classes_tsv,
    make_id,
    split_counts,
    validate,
    write_clips,
)

log = logging.getLogger(__name__)


AVE_SECONDS = 10  # AVE clips: ten 1 s segments


AVE_HEADER = "Category&VideoID&Quality&StartTime&EndTime"


AVE_SPLIT_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}


_AVE_TAG = 0xA7E  # mixed into the seed, so an AVE sample and a dense sample of the same seed differ


@dataclass
class AveSampleConfig:
    num_videos: int = 60
    seed: int = 0
    num_classes: int = 5
    width: int = 320
    height: int = 180
    fps: float = 25.0
    sample_rate: int = 22050
    channels: int = 2
    audio_bitrate: str = "96k"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, validation, test
    distractors: bool = True  # audio-only / visual-only occurrences inside background segments
    min_event: int = 2  # seconds
    full_share: float = 0.25  # clips whose event fills all ten segments (common in AVE)
    workers: int = 0

    def clip_config(self) -> SampleConfig:
        """The dense-sample configuration the shared renderer and encoder read (10 s clips)."""
        return SampleConfig(
            num_videos=self.num_videos,
            seed=self.seed,
            min_duration=AVE_SECONDS,
            max_duration=AVE_SECONDS,
            width=self.width,
            height=self.height,
            fps=self.fps,
            sample_rate=self.sample_rate,
            channels=self.channels,
            num_classes=self.num_classes,
            split=self.split,
            distractors=self.distractors,
            min_event=1.0,
            max_event=AVE_SECONDS,
            workers=self.workers,
            audio_bitrate=self.audio_bitrate,
        )


def validate_ave(cfg: AveSampleConfig) -> None:
    validate(cfg.clip_config())
    frames = cfg.fps * AVE_SECONDS
    if abs(frames - round(frames)) > 1e-9:
        raise ConfigError(f"fps must give a whole number of frames in {AVE_SECONDS} s, got {cfg.fps}")
    if not 1 <= cfg.min_event <= AVE_SECONDS:
        raise ConfigError(f"min_event must be between 1 and {AVE_SECONDS} seconds, got {cfg.min_event}")
    if not 0 <= cfg.full_share <= 1:
        raise ConfigError(f"full_share must be in [0, 1], got {cfg.full_share}")


def _ave_distractor(
    rng: np.random.Generator, label: int, event: tuple[int, int], gap: tuple[int, int], cfg: AveSampleConfig
) -> Occurrence | None:
    """An audio-only or visual-only occurrence on whole background segments of `gap` (or None if it cannot fit).

    Half the time it is the event's own class (its sound without its object, or the reverse): exactly what AVE calls
    background. A same-class distractor keeps one segment away from the event so that the event keeps its edges.
    """
    kind: Kind = "audio_only" if rng.random() < 0.5 else "visual_only"
    same = rng.random() < 0.5
    cls = label if same else int((label + rng.integers(1, cfg.num_classes)) % cfg.num_classes)
    lo, hi = gap
    if same:
        lo, hi = (lo + 1, hi) if lo == event[1] else (lo, hi - 1)
    if hi - lo < 1:
        return None
    length = int(rng.integers(1, hi - lo + 1))
    start = int(rng.integers(lo, hi - length + 1))
    return _occurrence(rng, cls, kind, float(start), float(start + length), cfg.clip_config())


def plan_ave_video(ss: np.random.SeedSequence, index: int, subset: str, cfg: AveSampleConfig) -> VideoPlan:
    """One 10 s clip: one audio-visual event on whole segments [start, end), background elsewhere."""
    plan_ss, render_ss = ss.spawn(2)
    rng = np.random.default_rng(plan_ss)
    video_id = make_id(rng, index)
    label = int(rng.integers(cfg.num_classes))
    if rng.random() < cfg.full_share or cfg.min_event >= AVE_SECONDS:
        start, end = 0, AVE_SECONDS
    else:
        length = int(rng.integers(cfg.min_event, AVE_SECONDS))  # min_event .. 9 segments
        start = int(rng.integers(0, AVE_SECONDS - length + 1))
        end = start + length
    occurrences = [_occurrence(rng, label, "event", float(start), float(end), cfg.clip_config())]
    if cfg.distractors:
        for gap in ((0, start), (end, AVE_SECONDS)):
            if gap[1] > gap[0] and rng.random() < 0.6:
                extra = _ave_distractor(rng, label, (start, end), gap, cfg)
                if extra is not None:
                    occurrences.append(extra)
    occurrences.sort(key=lambda o: (o.start, o.end, o.label_id))
    render_seed = int(render_ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    num_frames = int(round(cfg.fps * AVE_SECONDS))
    return VideoPlan(video_id, subset, num_frames / cfg.fps, num_frames, tuple(occurrences), render_seed)


def plan_ave_dataset(cfg: AveSampleConfig) -> list[VideoPlan]:
    """Every AVE-style clip's plan, deterministic for `cfg.seed`; ids are unique."""
    validate_ave(cfg)
    video_ss, split_ss = np.random.SeedSequence([cfg.seed, _AVE_TAG]).spawn(2)
    counts = split_counts(cfg.num_videos, cfg.split)
    subsets = np.repeat(np.arange(3), counts)[np.random.default_rng(split_ss).permutation(cfg.num_videos)]
    plans, seen = [], set()
    for index, ss in enumerate(video_ss.spawn(cfg.num_videos)):
        plan = plan_ave_video(ss, index, SUBSETS[int(subsets[index])], cfg)
        while plan.video_id in seen:
            ss = ss.spawn(1)[0]
            plan = plan_ave_video(ss, index, plan.subset, cfg)
        seen.add(plan.video_id)
        plans.append(plan)
    return plans


def ave_annotation_lines(plans: list[VideoPlan], num_classes: int) -> list[str]:
    """One `Category&VideoID&Quality&StartTime&EndTime` line per clip (integer seconds), in plan order."""
    names = class_names(num_classes)
    lines = []
    for plan in plans:
        (event,) = plan.events()
        lines.append(f"{names[event.label_id]}&{plan.video_id}&good&{round(event.start)}&{round(event.end)}")
    return lines


def make_ave_sample(
    out_dir: Path,
    cfg: AveSampleConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an AVE-style set: out_dir/videos/<id>.mp4, Annotations.txt (with the header line), trainSet.txt,
    valSet.txt, testSet.txt and classes.tsv (label ids; background is the next id); return Annotations.txt's path.

    As in the AVE release, the split files repeat the annotation lines of their videos (without a header). The
    text files are written last, so they exist only when every clip does; a re-run resumes an interrupted one.
    """
    cfg = cfg or AveSampleConfig()
    plans = plan_ave_dataset(cfg)
    out_dir = Path(out_dir)
    names = ["classes.tsv", "Annotations.txt", *AVE_SPLIT_FILES.values()]
    check_sample_dir(out_dir, [p.video_id for p in plans], names, overwrite)
    videos = write_clips(out_dir, plans, cfg.clip_config(), progress)
    lines = ave_annotation_lines(plans, cfg.num_classes)
    for subset, name in AVE_SPLIT_FILES.items():
        chosen = [line for line, plan in zip(lines, plans, strict=True) if plan.subset == subset]
        write_text_atomic(out_dir / name, "".join(f"{line}\n" for line in chosen))
    write_text_atomic(out_dir / "classes.tsv", classes_tsv(plans, cfg.clip_config()))
    target = out_dir / "Annotations.txt"
    write_text_atomic(target, "".join(f"{line}\n" for line in [AVE_HEADER, *lines]))
    log.info("wrote %d AVE-style clips to %s", len(plans), videos)
    return target
