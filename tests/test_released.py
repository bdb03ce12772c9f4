"""The released UnAV-100 feature folders (I3D-VGGish, ONE-PEACE) read in place, on small generated folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from avdet.errors import ConfigError, DataError, WeightsError
from avdet.extractors.registry import build_extractor_set
from avdet.pipeline.data.sources import ReleasedSource
from avdet.pipeline.io.released import ReleasedFeatures


def write_i3d_vggish(root: Path, vid: str, rows: int, audio_rows: int | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "rgb": rng.standard_normal((rows, 1024)).astype(np.float32),
        "flow": rng.standard_normal((rows, 1024)).astype(np.float32),
        "vggish": rng.standard_normal((audio_rows or rows, 128)).astype(np.float32),
    }
    for name, arr in arrays.items():
        np.save(root / f"{vid}_{name}.npy", arr)
    return arrays


def write_onepeace(root: Path, vid: str, rows: int, audio_rows: int | None = None) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        "video_finetune": rng.standard_normal((rows, 1536)).astype(np.float32),
        "audio": rng.standard_normal((audio_rows or rows, 1536)).astype(np.float32),
    }
    for name, arr in arrays.items():
        np.save(root / f"{vid}_one_peace_{name}.npy", arr)
    return arrays


def test_i3d_vggish_layout(tmp_path: Path) -> None:
    arrays = write_i3d_vggish(tmp_path, "-dash_id", 30)
    write_i3d_vggish(tmp_path, "_under", 12)
    write_i3d_vggish(tmp_path, "abc", 5)
    released = ReleasedFeatures(tmp_path, "i3d_vggish")
    assert released.video_ids() == ["-dash_id", "_under", "abc"]
    visual, audio = released.load("-dash_id")
    assert visual.values.shape == (30, 2048) and audio.values.shape == (30, 128)
    np.testing.assert_array_equal(visual.values[:, :1024], arrays["rgb"])  # RGB first, then flow
    np.testing.assert_array_equal(visual.values[:, 1024:], arrays["flow"])
    np.testing.assert_array_equal(audio.values, arrays["vggish"])
    centres = visual.times.mean(axis=1)
    np.testing.assert_allclose(centres, 0.48 + 0.32 * np.arange(30), atol=1e-9)
    np.testing.assert_allclose(visual.times[:, 1] - visual.times[:, 0], 0.96, atol=1e-9)
    np.testing.assert_array_equal(audio.times, visual.times)


def test_onepeace_layout(tmp_path: Path) -> None:
    arrays = write_onepeace(tmp_path, "vid1", 40)
    released = ReleasedFeatures(tmp_path, "onepeace")
    assert released.video_ids() == ["vid1"]
    visual, audio = released.load("vid1")
    assert visual.values.shape == (40, 1536) and audio.values.shape == (40, 1536)
    np.testing.assert_array_equal(visual.values, arrays["video_finetune"])
    np.testing.assert_allclose(visual.times.mean(axis=1), 0.50 + 0.25 * np.arange(40), atol=1e-9)


def test_one_row_mismatch_warns_and_crops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_i3d_vggish(tmp_path, "a", 20, audio_rows=21)
    write_onepeace(tmp_path, "b", 17, audio_rows=16)
    with caplog.at_level(logging.WARNING, logger="avdet.pipeline.io.released"):
        visual, audio = ReleasedFeatures(tmp_path, "i3d_vggish").load("a")
    assert len(visual) == len(audio) == 20
    assert "differ by 1 row" in caplog.text
    visual, audio = ReleasedFeatures(tmp_path, "onepeace").load("b")
    assert len(visual) == len(audio) == 16


def test_larger_mismatch_is_refused(tmp_path: Path) -> None:
    write_i3d_vggish(tmp_path, "a", 20, audio_rows=23)
    with pytest.raises(DataError, match=r"a \(visual vs audio\): lengths 20 and 23 differ by 3 rows"):
        ReleasedFeatures(tmp_path, "i3d_vggish").load("a")
    np.save(tmp_path / "b_rgb.npy", np.zeros((10, 1024), np.float32))
    np.save(tmp_path / "b_flow.npy", np.zeros((14, 1024), np.float32))
    np.save(tmp_path / "b_vggish.npy", np.zeros((10, 128), np.float32))
    with pytest.raises(DataError, match=r"_rgb\.npy vs _flow\.npy"):
        ReleasedFeatures(tmp_path, "i3d_vggish").load("b")
    write_i3d_vggish(tmp_path, "c", 20, audio_rows=22)
    assert len(ReleasedFeatures(tmp_path, "i3d_vggish", max_mismatch=2).load("c")[0]) == 20


def test_incomplete_and_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_i3d_vggish(tmp_path, "ok", 8)
    np.save(tmp_path / "partial_rgb.npy", np.zeros((8, 1024), np.float32))
    (tmp_path / "notes.txt").write_text("not a feature")
    released = ReleasedFeatures(tmp_path, "i3d_vggish")
    with caplog.at_level(logging.WARNING, logger="avdet.pipeline.io.released"):
        assert released.video_ids() == ["ok"]
    assert "1 video(s) lack some of" in caplog.text
    with pytest.raises(DataError, match=r"partial: missing partial_flow\.npy"):
        released.load("partial")
    np.save(tmp_path / "wide_rgb.npy", np.zeros((8, 512), np.float32))
    with pytest.raises(DataError, match=r"wide_rgb\.npy: expected shape \(T, 1024\)"):
        released.load("wide")
    bad = write_i3d_vggish(tmp_path, "nan", 8)["vggish"]
    bad[3, 5] = np.nan
    np.save(tmp_path / "nan_vggish.npy", bad)
    with pytest.raises(DataError, match="NaN"):
        released.load("nan")
    write_i3d_vggish(tmp_path, "junk", 8)
    (tmp_path / "junk_flow.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"junk_flow\.npy: not a readable \.npy array"):
        released.load("junk")


def test_bad_root_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        ReleasedFeatures(tmp_path / "nope", "i3d_vggish")
    with pytest.raises(ConfigError, match="unknown released-feature layout"):
        ReleasedFeatures(tmp_path, "c3d")  # type: ignore[arg-type]


def test_released_source_gives_video_features_on_the_grid(tmp_path: Path) -> None:
    write_i3d_vggish(tmp_path, "v", 93, audio_rows=94)
    annotations = {"database": {"v": {"duration": 30.4, "subset": "train", "annotations": []}}}
    video = ReleasedSource(tmp_path, "i3d_vggish", annotations).load("v")
    assert video.visual.shape == (93, 2048) and video.audio.shape == (93, 128)
    assert video.grid.offset == pytest.approx(0.48) and video.grid.step == pytest.approx(0.32)
    write_onepeace(tmp_path, "w", 120)
    annotations["database"]["w"] = {"duration": 30.0, "subset": "train", "annotations": []}
    video = ReleasedSource(tmp_path, "onepeace", annotations).load("w")
    assert video.grid.offset == pytest.approx(0.5) and video.grid.step == pytest.approx(0.25)


def test_onepeace_extractor_states_what_it_needs() -> None:
    with pytest.raises(WeightsError) as err:
        build_extractor_set("onepeace")
    text = str(err.value)
    assert "ONE-PEACE" in text and "github.com/OFA-Sys/ONE-PEACE" in text and "_one_peace_audio.npy" in text
    assert "\n" not in text
