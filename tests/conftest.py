"""Shared fixtures. Golden fixtures come from $AVDET_GOLDEN_DIR (default ../shared/golden) and must exist."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _golden_dir() -> Path:
    return Path(os.environ.get("AVDET_GOLDEN_DIR", REPO.parent / "shared" / "golden")).resolve()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = _golden_dir()
    if not path.is_dir():
        pytest.fail(f"golden fixtures not found at {path}: set AVDET_GOLDEN_DIR", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = _golden_dir().parent / "data"
    if not path.is_dir():
        pytest.fail(f"UnAV-100 annotation folder not found at {path}", pytrace=False)
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu")


# Session fixtures that render, extract or train (tens of seconds on 2 cores): every test needing one, directly or
# through another fixture, is slow. Modules whose own fixtures train say so with `pytestmark = pytest.mark.slow`.
SLOW_FIXTURES = ("sample_set", "trained_run")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marks added here count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in SLOW_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--gpu"):
        return
    # `gpu` stays declared for tests of CUDA paths; there are none yet (no CUDA machine runs the suite).
    skip = pytest.mark.skip(reason="needs --gpu and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_clip(
    path: Path,
    duration: float = 3.0,
    *,
    size: str = "160x90",
    fps: int = 25,
    audio: bool = True,
    video: bool = True,
    frequency: int = 440,
    extra: list[str] | None = None,
) -> Path:
    """Synthesise a small clip with ffmpeg's test sources (no binary fixtures in the repo)."""
    import subprocess

    args = ["ffmpeg", "-y", "-nostdin", "-loglevel", "error"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={duration}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=44100:duration={duration}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-ac", "2"]
    args += (extra or []) + [str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few small generated clips shared by the media / store / extract tests."""
    root = tmp_path_factory.mktemp("clips")
    return {
        "av": make_clip(root / "av.mp4", 3.0),
        "silent": make_clip(root / "silent.mp4", 2.0, audio=False),
        "audio_only": make_clip(root / "audio_only.mp4", 2.0, video=False),
        "dash": make_clip(root / "-dash id.mp4", 2.0),
    }


@dataclass(frozen=True)
class SampleSet:
    """A generated sample dataset with its `lite` features already in a feature store."""

    root: Path
    annotations: Path
    classes: Path
    cache: Path

    def overrides(self, **extra: object) -> list[str]:
        """`--set` overrides pointing configs/tiny.yaml at this dataset (plus `extra`, e.g. train__epochs=3)."""
        values = {
            "data.annotations": self.annotations,
            "data.classes": self.classes,
            "data.cache": self.cache,
            "train.device": "cpu",
            **{k.replace("__", "."): v for k, v in extra.items()},
        }
        return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="session")
def sample_set(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    """24 generated clips of 6-10 s (train/validation/test) with `lite` features cached: the tiny-training data."""
    from avdet.pipeline.extract import ExtractOptions, extract_videos
    from avdet.pipeline.synth.clips import SampleConfig, make_sample

    root = tmp_path_factory.mktemp("sample")
    ann = make_sample(root, SampleConfig(num_videos=24, seed=7, min_duration=6.0, max_duration=10.0, workers=2))
    cache = root / "cache"
    results = extract_videos(sorted((root / "videos").glob("*.mp4")), cache, ExtractOptions(), workers=2)
    failed = [r for r in results if r.status == "failed"]
    assert not failed, failed
    return SampleSet(root, Path(ann), root / "classes.tsv", cache)


@pytest.fixture(scope="session")
def trained_run(sample_set: SampleSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoCo trained on `sample_set` (the run folder: best.ckpt, last.ckpt, config.yaml, tensorboard/)."""
    from avdet.pipeline.config import load_config
    from avdet.pipeline.train import train

    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny", sample_set.overrides(train__epochs=14, train__eval_start=4))
    result = train(cfg, run_dir)
    result_path = run_dir / "result.json"
    result_path.write_text(json.dumps({"best": result.best_metric, "history": result.history}))
    return run_dir


# -- post-processing through the real entry points -------------------------------------------------------------------
REFERENCE_TEST_CFG_NAMES = {"nms_sigma": "sigma", "multiclass_nms": "multiclass"}  # reference name -> avdet field


def reference_postprocess(test_cfg: dict):
    """A UnAV / ActionFormer / CCNet `test_cfg` mapping (a golden file's `test_config`) as a PostprocessConfig;
    `ext_score_file` must be None and every other key must map to a field."""
    from dataclasses import fields

    from avdet.pipeline.postprocess import PostprocessConfig

    known = {f.name for f in fields(PostprocessConfig)}
    values = {}
    for key, value in test_cfg.items():
        if key == "ext_score_file":
            assert value is None, "external classification scores are not supported"
            continue
        name = REFERENCE_TEST_CFG_NAMES.get(key, key)
        assert name in known, f"unknown reference test_cfg key {key!r}"
        values[name] = value
    return PostprocessConfig(**values)


def video_nms(segments, scores, labels, cfg=None, **options):
    """One video's candidates through `batched_nms` under a PostprocessConfig (`cfg`) or NMSSettings keywords."""
    import torch

    from avdet.pipeline.nms import NMSSettings, batched_nms

    nms = cfg.nms if cfg is not None else NMSSettings(**options)
    (out,) = batched_nms(segments, scores, labels, torch.zeros(len(scores), dtype=torch.long), 1, nms)
    return out


def seeded_model(model_cls: type, config_cls: type, base: dict, **changes: object):
    """A model built right after `torch.manual_seed(0)` from the config fields `base` with `changes`."""
    import torch

    torch.manual_seed(0)
    return model_cls(config_cls(**{**base, **changes}))
