"""Synthetic sample data: mp4 clips with overlapping audio-visual events, distractors and UnAV-100 ground truth.

Each class is a coloured shape moving over a textured, noisy background together with a sound of its own spectral
signature. An *event* is a span where a class's object is on screen AND its sound plays; audio-only (sound, no
object) and visual-only (object, no sound) distractors are in the media but not in the ground truth, as in
UnAV-100. The classes are told apart by colour, shape, motion and spectrum: what the `lite` extractor sees.

Everything follows from the seed: the plan (ids, durations, events, distractors, subsets) comes from per-video
`numpy.random.SeedSequence` children, so the first N videos of a larger run are the same N videos; rendering
uses its own child seeds, so frames and audio are identical whatever the chunking or the number of workers.
Files are written under a temporary name and renamed, so an interrupted run never leaves a half file behind, and
a manifest of finished clips (each with a fingerprint of its plan and encoding settings) lets a re-run resume: it
renders only the clips that are missing or were made with other settings.

`make_ave_sample` writes the segment-level variant: 10 s clips, one event class per clip with integer-second
boundaries, background segments (possibly holding a distractor), in the AVE annotation format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np

from avdet.errors import AvdetError, ConfigError, DataError
from avdet.pipeline.io import media
from avdet.pipeline.io.atomic import atomic_path, clean_stale_temps, write_text_atomic
from avdet.pipeline.io.guard import made_by_avdet

log = logging.getLogger(__name__)

SUBSETS = ("train", "validation", "test")
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ID_LENGTH = 11  # like YouTube ids, as in UnAV-100
MANIFEST = ".avdet-sample.json"  # in the output folder: fingerprints of the finished clips, for resuming
GENERATOR_VERSION = 1  # bump when rendering changes, so that resumed runs re-render old clips

Kind = Literal["event", "audio_only", "visual_only"]


@dataclass(frozen=True)
class ClassSpec:
    colour: str
    rgb: tuple[int, int, int]
    shape: str
    sound: str  # a kind `sound()` knows
    sound_name: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape} + {self.sound_name}"


# Saturated colours (the background is desaturated), distinct shapes, sounds in separate mel bands / patterns.
CATALOGUE: tuple[ClassSpec, ...] = (
    ClassSpec("red", (230, 40, 40), "circle", "tone", "440 Hz tone"),
    ClassSpec("green", (40, 200, 60), "square", "beeps", "1.2 kHz beeps"),
    ClassSpec("blue", (50, 80, 235), "triangle", "chirps", "rising chirps"),
    ClassSpec("yellow", (240, 220, 40), "ring", "buzz", "150 Hz buzz"),
    ClassSpec("magenta", (220, 50, 220), "cross", "hiss", "4-6 kHz hiss"),
    ClassSpec("cyan", (40, 220, 230), "diamond", "warble", "700 Hz warble"),
    ClassSpec("orange", (250, 140, 20), "bar", "clicks", "2 kHz clicks"),
    ClassSpec("white", (245, 245, 245), "star", "pulse", "90 Hz pulse"),
)


@dataclass
class SampleConfig:
    num_videos: int = 60
    seed: int = 0
    min_duration: float = 10.0  # seconds
    max_duration: float = 20.0
    width: int = 320
    height: int = 180
    fps: float = 25.0
    sample_rate: int = 22050  # AAC encoding dominates the run time: 22.05 kHz is ~1.4x faster than 44.1 kHz
    channels: int = 2
    num_classes: int = 5
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, validation, test
    distractors: bool = True
    min_event: float = 1.0  # seconds (events and distractors)
    max_event: float = 8.0
    max_overlap: int = 2  # at most this many objects/sounds at once
    workers: int = 0  # parallel clips; 0 = min(2, CPUs)
    audio_bitrate: str = "96k"
    # Harder pictures: objects this many times their usual size (0.12-0.18 of the short side; 0.3 gives 4-5 %) and
    # a busy background (saturated colour texture at full contrast), so whole-frame statistics barely see them.
    object_scale: float = 1.0
    busy_background: bool = False
    # Chance that a clip gets a mismatched pair: one class's object on screen while another class is heard, over
    # the same span. Neither is an audio-visual event; only a model that checks the streams agree rejects it.
    mismatched: float = 0.0
    # How much each stream tells about the events (`STREAM_LEVELS`): "full" renders what was planned; the others
    # keep the plan and the ground truth but render the stream from something else, down to a useless stream, the
    # regime of real footage whose features miss the classes (`shown_occurrences`).
    visual_info: str = "full"
    audio_info: str = "full"


# Informativeness levels of a stream, from fully informative to useless. "weak": each planned object (sound) is,
# with probability 1/2, shown (played) as a random class at a random time instead; "unrelated": all of them are;
# "crowded": every class is on screen (audible) for the whole clip; "static" (visual): one noiseless frame without
# objects; "silent" (audio): background hiss only.
STREAM_LEVELS: dict[str, tuple[str, ...]] = {
    "visual": ("full", "weak", "unrelated", "crowded", "static"),
    "audio": ("full", "weak", "unrelated", "crowded", "silent"),
}
WEAK_SHARE = 0.5  # share of a "weak" stream's occurrences that are moved to a random class and time


@dataclass(frozen=True)
class Occurrence:
    """One class's object and/or sound over [start, end) seconds (frame-aligned), moving on a bouncing path."""

    label_id: int
    kind: Kind
    start: float
    end: float
    size: float  # half-size of the shape, pixels
    x0: float  # centre at `start`, pixels
    y0: float
    vx: float  # pixels per second
    vy: float
    gain: float  # peak amplitude of the sound
    pan: float  # 0 = left, 1 = right

    @property
    def visible(self) -> bool:
        return self.kind != "audio_only"

    @property
    def audible(self) -> bool:
        return self.kind != "visual_only"


@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    subset: str
    duration: float  # seconds = num_frames / fps
    num_frames: int
    occurrences: tuple[Occurrence, ...]
    render_seed: int  # seeds the background, noise and noise-based sounds

    def events(self) -> list[Occurrence]:
        return [o for o in self.occurrences if o.kind == "event"]


# -- configuration -------------------------------------------------------------------------------------------------
def class_names(num_classes: int) -> list[str]:
    """Readable class names by label id, e.g. 'red circle + 440 Hz tone'."""
    if not 2 <= num_classes <= len(CATALOGUE):
        raise ConfigError(f"num_classes must be between 2 and {len(CATALOGUE)}, got {num_classes}")
    return [spec.name for spec in CATALOGUE[:num_classes]]


def validate(cfg: SampleConfig) -> None:
    """Raise a one-sentence ConfigError for a configuration the generator cannot honour."""
    class_names(cfg.num_classes)
    checks = [
        (cfg.num_videos >= 1, f"num_videos must be at least 1, got {cfg.num_videos}"),
        (cfg.min_event > 0 and cfg.max_event >= cfg.min_event, "need 0 < min_event <= max_event"),
        (
            2 * cfg.min_event <= cfg.min_duration <= cfg.max_duration,
            f"need 2 * min_event ({2 * cfg.min_event:g} s) <= min_duration <= max_duration,"
            f" got {cfg.min_duration:g} and {cfg.max_duration:g}",
        ),
        (
            cfg.width >= 32 and cfg.height >= 32 and cfg.width % 2 == 0 and cfg.height % 2 == 0,
            f"width and height must be even and at least 32 (yuv420p), got {cfg.width}x{cfg.height}",
        ),
        (0 < cfg.fps <= 120, f"fps must be in (0, 120], got {cfg.fps}"),
        (
            cfg.sample_rate >= 16000,
            f"sample_rate must be at least 16000 (the hiss class reaches 6 kHz), got {cfg.sample_rate}",
        ),
        (cfg.channels in (1, 2), f"channels must be 1 or 2, got {cfg.channels}"),
        (
            len(cfg.split) == 3 and min(cfg.split) >= 0 and sum(cfg.split) > 0,
            f"split must be three non-negative shares (train, validation, test), got {cfg.split}",
        ),
        (cfg.max_overlap >= 2, f"max_overlap must be at least 2 so that events can overlap, got {cfg.max_overlap}"),
        (cfg.workers >= 0, f"workers must be >= 0, got {cfg.workers}"),
        (0.1 <= cfg.object_scale <= 2.0, f"object_scale must lie in [0.1, 2], got {cfg.object_scale}"),
        (0.0 <= cfg.mismatched <= 1.0, f"mismatched must be a probability in [0, 1], got {cfg.mismatched}"),
        (
            cfg.visual_info in STREAM_LEVELS["visual"],
            f"visual_info must be one of {', '.join(STREAM_LEVELS['visual'])}, got {cfg.visual_info!r}",
        ),
        (
            cfg.audio_info in STREAM_LEVELS["audio"],
            f"audio_info must be one of {', '.join(STREAM_LEVELS['audio'])}, got {cfg.audio_info!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# -- planning ------------------------------------------------------------------------------------------------------
def split_counts(num_videos: int, shares: tuple[float, float, float]) -> list[int]:
    """Videos per subset by largest remainder; every subset with a positive share gets one when there are enough."""
    total = sum(shares)
    exact = [num_videos * s / total for s in shares]
    counts = [int(math.floor(x)) for x in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[: num_videos - sum(counts)]:
        counts[i] += 1
    positive = [i for i in range(3) if shares[i] > 0]
    if num_videos >= len(positive):
        for i in positive:
            while counts[i] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def make_id(rng: np.random.Generator, index: int) -> str:
    """An 11-character YouTube-like id; every 7th starts with '-' and every 7th (offset) with '_', as in UnAV-100."""
    chars = [ID_ALPHABET[i] for i in rng.integers(0, 62, size=ID_LENGTH)]  # letters and digits
    if index % 7 == 1:
        chars[0] = "-"
    elif index % 7 == 4:
        chars[0] = "_"
    return "".join(chars)


def _overlap_count(spans: list[tuple[float, float]], start: float, end: float) -> int:
    """Most existing spans active at once inside [start, end): the maximum is reached at one of their starts."""
    points = [start] + [s for s, _ in spans if start < s < end]
    return max(sum(1 for s, e in spans if s <= t < e) for t in points)


def _fits(placed: list[Occurrence], label: int, start: float, end: float, cfg: SampleConfig) -> bool:
    same = [(o.start, o.end) for o in placed if o.label_id == label]
    gap = 0.5  # a class's occurrences never touch, so each one has its own clear boundaries
    if any(start < e + gap and s < end + gap for s, e in same):
        return False
    return _overlap_count([(o.start, o.end) for o in placed], start, end) < cfg.max_overlap


def _occurrence(
    rng: np.random.Generator, label: int, kind: Kind, start: float, end: float, cfg: SampleConfig
) -> Occurrence:
    short = min(cfg.width, cfg.height)
    size = short * rng.uniform(0.12, 0.18) * cfg.object_scale
    speed = short * rng.uniform(0.3, 0.9)  # pixels per second
    angle = rng.uniform(0, 2 * np.pi)
    return Occurrence(
        label_id=label,
        kind=kind,
        start=start,
        end=end,
        size=float(size),
        x0=float(rng.uniform(size, cfg.width - size)),
        y0=float(rng.uniform(size, cfg.height - size)),
        vx=float(speed * np.cos(angle)),
        vy=float(speed * np.sin(angle)),
        gain=float(rng.uniform(0.2, 0.35)),
        pan=float(rng.uniform(0.2, 0.8)),
    )


def _place_mismatched_pair(
    rng: np.random.Generator,
    placed: list[Occurrence],
    draw_span: Callable[[], tuple[float, float]],
    cfg: SampleConfig,
) -> None:
    """Add a visual-only object of one class and an audio-only sound of another over one span, where both fit
    (rejection sampling; a crowded clip simply goes without)."""
    for _attempt in range(40):
        start, end = draw_span()
        seen, heard = (int(x) for x in rng.choice(cfg.num_classes, size=2, replace=False))
        visual = _occurrence(rng, seen, "visual_only", start, end, cfg)
        if _fits(placed, seen, start, end, cfg) and _fits([*placed, visual], heard, start, end, cfg):
            placed += [visual, _occurrence(rng, heard, "audio_only", start, end, cfg)]
            return


def plan_video(ss: np.random.SeedSequence, index: int, subset: str, cfg: SampleConfig) -> VideoPlan:
    """Draw one clip: its id, duration, events (with one overlapping pair) and distractors."""
    plan_ss, render_ss = ss.spawn(2)
    rng = np.random.default_rng(plan_ss)
    video_id = make_id(rng, index)
    num_frames = max(1, int(round(rng.uniform(cfg.min_duration, cfg.max_duration) * cfg.fps)))
    duration = num_frames / cfg.fps

    def span(start: float, length: float) -> tuple[float, float]:
        """Frame-aligned [start, end) inside the clip, at least `length` long (rounding never shortens it)."""
        n = min(num_frames, math.ceil(length * cfg.fps - 1e-6))
        first = min(max(0, round(start * cfg.fps)), num_frames - n)
        return first / cfg.fps, (first + n) / cfg.fps

    def draw_span(max_len: float) -> tuple[float, float]:
        length = rng.uniform(cfg.min_event, max(cfg.min_event, min(max_len, duration)))
        return span(rng.uniform(0, max(0.0, duration - length)), length)

    placed: list[Occurrence] = []
    labels = rng.permutation(cfg.num_classes)
    # An overlapping pair first: the second event starts inside the first, so every clip has overlaps.
    hi_a = max(cfg.min_event, min(cfg.max_event, 0.6 * duration))
    len_a = rng.uniform(min(max(cfg.min_event, 0.3 * duration), hi_a), hi_a)
    start_a = rng.uniform(0, duration - len_a)
    start_b = start_a + rng.uniform(0.2, 0.6) * len_a
    len_b = rng.uniform(cfg.min_event, max(cfg.min_event, min(cfg.max_event, duration - start_b)))
    start_b = min(start_b, duration - len_b)
    for label, start, length in ((labels[0], start_a, len_a), (labels[1], start_b, len_b)):
        placed.append(_occurrence(rng, int(label), "event", *span(start, length), cfg))

    # Distractors before the extra events, so that even a short, crowded clip gets them. A mismatched pair is
    # drawn only when asked for, so that clips planned without the option keep their plans.
    distractor_max = min(cfg.max_event / 2, 0.3 * duration)
    if cfg.mismatched > 0 and rng.random() < cfg.mismatched:
        _place_mismatched_pair(rng, placed, lambda: draw_span(distractor_max), cfg)
    kinds: list[Kind] = []
    if cfg.distractors:
        kinds += ["audio_only", "visual_only"] if rng.random() < 0.5 else ["visual_only", "audio_only"]
        if rng.random() < 0.3:
            kinds.append("audio_only" if rng.random() < 0.5 else "visual_only")
    kinds += ["event"] * int(rng.integers(0, 2 + int(duration // 8)))
    for kind in kinds:
        for _attempt in range(40):  # rejection sampling; a crowded clip simply gets fewer occurrences
            label = int(rng.integers(cfg.num_classes))
            start, end = draw_span(cfg.max_event if kind == "event" else distractor_max)
            if _fits(placed, label, start, end, cfg):
                placed.append(_occurrence(rng, label, kind, start, end, cfg))
                break
    placed.sort(key=lambda o: (o.start, o.end, o.label_id))
    render_seed = int(render_ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return VideoPlan(video_id, subset, duration, num_frames, tuple(placed), render_seed)


def plan_dataset(cfg: SampleConfig) -> list[VideoPlan]:
    """Every clip's plan, deterministic for `cfg.seed`; ids are unique."""
    validate(cfg)
    video_ss, split_ss = np.random.SeedSequence(cfg.seed).spawn(2)
    counts = split_counts(cfg.num_videos, cfg.split)
    subsets = np.repeat(np.arange(3), counts)[np.random.default_rng(split_ss).permutation(cfg.num_videos)]
    plans, seen = [], set()
    for index, ss in enumerate(video_ss.spawn(cfg.num_videos)):
        plan = plan_video(ss, index, SUBSETS[int(subsets[index])], cfg)
        while plan.video_id in seen:  # astronomically rare; re-draw deterministically
            ss = ss.spawn(1)[0]
            plan = plan_video(ss, index, plan.subset, cfg)
        seen.add(plan.video_id)
        plans.append(plan)
    return plans


# -- what each stream shows -----------------------------------------------------------------------------------------
def _level(cfg: SampleConfig, stream: str) -> str:
    return cfg.visual_info if stream == "visual" else cfg.audio_info


def _moved(
    rng: np.random.Generator, occ: Occurrence, duration: float, fps: float, kind: Kind, classes: int
) -> Occurrence:
    """`occ` as a random class at a random frame-aligned time of the clip (same length, path and loudness)."""
    length = occ.end - occ.start
    first = round(rng.uniform(0, max(0.0, duration - length)) * fps)
    start = first / fps
    return dataclasses.replace(
        occ, label_id=int(rng.integers(classes)), kind=kind, start=start, end=min(duration, start + length)
    )


def shown_occurrences(plan: VideoPlan, cfg: SampleConfig, stream: str) -> tuple[Occurrence, ...]:
    """What the `stream` ("visual" or "audio") of a clip renders at the configured informativeness level.

    "full" is every planned visible (audible) occurrence, so default clips render exactly as before. The other
    levels draw from a child seed of their own (never from the plan's or the renderer's draws), so the plan, the
    ground truth and the other stream stay the same clip for clip; only this stream stops telling the truth.
    """
    if stream not in STREAM_LEVELS:
        raise ValueError(f"stream must be 'visual' or 'audio', not {stream!r}")
    real = [o for o in plan.occurrences if (o.visible if stream == "visual" else o.audible)]
    level = _level(cfg, stream)
    if level == "full":
        return tuple(real)
    if level in ("static", "silent"):
        return ()
    kind: Kind = "visual_only" if stream == "visual" else "audio_only"
    rng = np.random.default_rng(np.random.SeedSequence(plan.render_seed).spawn(4)[2 if stream == "visual" else 3])
    if level == "crowded":  # every class all the time: presence says nothing about any event
        return tuple(_occurrence(rng, label, kind, 0.0, plan.duration, cfg) for label in range(cfg.num_classes))
    share = WEAK_SHARE if level == "weak" else 1.0
    moved = rng.random(len(real)) < share
    return tuple(
        _moved(rng, o, plan.duration, cfg.fps, kind, cfg.num_classes) if m else o
        for o, m in zip(real, moved, strict=True)
    )


# -- pictures ------------------------------------------------------------------------------------------------------
def shape_mask(shape: str, size: float) -> np.ndarray:
    """Boolean (2r+1, 2r+1) mask of a shape with half-size r = round(size)."""
    r = max(2, int(round(size)))
    y, x = np.mgrid[-r : r + 1, -r : r + 1] / r  # (2r+1, 2r+1) coordinates in [-1, 1]
    rho = np.hypot(x, y)
    if shape == "circle":
        return rho <= 1.0
    if shape == "square":
        return (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)
    if shape == "triangle":
        return (y <= 0.8) & (y >= 2 * np.abs(x) - 1.0)
    if shape == "ring":
        return (rho <= 1.0) & (rho >= 0.55)
    if shape == "cross":
        return (np.abs(x) <= 0.3) | (np.abs(y) <= 0.3)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if shape == "bar":
        return (np.abs(x) <= 1.0) & (np.abs(y) <= 0.35)
    if shape == "star":
        return rho <= 0.5 + 0.5 * np.cos(5 * np.arctan2(y, x)) ** 2
    raise ValueError(f"unknown shape {shape!r}")


def _bounce(p0: float, v: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions at times t of a point moving at speed v that reflects off lo and hi (a triangle wave)."""
    span = max(hi - lo, 1e-6)
    u = np.mod(p0 - lo + v * t, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A desaturated textured background (H, W, 3) float32: gratings and soft blobs around a grey tint."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 130) + rng.uniform(-12, 12, size=3)  # grey with a slight tint
    texture = np.zeros((height, width), np.float32)
    for _ in range(3):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.12)  # cycles per pixel
        phase = rng.uniform(0, 2 * np.pi)
        texture += rng.uniform(4, 10) * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    coarse = rng.normal(0, 12, size=(height // 8 + 2, width // 8 + 2)).astype(np.float32)
    texture += np.kron(coarse, np.ones((8, 8), np.float32))[:height, :width]  # blocky patches
    return base[None, None, :].astype(np.float32) + texture[:, :, None]


def busy_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colourful, high-contrast background (H, W, 3) float32: per-channel gratings and coloured patches, as
    saturated as the objects, so an object's colour is not unusual in the frame as a whole."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((height, width, 3), np.float32)
    for c in range(3):
        layer = np.full((height, width), rng.uniform(60, 190), np.float32)
        for _ in range(3):
            angle, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.15)
            phase = rng.uniform(0, 2 * np.pi)
            layer += rng.uniform(15, 35) * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        out[..., c] = layer
    cell = 12
    patches = rng.uniform(-60, 60, size=(height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    out += np.kron(patches, np.ones((cell, cell, 1), np.float32))[:height, :width]
    return out


def render_frames(plan: VideoPlan, cfg: SampleConfig, chunk: int = 25) -> Iterator[np.ndarray]:
    """The clip's RGB frames as uint8 chunks (n, H, W, 3); frame i shows time i / fps."""
    rng = np.random.default_rng(np.random.SeedSequence(plan.render_seed).spawn(2)[0])
    h, w = cfg.height, cfg.width
    bg = (busy_background if cfg.busy_background else background)(rng, h, w)
    # A bank of noisy backgrounds, cycled at random: per-frame sensor noise without drawing it per frame.
    bank = np.clip(bg[None] + rng.normal(0, 5, size=(8, h, w, 3)), 0, 255).astype(np.uint8)  # (8, H, W, 3)
    pick = rng.integers(0, len(bank), size=plan.num_frames)
    if cfg.visual_info == "static":  # one frame throughout: no sensor noise either, nothing moves
        bank, pick = np.clip(bg, 0, 255).astype(np.uint8)[None], np.zeros_like(pick)
    times = np.arange(plan.num_frames) / cfg.fps
    tracks = []
    for occ in shown_occurrences(plan, cfg, "visual"):
        spec = CATALOGUE[occ.label_id]
        mask = shape_mask(spec.shape, occ.size)
        r = mask.shape[0] // 2
        first, last = round(occ.start * cfg.fps), round(occ.end * cfg.fps)  # frames [first, last)
        local = times[first:last] - occ.start
        cx = np.rint(_bounce(occ.x0, occ.vx, local, r, w - 1 - r)).astype(np.int64)
        cy = np.rint(_bounce(occ.y0, occ.vy, local, r, h - 1 - r)).astype(np.int64)
        shade = np.clip(np.asarray(spec.rgb)[None] + rng.normal(0, 4, size=(len(local), 1)), 0, 255)
        tracks.append((first, last, mask, r, cx, cy, shade.astype(np.uint8)))
    for lo in range(0, plan.num_frames, chunk):
        out = bank[pick[lo : lo + chunk]]  # (n, H, W, 3) copy
        for i in range(len(out)):
            f = lo + i
            for first, last, mask, r, cx, cy, shade in tracks:
                if first <= f < last:
                    k = f - first
                    patch = out[i, cy[k] - r : cy[k] + r + 1, cx[k] - r : cx[k] + r + 1]
                    patch[mask] = shade[k]
        yield out


# -- sounds --------------------------------------------------------------------------------------------------------
def _sine(freq: float | np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * freq * t)


def _fm(freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """A sine whose instantaneous frequency follows `freq` (Hz per sample)."""
    return np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)


def _band_noise(rng: np.random.Generator, n: int, sample_rate: int, lo: float, hi: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum[(freqs < lo) | (freqs > hi)] = 0
    return np.fft.irfft(spectrum, n)


def sound(kind: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A class's sound, n samples, peak ~1 (float64)."""
    t = np.arange(n) / sample_rate
    if kind == "tone":
        wave = _sine(440, t) + 0.5 * _sine(880, t) + 0.25 * _sine(1320, t)
    elif kind == "beeps":
        gate = np.clip(8 * np.sin(2 * np.pi * 5 * t), 0, 1)  # 5 beeps a second, soft edges
        wave = gate * _sine(1200, t)
    elif kind == "chirps":
        wave = _fm(1500 + 2000 * np.mod(t / 0.4, 1.0), sample_rate)  # 1.5 -> 3.5 kHz every 0.4 s
    elif kind == "buzz":
        wave = sum(_sine(150 * k, t) / k for k in range(1, 11))
    elif kind == "hiss":
        wave = _band_noise(rng, n, sample_rate, 4000, 6000)
    elif kind == "warble":
        wave = _fm(700 + 100 * np.sin(2 * np.pi * 6 * t), sample_rate)
    elif kind == "clicks":
        since = np.mod(t, 1 / 6)  # a click every 1/6 s
        wave = np.exp(-since / 0.012) * _sine(2000, since)
    elif kind == "pulse":
        wave = np.sin(np.pi * 2 * t) ** 2 * _sine(90, t)  # 90 Hz swelling twice a second
    else:
        raise ValueError(f"unknown sound {kind!r}")
    peak = float(np.max(np.abs(wave))) if n else 0.0
    return wave / peak if peak > 0 else wave


def render_audio(plan: VideoPlan, cfg: SampleConfig) -> np.ndarray:
    """The clip's soundtrack (samples, channels) float32 in [-1, 1]: background noise plus every audible sound."""
    rng = np.random.default_rng(np.random.SeedSequence(plan.render_seed).spawn(2)[1])
    sr = cfg.sample_rate
    num = int(round(plan.duration * sr))
    mix = rng.normal(0, 0.004, size=(num, cfg.channels))  # (samples, channels) background hiss
    fade = int(0.01 * sr)  # 10 ms ramps: no clicks at the boundaries
    for occ in shown_occurrences(plan, cfg, "audio"):
        a, b = int(round(occ.start * sr)), min(num, int(round(occ.end * sr)))
        wave = occ.gain * sound(CATALOGUE[occ.label_id].sound, b - a, sr, rng)
        ramp = np.minimum(1.0, np.minimum(np.arange(b - a) + 1, np.arange(b - a)[::-1] + 1) / fade)
        wave *= ramp
        if cfg.channels == 2:  # constant-power pan
            gains = np.array([np.cos(occ.pan * np.pi / 2), np.sin(occ.pan * np.pi / 2)]) * np.sqrt(2)
            mix[a:b] += wave[:, None] * gains[None, :]  # (n, 2)
        else:
            mix[a:b, 0] += wave
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


# -- writing -------------------------------------------------------------------------------------------------------
def _encode_args(cfg: SampleConfig, audio_path: Path, out_path: Path) -> list[str]:
    rate = Fraction(cfg.fps).limit_denominator(1001)
    return [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{cfg.width}x{cfg.height}",
        "-r",
        f"{rate.numerator}/{rate.denominator}",
        "-i",
        "pipe:0",
        "-f",
        "f32le",
        "-ar",
        str(cfg.sample_rate),
        "-ac",
        str(cfg.channels),
        "-i",
        str(audio_path),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-threads",
        "1",  # clips run in parallel instead; one thread also keeps the bytes reproducible
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-aac_coder",
        "fast",  # half the time of the default coder; plenty for synthetic tones
        "-b:a",
        cfg.audio_bitrate,
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-f",
        "mp4",
        str(out_path),
    ]


def write_clip(plan: VideoPlan, cfg: SampleConfig, target: Path) -> Path:
    """Render and encode one clip to `target` (atomically: a temp name, renamed when ffmpeg succeeded)."""
    target = target.resolve()  # absolute: an id that starts with '-' is never read as an ffmpeg option
    with tempfile.TemporaryDirectory(prefix="avdet-sample-") as scratch, atomic_path(target, AvdetError) as tmp:
        audio_path = Path(scratch) / "audio.f32"
        render_audio(plan, cfg).tofile(audio_path)  # interleaved float32
        with tempfile.TemporaryFile() as errfile:
            try:
                proc = subprocess.Popen(
                    _encode_args(cfg, audio_path, tmp),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=errfile,
                )
            except FileNotFoundError:
                raise media.FFmpegMissingError(f"ffmpeg not found on PATH: {media.FFMPEG_INSTALL}") from None
            assert proc.stdin is not None
            try:
                for frames in render_frames(plan, cfg):
                    proc.stdin.write(frames.tobytes())
                proc.stdin.close()
            except BrokenPipeError:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()  # ffmpeg stopped early; its exit status and stderr say why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.wait() != 0:
                errfile.seek(0)
                lines = [ln for ln in errfile.read().decode(errors="replace").splitlines() if ln.strip()]
                reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
                raise AvdetError(f"{target}: ffmpeg could not encode the clip ({reason})")
    return target


# which placed occurrences each ground truth holds: audio-visual events only (the task), or everything audible or
# everything visible (the unimodal tasks; the distractors of the audio-visual task are events there)
GROUND_TRUTHS: dict[str, Callable[[Occurrence], bool]] = {
    "audio_visual": lambda o: o.kind == "event",
    "audio": lambda o: o.audible,
    "visual": lambda o: o.visible,
}
ANNOTATION_FILES = {
    "audio_visual": "annotations.json",
    "audio": "annotations_audio.json",
    "visual": "annotations_visual.json",
}


def annotations(plans: list[VideoPlan], cfg: SampleConfig, modality: str = "audio_visual") -> dict:
    """Ground truth in the UnAV-100 format, derived exactly from what was placed: the audio-visual events (never
    the distractors), or every stretch where a class is audible (`modality="audio"`) or visible ("visual"). The
    audio-visual events are the plan's at every informativeness level; the unimodal truths are what the stream
    shows (`shown_occurrences`)."""
    names = class_names(cfg.num_classes)
    database = {}
    for plan in plans:
        if modality == "audio_visual":
            kept = [o for o in plan.occurrences if GROUND_TRUTHS[modality](o)]
        else:
            kept = sorted(shown_occurrences(plan, cfg, modality), key=lambda o: (o.start, o.end, o.label_id))
        database[plan.video_id] = {
            "duration": round(plan.duration, 4),
            "subset": plan.subset,
            "annotations": [
                {"segment": [round(o.start, 4), round(o.end, 4)], "label": names[o.label_id], "label_id": o.label_id}
                for o in kept
            ],
        }
    return {"version": "avdet-sample-v1", "database": database}


def classes_tsv(plans: list[VideoPlan], cfg: SampleConfig) -> str:
    """The class list like UnAV-100's `unav100_classes.tsv`: label_id, label, num_events."""
    names = class_names(cfg.num_classes)
    counts = np.bincount([o.label_id for p in plans for o in p.events()], minlength=len(names))
    rows = ["label_id\tlabel\tnum_events"] + [f"{i}\t{name}\t{counts[i]}" for i, name in enumerate(names)]
    return "\n".join(rows) + "\n"


def clip_fingerprint(plan: VideoPlan, cfg: SampleConfig) -> str:
    """What a finished clip was made from: its plan, the encoding settings and the generator version."""
    render = {k: getattr(cfg, k) for k in ("width", "height", "fps", "sample_rate", "channels", "audio_bitrate")}
    if cfg.busy_background:  # only when set, so clips made before the option keep their fingerprints
        render["busy_background"] = True
    for key in ("visual_info", "audio_info"):  # likewise only when not "full"
        if getattr(cfg, key) != "full":
            render[key] = getattr(cfg, key)
    blob = json.dumps(
        {"version": GENERATOR_VERSION, "plan": dataclasses.asdict(plan), "render": render}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _read_manifest(path: Path) -> dict[str, str]:
    """Finished clips by id -> fingerprint; an unreadable manifest only costs re-rendering."""
    try:
        clips = json.loads(path.read_text(encoding="utf-8"))["clips"]
        return {str(k): str(v) for k, v in clips.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s is unreadable: every clip is rendered again", path)
        return {}


def write_clips(
    out_dir: Path, plans: list[VideoPlan], cfg: SampleConfig, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Render every planned clip into out_dir/videos that is not already there from the same plan; return the folder.

    The manifest is updated (atomically) after each finished clip, so a killed run resumes where it stopped.
    """
    videos = out_dir / "videos"
    try:
        videos.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AvdetError(f"{videos}: cannot create the folder ({err.strerror})") from None
    clean_stale_temps(videos)
    clean_stale_temps(out_dir)
    stale = {p.stem for p in videos.glob("*.mp4")} - {p.video_id for p in plans}
    if stale:
        log.warning("%s holds %d clips not in this sample (another seed?); they are left alone", videos, len(stale))
    manifest_path = out_dir / MANIFEST
    manifest = _read_manifest(manifest_path)
    prints = {plan.video_id: clip_fingerprint(plan, cfg) for plan in plans}
    todo = [
        p
        for p in plans
        if manifest.get(p.video_id) != prints[p.video_id] or not (videos / f"{p.video_id}.mp4").is_file()
    ]
    done = len(plans) - len(todo)
    if done:
        log.info("%d of %d clips are already made; rendering the other %d", done, len(plans), len(todo))
    if progress:
        progress(done, len(plans))
    workers = cfg.workers or min(2, os.cpu_count() or 1)
    # At most `workers` clips in flight, so that after a failure no new clip is started.
    queue = iter(todo)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="avdet-sample")
    try:
        pending = {
            pool.submit(write_clip, plan, cfg, videos / f"{plan.video_id}.mp4"): plan.video_id
            for plan in islice(queue, workers)
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                video_id = pending.pop(future)
                future.result()  # re-raises a clip's failure
                manifest[video_id] = prints[video_id]
                write_text_atomic(manifest_path, json.dumps({"clips": manifest}, indent=0, sort_keys=True) + "\n")
                done += 1
                if progress:
                    progress(done, len(plans))
                for plan in islice(queue, 1):
                    pending[pool.submit(write_clip, plan, cfg, videos / f"{plan.video_id}.mp4")] = plan.video_id
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return videos


def check_sample_dir(out_dir: Path, video_ids: Iterable[str], names: Iterable[str], overwrite: bool) -> None:
    """make-sample replaces only what make-sample made (unless `overwrite`): a clip videos/<id>.mp4 that its
    manifest lists, annotations JSON it wrote (`made_by_avdet`), and other text files (classes.tsv, AVE lists) only
    in a folder that holds its manifest. Anything else in `out_dir` under one of those names is a user's: refused
    (DataError) before any clip is rendered."""
    if overwrite:
        return
    manifest_path = out_dir / MANIFEST
    made = set(_read_manifest(manifest_path))
    if manifest_path.is_file() and not made:  # a damaged manifest: the folder is make-sample's, its clips unknown
        made = set(video_ids)  # (re-rendering them only costs time; see write_clips)
    foreign = [out_dir / "videos" / f"{v}.mp4" for v in video_ids if v not in made]
    foreign = [p for p in foreign if p.exists()]
    for name in names:
        path = out_dir / name
        if path.is_file() and not (made_by_avdet(path) if path.suffix == ".json" else manifest_path.is_file()):
            foreign.append(path)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise DataError(
            f"{foreign[0]}{more}: exists and was not made by make-sample; choose another folder, or --overwrite to "
            "replace it"
        )


def make_sample(
    out_dir: Path, cfg: SampleConfig, progress: Callable[[int, int], None] | None = None, overwrite: bool = False
) -> Path:
    """Write out_dir/videos/<id>.mp4, out_dir/annotations.json (audio-visual events), annotations_audio.json and
    annotations_visual.json (every audible / visible stretch) and out_dir/classes.tsv; return annotations.json.

    The annotations and class list are written last, so they exist only when every clip does. Re-running with the
    same configuration renders only what an interrupted run left out. Files of the same names that make-sample did
    not make are refused unless `overwrite` (`check_sample_dir`).
    """
    plans = plan_dataset(cfg)
    out_dir = Path(out_dir)
    check_sample_dir(out_dir, [p.video_id for p in plans], ["classes.tsv", *ANNOTATION_FILES.values()], overwrite)
    videos = write_clips(out_dir, plans, cfg, progress)
    write_text_atomic(out_dir / "classes.tsv", classes_tsv(plans, cfg))
    for modality in ("audio", "visual", "audio_visual"):  # the audio-visual one last: it marks a finished set
        ground_truth = json.dumps(annotations(plans, cfg, modality), indent=1) + "\n"
        write_text_atomic(out_dir / ANNOTATION_FILES[modality], ground_truth)
    target = out_dir / ANNOTATION_FILES["audio_visual"]
    log.info("wrote %d clips to %s", len(plans), videos)
    return target


# -- AVE-style segment-level sample ----------------------------------------------------------------------------------
