from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import AvdetError, ConfigError
from avdet.pipeline.data.ave import parse_ave_lines, segment_labels
from avdet.pipeline.io import media
from avdet.pipeline.io.atomic import TEMP_MARK
from avdet.pipeline.synth import ave_clips
from avdet.pipeline.synth import clips as sample
from avdet.pipeline.synth.ave_clips import AveSampleConfig, make_ave_sample
from avdet.pipeline.synth.clips import CATALOGUE, SampleConfig, class_names, make_sample, plan_dataset

# Tiny clips: 3 videos of 4-6 s at 96x64 (default 22.05 kHz stereo audio) take about a second to make.
TINY = SampleConfig(num_videos=3, seed=3, min_duration=4.0, max_duration=6.0, width=96, height=64)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    make_sample(out, TINY)
    return out


def _load(out: Path) -> dict:
    return json.loads((out / "annotations.json").read_text())


def _free_part(plan: sample.VideoPlan, occ: sample.Occurrence, margin: float = 0.06) -> tuple[float, float] | None:
    """The longest stretch of `occ` (>= 0.3 s) with no other sound playing, `margin` away from any sound's edges."""
    others = sorted((o.start, o.end) for o in plan.occurrences if o.audible and o is not occ)
    best, cursor = None, occ.start
    for s, e in [*others, (occ.end, occ.end)]:
        lo, hi = cursor + margin, min(s, occ.end) - margin
        if hi - lo >= 0.3 and (best is None or hi - lo > best[1] - best[0]):
            best = (lo, hi)
        cursor = max(cursor, e)
    return best


def _visible_frames(plan: sample.VideoPlan, keep) -> np.ndarray:
    """(num_frames,) bool: frames showing an occurrence for which keep(occ) holds."""
    out = np.zeros(plan.num_frames, bool)
    for o in plan.occurrences:
        if o.visible and keep(o):
            out[round(o.start * TINY.fps) : round(o.end * TINY.fps)] = True
    return out


def _rms(wave: np.ndarray, sr: int, span: tuple[float, float]) -> float:
    part = wave[int(span[0] * sr) : int(span[1] * sr)]
    return float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))


def _colour_pixels(frames: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Pixels per frame within 45 of a class colour on every channel: (n,)."""
    diff = np.abs(frames.astype(np.int16) - np.asarray(rgb, np.int16))  # (n, H, W, 3)
    return (diff.max(axis=-1) <= 45).sum(axis=(1, 2))


def test_class_names_are_readable_and_distinct() -> None:
    names = class_names(5)
    assert names[0] == "red circle + 440 Hz tone"
    assert len(set(names)) == 5 and all(" + " in n for n in names)
    assert class_names(len(CATALOGUE))[:5] == names
    assert len({c.rgb for c in CATALOGUE}) == len({c.shape for c in CATALOGUE}) == len(CATALOGUE)
    for bad in (1, len(CATALOGUE) + 1):
        with pytest.raises(ConfigError):
            class_names(bad)


@pytest.mark.parametrize(
    "change",
    [
        {"width": 97},
        {"min_duration": 1.0},
        {"min_duration": 12.0, "max_duration": 10.0},
        {"channels": 3},
        {"split": (0.0, 0.0, 0.0)},
        {"sample_rate": 8000},
        {"max_overlap": 1},
        {"num_videos": 0},
        {"object_scale": 0.0},
        {"mismatched": 1.5},
    ],
)
def test_bad_configs_are_config_errors(change: dict) -> None:
    with pytest.raises(ConfigError):
        plan_dataset(dataclasses.replace(TINY, **change))


def test_split_counts() -> None:
    assert sample.split_counts(60, (0.6, 0.2, 0.2)) == [36, 12, 12]
    assert sample.split_counts(3, (0.6, 0.2, 0.2)) == [1, 1, 1]  # every subset gets a video when it can
    assert sample.split_counts(5, (1.0, 0.0, 1.0)) == [3, 0, 2]
    for n in range(1, 40):
        assert sum(sample.split_counts(n, (0.7, 0.2, 0.1))) == n


def test_annotations_follow_the_unav100_format(made: Path) -> None:
    ann = _load(made)
    assert set(ann) == {"version", "database"}
    db = ann["database"]
    assert len(db) == TINY.num_videos
    assert {v["subset"] for v in db.values()} == {"train", "validation", "test"}
    rows = [line.split("\t") for line in (made / "classes.tsv").read_text().splitlines()]
    assert rows[0] == ["label_id", "label", "num_events"]  # UnAV-100's header
    assert [int(r[0]) for r in rows[1:]] == list(range(TINY.num_classes))
    classes = [r[1] for r in rows[1:]]
    assert classes == class_names(TINY.num_classes)
    counts = [0] * len(classes)
    for vid, video in db.items():
        assert set(video) == {"duration", "subset", "annotations"}
        assert TINY.min_duration - 0.05 <= video["duration"] <= TINY.max_duration + 0.05
        assert len(vid) == sample.ID_LENGTH and (made / "videos" / f"{vid}.mp4").is_file()
        segs = video["annotations"]
        assert segs, f"{vid} has no events"
        for a in segs:
            assert set(a) == {"segment", "label", "label_id"}
            s, e = a["segment"]
            assert 0 <= s < e <= video["duration"] and e - s >= TINY.min_event - 1e-6
            assert classes[a["label_id"]] == a["label"]
            counts[a["label_id"]] += 1
        # Every clip has a pair of overlapping events of different classes.
        assert any(
            a["label_id"] != b["label_id"] and a["segment"][0] < b["segment"][1] and b["segment"][0] < a["segment"][1]
            for i, a in enumerate(segs)
            for b in segs[i + 1 :]
        ), vid
    assert [int(r[2]) for r in rows[1:]] == counts
    assert any(vid.startswith("-") for vid in db)  # ids like UnAV-100's, which CLI paths must survive
    assert sorted(p.name for p in (made / "videos").iterdir()) == sorted(f"{v}.mp4" for v in db)


def test_ids_start_with_dash_or_underscore_every_seventh() -> None:
    plans = plan_dataset(dataclasses.replace(TINY, num_videos=14))
    ids = [p.video_id for p in plans]
    assert len(set(ids)) == 14
    assert [i for i, v in enumerate(ids) if v[0] == "-"] == [1, 8]
    assert [i for i, v in enumerate(ids) if v[0] == "_"] == [4, 11]


def test_mp4_decodes_to_the_planned_clip(made: Path) -> None:
    plans = {p.video_id: p for p in plan_dataset(TINY)}
    for vid, plan in plans.items():
        info = media.probe(made / "videos" / f"{vid}.mp4")
        assert info.video_codec == "h264" and (info.width, info.height) == (TINY.width, TINY.height)
        assert info.fps == pytest.approx(TINY.fps)
        assert info.num_frames == plan.num_frames
        assert info.duration == pytest.approx(plan.duration, abs=0.08)
        assert info.has_audio and (info.audio_rate, info.audio_channels) == (TINY.sample_rate, 2)


@pytest.mark.slow  # renders the sample set twice more
def test_same_seed_same_data_other_seed_other_data(made: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_sample(again, dataclasses.replace(TINY, workers=1))  # the worker count must not matter
    assert (again / "annotations.json").read_bytes() == (made / "annotations.json").read_bytes()
    assert (again / "classes.tsv").read_bytes() == (made / "classes.tsv").read_bytes()
    for clip in (made / "videos").iterdir():
        twin = again / "videos" / clip.name
        assert twin.read_bytes() == clip.read_bytes()  # bitexact encoding: byte-identical files
        a = np.concatenate(list(media.read_frames(clip, TINY.fps, (TINY.height, TINY.width))))
        b = np.concatenate(list(media.read_frames(twin, TINY.fps, (TINY.height, TINY.width))))
        assert np.array_equal(a, b)
        assert np.array_equal(media.load_audio(clip, 16000), media.load_audio(twin, 16000))
    # The raw renders are identical too, and independent of chunking.
    plan = plan_dataset(TINY)[0]
    frames = np.concatenate(list(sample.render_frames(plan, TINY)))
    assert frames.shape == (plan.num_frames, TINY.height, TINY.width, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, np.concatenate(list(sample.render_frames(plan_dataset(TINY)[0], TINY, chunk=7))))
    audio = sample.render_audio(plan, TINY)
    assert audio.shape == (round(plan.duration * TINY.sample_rate), 2) and audio.dtype == np.float32
    assert np.array_equal(audio, sample.render_audio(plan_dataset(TINY)[0], TINY))
    # Another seed gives other clips; more videos keep the first ones.
    other = plan_dataset(dataclasses.replace(TINY, seed=TINY.seed + 1))
    assert [p.video_id for p in other] != [p.video_id for p in plan_dataset(TINY)]
    assert not np.array_equal(sample.render_audio(other[0], TINY)[:1000], audio[:1000])
    longer = plan_dataset(dataclasses.replace(TINY, num_videos=6))[:3]
    for p, q in zip(longer, plan_dataset(TINY), strict=True):
        assert (p.video_id, p.occurrences, p.render_seed) == (q.video_id, q.occurrences, q.render_seed)


@pytest.mark.slow  # renders and decodes clips with distractors
def test_distractors_are_in_the_media_but_not_in_the_truth(made: Path) -> None:
    db = _load(made)["database"]
    kinds = []
    for plan in plan_dataset(TINY):
        truth = db[plan.video_id]["annotations"]
        assert len(truth) == len(plan.events())
        clip = made / "videos" / f"{plan.video_id}.mp4"
        wave = media.load_audio(clip, 16000)
        frames = np.concatenate(list(media.read_frames(clip, TINY.fps, (TINY.height, TINY.width))))
        for occ in plan.occurrences:
            if occ.kind == "event":
                continue
            kinds.append(occ.kind)
            # Not in the ground truth: no event of that class overlaps the distractor.
            assert not any(
                a["label_id"] == occ.label_id and a["segment"][0] < occ.end and occ.start < a["segment"][1]
                for a in truth
            )
            pixels = _colour_pixels(frames, CATALOGUE[occ.label_id].rgb)
            span = np.zeros(plan.num_frames, bool)
            span[round(occ.start * TINY.fps) + 1 : round(occ.end * TINY.fps) - 1] = True
            alone = span & ~_visible_frames(plan, lambda o, occ=occ: o is not occ)  # nothing can hide it
            free = _free_part(plan, occ)  # a stretch with no other sound, when there is one
            if occ.kind == "visual_only":
                assert pixels[alone].min(initial=255) > 20, "the object is drawn"
                assert free is None or _rms(wave, 16000, free) < 0.01, "silent but for the background"
            else:
                assert pixels[span].max() < 5, "no object of that class"
                assert free is None or _rms(wave, 16000, free) > 0.02, "its sound, well above the background"
    assert set(kinds) == {"audio_only", "visual_only"}


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_isolated_distractors_are_heard_or_seen_alone(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, num_videos=1)
    base = plan_dataset(cfg)[0]

    def occ(label: int, kind: str, start: float, end: float) -> sample.Occurrence:
        return sample.Occurrence(label, kind, start, end, 10.0, 40.0, 30.0, 25.0, -15.0, 0.3, 0.5)

    plan = dataclasses.replace(
        base,
        duration=6.0,
        num_frames=150,
        occurrences=(
            occ(0, "event", 0.4, 1.6),
            occ(1, "audio_only", 2.0, 3.2),
            occ(2, "visual_only", 3.6, 4.8),
            occ(3, "event", 4.8, 5.6),
        ),
    )
    clip = sample.write_clip(plan, cfg, tmp_path / f"{plan.video_id}.mp4")
    wave = media.load_audio(clip, 16000)
    frames = np.concatenate(list(media.read_frames(clip, cfg.fps, (cfg.height, cfg.width))))
    level = {name: _rms(wave, 16000, span) for name, span in [("quiet", (1.7, 1.95)), ("a", (2.1, 3.1))]}
    level["v"] = _rms(wave, 16000, (3.7, 4.7))
    assert level["quiet"] < 0.01 and level["v"] < 0.01  # background hiss only
    assert level["a"] > 5 * level["quiet"]  # the audio-only distractor is heard
    audio_obj = _colour_pixels(frames[50:80], CATALOGUE[1].rgb)
    visual_obj = _colour_pixels(frames[91:119], CATALOGUE[2].rgb)
    assert audio_obj.max() < 5 and visual_obj.min() > 20  # ... and the visual-only one is seen
    ann = sample.annotations([plan], cfg)["database"][plan.video_id]["annotations"]
    assert [(a["label_id"], a["segment"]) for a in ann] == [(0, [0.4, 1.6]), (3, [4.8, 5.6])]


def test_events_show_their_object_and_class_colours_stay_off_the_background(made: Path) -> None:
    plan = plan_dataset(TINY)[0]
    clip = made / "videos" / f"{plan.video_id}.mp4"
    frames = np.concatenate(list(media.read_frames(clip, TINY.fps, (TINY.height, TINY.width))))
    for label in range(TINY.num_classes):
        visible = _visible_frames(plan, lambda o, label=label: o.label_id == label)
        others = _visible_frames(plan, lambda o, label=label: o.label_id != label)
        near = np.convolve(visible, np.ones(3), "same")
        inside = visible & (near == 3) & ~others  # away from the on/off frames and from anything that could hide it
        outside = ~visible & (near == 0)
        pixels = _colour_pixels(frames, CATALOGUE[label].rgb)
        if inside.any():
            assert pixels[inside].min() > 20
        assert pixels[outside].max(initial=0) < 5


@pytest.mark.parametrize(
    ("kind", "band"),
    [("tone", (430, 450)), ("beeps", (1190, 1210)), ("chirps", (1500, 3500)), ("buzz", (145, 155))]
    + [("hiss", (4000, 6000)), ("warble", (590, 810)), ("clicks", (1800, 2200)), ("pulse", (85, 95))],
)
def test_each_sound_peaks_in_its_own_band(kind: str, band: tuple[float, float]) -> None:
    sr = 16000
    wave = sample.sound(kind, sr, sr, np.random.default_rng(0))
    assert np.max(np.abs(wave)) == pytest.approx(1.0)
    spectrum = np.abs(np.fft.rfft(wave))
    peak = np.fft.rfftfreq(sr, 1 / sr)[np.argmax(spectrum)]
    assert band[0] <= peak <= band[1]


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_failure_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(TINY, workers=1)
    plans = plan_dataset(cfg)
    videos = tmp_path / "videos"
    videos.mkdir()
    stale = videos / f"old.mp4{TEMP_MARK}999999999-abcd"  # left by a killed run whose process is gone
    stale.write_bytes(b"half")
    real = sample.render_frames
    calls = []

    def flaky(plan: sample.VideoPlan, cfg: SampleConfig, chunk: int = 25):
        calls.append(plan.video_id)
        for i, frames in enumerate(real(plan, cfg, chunk=chunk)):
            if len(calls) == 2 and i == 1:
                raise RuntimeError("simulated crash in the middle of a clip")
            yield frames

    monkeypatch.setattr(sample, "render_frames", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_sample(tmp_path, cfg)
    left = sorted(p.name for p in videos.iterdir())
    assert left == [f"{plans[0].video_id}.mp4"], left  # the finished clip only: no half mp4, no temp file
    assert media.probe(videos / left[0]).num_frames == plans[0].num_frames
    assert not (tmp_path / "annotations.json").exists() and not (tmp_path / "classes.tsv").exists()
    # The re-run resumes: it renders only the two clips the crash left out.
    monkeypatch.setattr(sample, "render_frames", real)
    written = _count_writes(monkeypatch)
    make_sample(tmp_path, cfg)
    assert written == [p.video_id for p in plans[1:]]
    assert sorted(p.name for p in videos.iterdir()) == sorted(f"{p.video_id}.mp4" for p in plans)
    assert json.loads((tmp_path / "annotations.json").read_text()) == sample.annotations(plans, cfg)


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the ids of the clips `write_clip` renders from now on."""
    real, written = sample.write_clip, []

    def counting(plan: sample.VideoPlan, cfg: SampleConfig, target: Path) -> Path:
        written.append(plan.video_id)
        return real(plan, cfg, target)

    monkeypatch.setattr(sample, "write_clip", counting)
    return written


def test_rerun_renders_only_missing_or_changed_clips(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(made, out)
    plans = plan_dataset(TINY)
    manifest = json.loads((out / sample.MANIFEST).read_text())["clips"]
    assert manifest == {p.video_id: sample.clip_fingerprint(p, TINY) for p in plans}
    written = _count_writes(monkeypatch)
    make_sample(out, TINY)  # everything is there: nothing to render
    assert written == []
    (out / "videos" / f"{plans[2].video_id}.mp4").unlink()  # lost
    manifest[plans[0].video_id] = "made-by-an-older-generator"
    (out / sample.MANIFEST).write_text(json.dumps({"clips": manifest}))
    make_sample(out, TINY)
    assert sorted(written) == sorted([plans[0].video_id, plans[2].video_id])
    for name in ("annotations.json", "classes.tsv", *(f"videos/{p.video_id}.mp4" for p in plans)):
        assert (out / name).read_bytes() == (made / name).read_bytes(), name
    # Other settings are other clips: a resumed run never keeps a clip made with them.
    assert sample.clip_fingerprint(plans[0], dataclasses.replace(TINY, width=64)) != sample.clip_fingerprint(
        plans[0], TINY
    )
    assert len({sample.clip_fingerprint(p, TINY) for p in plans}) == len(plans)
    (out / sample.MANIFEST).write_text("{not json")  # a damaged manifest only costs re-rendering
    written.clear()
    make_sample(out, dataclasses.replace(TINY, num_videos=1))
    assert written == [plans[0].video_id]


def test_ffmpeg_failure_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sample._encode_args
    monkeypatch.setattr(sample, "_encode_args", lambda *a: [*real(*a)[:-1], "-no-such-option", str(a[-1])])
    with pytest.raises(AvdetError, match="ffmpeg could not encode"):
        make_sample(tmp_path, dataclasses.replace(TINY, num_videos=1))
    assert list((tmp_path / "videos").iterdir()) == []


# -- AVE-style sample ------------------------------------------------------------------------------------------------
# Seed 14: full-length and partial events, silent and busy background, distractors of the event's class and others.
AVE_TINY = AveSampleConfig(num_videos=4, seed=14, width=96, height=64)


@pytest.fixture(scope="module")
def made_ave(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ave")
    assert make_ave_sample(out, AVE_TINY) == out / "Annotations.txt"
    return out


def _ave_rows(path: Path, header: bool) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if header:
        assert lines[0] == "Category&VideoID&Quality&StartTime&EndTime"
        lines = lines[1:]
    return [line.split("&") for line in lines]


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_ave_files_follow_the_ave_format(made_ave: Path) -> None:
    rows = _ave_rows(made_ave / "Annotations.txt", header=True)
    names = class_names(AVE_TINY.num_classes)
    assert len(rows) == AVE_TINY.num_videos
    for category, vid, quality, start, end in rows:
        assert category in names and quality == "good" and len(vid) == sample.ID_LENGTH
        assert 0 <= int(start) < int(end) <= 10 and int(end) - int(start) >= AVE_TINY.min_event
        info = media.probe(made_ave / "videos" / f"{vid}.mp4")
        assert info.num_frames == 250 and info.duration == pytest.approx(10.0, abs=0.08)
        assert info.has_audio and info.audio_rate == AVE_TINY.sample_rate
    assert not any("&" in n for n in names)  # a category with '&' would break the format
    split_rows = {name: _ave_rows(made_ave / name, header=False) for name in ave_clips.AVE_SPLIT_FILES.values()}
    assert all(split_rows.values()), "every split has a video"
    assert sorted(r for rs in split_rows.values() for r in rs) == sorted(rows)  # a partition of the annotations
    tsv = [line.split("\t") for line in (made_ave / "classes.tsv").read_text().splitlines()]
    assert [r[1] for r in tsv[1:]] == names
    assert sum(int(r[2]) for r in tsv[1:]) == AVE_TINY.num_videos  # one event per clip


def test_ave_plans_have_one_event_background_and_distractors_off_the_event() -> None:
    cfg = dataclasses.replace(AVE_TINY, num_videos=60)
    plans = ave_clips.plan_ave_dataset(cfg)
    assert len({p.video_id for p in plans}) == 60 and {p.subset for p in plans} == set(sample.SUBSETS)
    assert [p.video_id for p in plans] != [
        p.video_id for p in plan_dataset(dataclasses.replace(TINY, seed=AVE_TINY.seed))
    ]
    kinds, full, same_class = set(), 0, 0
    for plan in plans:
        assert plan.num_frames == 250 and plan.duration == 10.0
        (event,) = plan.events()
        (entry,) = parse_ave_lines(ave_clips.ave_annotation_lines([plan], cfg.num_classes))  # as the reader sees it
        labels = segment_labels(entry, event.label_id, cfg.num_classes)
        assert list(labels) == [event.label_id if event.start <= s < event.end else cfg.num_classes for s in range(10)]
        full += event.start == 0 and event.end == 10
        for o in plan.occurrences:
            assert o.start == int(o.start) and o.end == int(o.end)  # whole segments
            if o is event:
                continue
            kinds.add(o.kind)
            assert (labels[int(o.start) : int(o.end)] == cfg.num_classes).all(), "distractors only in background"
            if o.label_id == event.label_id:
                same_class += 1
                assert o.end < event.start or event.end < o.start, "a same-class distractor never touches the event"
    assert kinds == {"audio_only", "visual_only"} and same_class > 0
    assert 0 < full < 60  # some clips are all event, the others have background segments
    again = ave_clips.plan_ave_dataset(cfg)
    assert again == plans and ave_clips.ave_annotation_lines(again, 5) == ave_clips.ave_annotation_lines(plans, 5)
    no_distractors = ave_clips.plan_ave_dataset(dataclasses.replace(cfg, distractors=False))
    assert all(len(p.occurrences) == 1 for p in no_distractors)


@pytest.mark.slow  # renders and decodes the AVE-style sample
def test_ave_clips_show_and_play_the_event_only_in_its_segments(made_ave: Path) -> None:
    cases = set()
    for plan in ave_clips.plan_ave_dataset(AVE_TINY):
        clip = made_ave / "videos" / f"{plan.video_id}.mp4"
        frames = np.concatenate(list(media.read_frames(clip, AVE_TINY.fps, (AVE_TINY.height, AVE_TINY.width))))
        wave = media.load_audio(clip, 16000)
        (event,) = plan.events()
        pixels = _colour_pixels(frames, CATALOGUE[event.label_id].rgb)
        for s in range(10):
            frames_s = pixels[s * 25 + 2 : (s + 1) * 25 - 2]  # away from the segment edges
            seen = [o for o in plan.occurrences if o.visible and o.start <= s < o.end]
            heard = [o for o in plan.occurrences if o.audible and o.start <= s < o.end]
            level = _rms(wave, 16000, (s + 0.1, s + 0.9))
            if event.start <= s < event.end:
                assert frames_s.min() > 20 and level > 0.02, (plan.video_id, s)
            else:
                same_seen = any(o.label_id == event.label_id for o in seen)
                if same_seen:  # the event's object without its sound: background all the same
                    assert frames_s.min() > 20, (plan.video_id, s)
                else:
                    assert frames_s.max() < 5, (plan.video_id, s)
                assert (level > 0.02) == bool(heard), (plan.video_id, s)
                cases.add(("heard" if heard else "quiet", same_seen))
    assert cases == {("heard", False), ("quiet", False), ("quiet", True)}


def test_ave_rerun_resumes_and_writes_the_same_bytes(
    made_ave: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(made_ave, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.txt")}
    for p in out.glob("*.txt"):
        p.unlink()
    written = _count_writes(monkeypatch)
    make_ave_sample(out, AVE_TINY)
    assert written == []
    assert {p.name: p.read_bytes() for p in out.glob("*.txt")} == before


@pytest.mark.parametrize("change", [{"fps": 24.95}, {"min_event": 0}, {"min_event": 11}, {"full_share": 1.5}])
def test_bad_ave_configs_are_config_errors(change: dict) -> None:
    with pytest.raises(ConfigError):
        ave_clips.plan_ave_dataset(dataclasses.replace(AVE_TINY, **change))


def test_small_objects_and_busy_backgrounds() -> None:
    small = dataclasses.replace(TINY, object_scale=0.3, busy_background=True)
    plans, small_plans = plan_dataset(TINY), plan_dataset(small)
    for plan, small_plan in zip(plans, small_plans, strict=True):
        for occ, small_occ in zip(plan.occurrences, small_plan.occurrences, strict=True):
            assert small_occ.size == pytest.approx(0.3 * occ.size)  # the same plan, smaller objects
    plan = small_plans[0]
    plain = next(sample.render_frames(plan, dataclasses.replace(small, busy_background=False)))
    busy = next(sample.render_frames(plan, small))
    # busy backgrounds are colourful and contrasty: chroma and spread well above the grey textured ones
    chroma = lambda f: float((f.max(axis=-1).astype(int) - f.min(axis=-1)).mean())  # noqa: E731
    assert chroma(busy) > 3 * chroma(plain) and busy.std() > 2 * plain.std()
    # a different background is a different clip: the fingerprint changes
    assert sample.clip_fingerprint(plan, small) != sample.clip_fingerprint(
        plan, dataclasses.replace(small, busy_background=False)
    )


def test_mismatched_pairs_show_one_class_and_play_another_over_one_span() -> None:
    cfg = SampleConfig(num_videos=12, seed=3)
    with_pair = 0
    for plan in plan_dataset(dataclasses.replace(cfg, mismatched=1.0)):
        seen = [o for o in plan.occurrences if o.kind == "visual_only"]
        heard = [o for o in plan.occurrences if o.kind == "audio_only"]
        with_pair += any((v.start, v.end) == (a.start, a.end) and v.label_id != a.label_id for v in seen for a in heard)
    assert with_pair >= 10  # a crowded clip may go without
    # off by default, and then the plans are exactly the ones drawn before the option existed
    plans = json.dumps([dataclasses.asdict(p) for p in plan_dataset(cfg)])
    assert hashlib.sha256(plans.encode()).hexdigest()[:16] == "adb34b51fe57cc89"
