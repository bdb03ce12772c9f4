"""`avdet detect` on a fixed checkpoint gives byte-identical JSON across refactors: the checkpoint is a seeded,
perturbed tiny LoCo with a calibrated operating point (per-class thresholds and overlap suppression), the clip is
lossless (raw video, PCM audio) so decoding cannot differ, and the expected file is tests/golden_outputs/
detect_fixed.json. After an intended change of detect's output, regenerate it with
`AVDET_REGEN_GOLDEN=1 pytest tests/test_detect_fixed.py` and read the diff before committing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden_outputs" / "detect_fixed.json"
CLASSES = ["dog", "guitar", "speech", "engine", "bell"]


def _lossless_clip(path: Path) -> Path:
    """8 s of moving test pattern with a tone that changes pitch: raw video + PCM, identical on every decode."""
    args = ["ffmpeg", "-y", "-nostdin", "-loglevel", "error"]
    args += ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=8"]
    args += ["-f", "lavfi", "-i", "aevalsrc=0.5*sin(2*PI*(300+200*floor(t/2))*t):s=16000:d=8"]
    args += ["-c:v", "rawvideo", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", "-ac", "1", str(path)]
    subprocess.run(args, check=True)
    return path


def _fixed_checkpoint(path: Path) -> Path:
    """A tiny LoCo built after `torch.manual_seed(0)`, its weights perturbed so no score sits at the prior, with a
    calibrated operating point whose thresholds and overlap level make suppression matter."""
    import torch

    from avdet.extractors.registry import EXTRACTORS  # noqa: F401  (the lite spec below comes from its options)
    from avdet.pipeline.checkpoint import save_checkpoint
    from avdet.pipeline.config import load_config, to_dict
    from avdet.pipeline.extract import ExtractOptions
    from avdet.pipeline.types import OperatingPoint

    cfg = load_config("tiny", ["model.num_classes=5"])
    model_cfg = cfg.model_config()
    from avdet.models.registry import model_entry

    entry = model_entry(cfg.model["name"])
    torch.manual_seed(0)
    model = entry.model_cls(model_cfg)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    point = OperatingPoint("calibrated", (0.012, 0.01, 0.01, 0.015, 0.024), 0.25, "validation", 0.5, (4,), {"f1": 0.5})
    spec = ExtractOptions().build().spec
    save_checkpoint(
        path,
        {
            "task": "dense",
            "model": {"name": entry.name, "config": to_dict(model_cfg)},
            "classes": CLASSES,
            "extractor": dict(spec),
            "postprocess": to_dict(cfg.postprocess),
            "data": {},
            "epoch": 0,
            "metrics": {},
            "state_dict": model.state_dict(),
            "operating_point": point.to_payload(),
        },
    )
    return path


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("fixed")
    return _fixed_checkpoint(root / "fixed.ckpt"), _lossless_clip(root / "clip.mkv"), root / "cache"


def _normalised(doc: dict, clip: Path, ckpt: Path) -> dict:
    """The JSON without the machine-specific paths (the clip's and the checkpoint's folders)."""
    text = json.dumps(doc, sort_keys=True).replace(str(clip.parent), "<tmp>").replace(str(ckpt.parent), "<tmp>")
    return json.loads(text)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_detect_json_on_a_fixed_checkpoint_is_unchanged(fixed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from avdet.cli import app

    ckpt, clip, cache = fixed
    out = tmp_path / "events.json"
    res = CliRunner().invoke(
        app,
        ["detect", str(clip), "--checkpoint", str(ckpt), "--cache", str(cache), "--device", "cpu", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    got = _normalised(json.loads(out.read_text()), clip, ckpt)
    assert got["events"], "detect wrote no events: the fixed checkpoint's thresholds no longer fit its scores"
    if os.environ.get("AVDET_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_python_api_on_a_fixed_checkpoint_gives_the_cli_events(fixed: tuple[Path, Path, Path]) -> None:
    import avdet

    ckpt, clip, cache = fixed
    events = avdet.load(ckpt, cache=cache, device="cpu").detect(clip).events
    want = json.loads(GOLDEN.read_text())["events"]
    got = sorted(events, key=lambda e: (e.label, e.start))
    want = sorted(want, key=lambda e: (e["label"], e["start"]))
    assert [e.label for e in got] == [e["label"] for e in want]
    for e, w in zip(got, want, strict=True):  # the file rounds times to ms and scores to 1e-10
        assert abs(e.start - w["start"]) <= 5e-4 and abs(e.end - w["end"]) <= 5e-4, (e, w)
        assert abs(e.score - w["score"]) <= 1e-9, (e, w)
    assert len({e.label for e in events}) >= 2, "the fixed checkpoint should show several classes"


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_python_api_result_is_the_cli_json(fixed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """`avdet.load(...).detect(clip).to_dict()` is the file `avdet detect clip --out x.json` writes: same rounding,
    event order and operating-point record; one result type for one path and for a list."""
    from typer.testing import CliRunner

    import avdet
    from avdet.cli import app
    from avdet.errors import AvdetError

    ckpt, clip, cache = fixed
    out = tmp_path / "events.json"
    args = ["detect", str(clip), "--checkpoint", str(ckpt), "--cache", str(cache), "--device", "cpu"]
    assert CliRunner().invoke(app, [*args, "--out", str(out)]).exit_code == 0
    det = avdet.load(ckpt, cache=cache)  # device="auto": the CPU here
    result = det.detect(clip)
    assert result.to_dict() == json.loads(out.read_text())
    assert result.to_json() + "\n" == out.read_text()
    assert [e.to_dict() for e in result.events] == json.loads(out.read_text())["events"]
    assert json.dumps(result.events[0].to_dict())  # an event is JSON-serialisable through to_dict
    (again,) = det.detect([clip])
    assert again == result and again.error is None
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(AvdetError, match=str(missing)):
        det.detect(missing)
    gone, kept = det.detect([missing, clip])
    assert (
        gone.error and not gone.events and gone.to_dict()["path"] == str(missing) and kept.to_dict() == result.to_dict()
    )


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_progress_follows_media_seconds_within_a_video(fixed: tuple[Path, Path, Path], tmp_path: Path, capsys) -> None:
    """Feature computation calls back in media seconds (the library draws nothing); `progress=True` draws videos
    and media seconds on stderr; cached videos call nothing."""
    import avdet

    ckpt, clip, _ = fixed
    det = avdet.load(ckpt, cache=tmp_path / "fresh")
    calls: list[tuple[str, float, float]] = []
    det.media_progress = lambda path, done, total: calls.append((path, done, total))
    det.detect(clip)
    assert calls and {c[0] for c in calls} == {str(clip)} and all(c[2] == calls[0][2] for c in calls)
    done = [c[1] for c in calls]
    assert len(done) >= 2 and done == sorted(done) and done[0] < calls[0][2] and abs(done[-1] - calls[0][2]) < 0.2
    assert not capsys.readouterr().err  # no printing unless asked
    calls.clear()
    det.detect(clip)
    assert not calls  # read from the cache: nothing to follow
    det.media_progress = None
    result = avdet.load(ckpt, cache=tmp_path / "fresh2").detect([clip], progress=True)
    err = capsys.readouterr().err
    assert result[0].events and "1/1 videos" in err and det.media_progress is None


def test_cpu_estimate_before_a_long_i3d_run(fixed: tuple[Path, Path, Path]) -> None:
    from avdet.progress import cpu_estimate

    _, clip, _ = fixed
    line = cpu_estimate("i3d_vggish", "cpu", [clip])
    assert line and "8.0 media seconds" in line and "about 10 min" in line  # 8 s x 72 s per media second
    assert cpu_estimate("i3d_vggish", "cuda", [clip]) is None and cpu_estimate("lite", "cpu", [clip]) is None


def test_overlap_suppression_changes_the_fixed_answer(fixed: tuple[Path, Path, Path]) -> None:
    """Guards the two tests above: on this clip the checkpoint's overlap suppression removes events that pass the
    thresholds, so a CLI or API path that skipped suppression (or suppressed at another level) would no longer
    give the golden file's events."""
    from dataclasses import replace

    import avdet

    ckpt, clip, cache = fixed
    detector = avdet.load(ckpt, cache=cache)
    shown = detector.detect(clip).events
    calibrated = detector.operating_point
    detector.operating_point = replace(calibrated, overlap_iou=None)
    unsuppressed = detector.detect(clip).events
    detector.operating_point = replace(calibrated, overlap_iou=0.5)
    looser = detector.detect(clip).events
    assert len(unsuppressed) > len(shown) and len(looser) != len(shown), (len(shown), len(looser), len(unsuppressed))
