"""`avdet data fetch unav100` against a fake Hugging Face Hub on 127.0.0.1 (HF_ENDPOINT) serving a small fake
UnAV-100: the snapshot, resume after a cut, archives, the layout `train` reads in place, and the missing extra."""

from __future__ import annotations

import io
import json
import shlex
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_hub import COMMIT, FakeHub
from fileserver import FileServer
from typer.testing import CliRunner

from avdet.cli import app
from avdet.errors import AvdetError, DataError
from avdet.pipeline import data_fetch
from avdet.pipeline.config import load_config
from avdet.pipeline.data.annotations import load_annotations, read_classes
from avdet.pipeline.data.sources import make_source

runner = CliRunner()
REPO = "ttgeng233/UnAV-100"
VIDEOS = {"-abc_1": "train", "vid2": "train", "vid3": "validation", "vid4": "test"}
CLASSES = ["dog barking", "man speaking", "guitar"]


def _annotations() -> dict:
    database = {
        vid: {
            "duration": 8.0,
            "subset": subset,
            "annotations": [{"segment": [1.0, 4.0], "label": CLASSES[i % 3], "label_id": i % 3}],
        }
        for i, (vid, subset) in enumerate(VIDEOS.items())
    }
    return {"version": "unav100", "database": database}


def _features(rows: int = 24) -> dict[str, bytes]:
    """`<id>_rgb.npy`, `_flow.npy` (T, 1024) and `_vggish.npy` (T, 128) per video, as .npy bytes."""
    rng = np.random.default_rng(0)
    files = {}
    for vid in VIDEOS:
        for suffix, dim in (("_rgb.npy", 1024), ("_flow.npy", 1024), ("_vggish.npy", 128)):
            buf = io.BytesIO()
            np.save(buf, rng.standard_normal((rows, dim)).astype(np.float32))
            files[f"{vid}{suffix}"] = buf.getvalue()
    return files


def build_fake_dataset(root: Path, archived: bool) -> Path:
    """The dataset folder the fake Hub serves: the UnAV README's layout, or its features in a zip archive."""
    repo = root / REPO
    (repo / "annotations").mkdir(parents=True)
    (repo / "annotations" / "unav100_annotations.json").write_text(json.dumps(_annotations()))
    (repo / "README.md").write_text("fake UnAV-100 for tests\n")
    if archived:
        with zipfile.ZipFile(repo / "av_features.zip", "w") as zf:
            for name, data in _features().items():
                zf.writestr(f"av_features/{name}", data)
    else:
        (repo / "av_features").mkdir()
        for name, data in _features().items():
            (repo / "av_features" / name).write_bytes(data)
    return repo


def _hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archived: bool) -> Iterator[FileServer]:
    root = tmp_path / "hub-root"
    build_fake_dataset(root, archived)
    with FileServer(root) as server:
        FakeHub(server, root)
        monkeypatch.setenv("HF_ENDPOINT", server.base)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token or cache of the user's
        monkeypatch.setenv("AVDET_HOME", str(tmp_path / "avdet-home"))
        yield server


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    yield from _hub(tmp_path, monkeypatch, archived=False)


@pytest.fixture
def hub_archived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    yield from _hub(tmp_path, monkeypatch, archived=True)


def _resolves(server: FileServer) -> list[str]:
    return [p for m, p, _ in server.requests if m == "GET" and "/resolve/" in p]


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_fetch_maps_the_snapshot_and_a_second_run_downloads_nothing(hub: FileServer, tmp_path: Path) -> None:
    fetched = data_fetch.fetch_dataset("unav100", progress=False)
    root = tmp_path / "avdet-home" / "data" / "unav100"
    assert fetched.folder == str(root)
    assert fetched.annotations == str(root / "hub" / "annotations" / "unav100_annotations.json")
    assert fetched.features == {"i3d_vggish": str(root / "hub" / "av_features")} and fetched.videos["i3d_vggish"] == 4
    assert (root / "unav100_classes.tsv").read_text().splitlines()[0] == "0\tdog barking"
    manifest = json.loads((root / "avdet_data.json").read_text())
    assert manifest["repo_id"] == REPO and manifest["train"].startswith("avdet train --config unav_i3d_vggish")
    first = len(_resolves(hub))
    assert first == 2 + 3 * len(VIDEOS)
    data_fetch.fetch_dataset("unav100", progress=False)
    assert len(_resolves(hub)) == first  # complete files are not fetched again


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_a_cut_download_ends_complete_and_intact(hub: FileServer, tmp_path: Path) -> None:
    """huggingface_hub resumes an interrupted file itself (a few times in the call, else in the next run from its
    `.incomplete` file); whichever happens, the result is complete and intact, and a failure is one line."""
    cut = f"datasets/{REPO}/resolve/{COMMIT}/av_features/vid2_rgb.npy"
    hub.cut_once[cut] = 20_000
    try:
        data_fetch.fetch_dataset("unav100", progress=False)
    except AvdetError as err:
        assert "\n" not in str(err) and "run the command again to resume" in str(err)
    fetched = data_fetch.fetch_dataset("unav100", progress=False)
    assert fetched.videos["i3d_vggish"] == 4
    assert sum(1 for m, p, _ in hub.requests if m == "GET" and p == cut) >= 2  # it was fetched after the cut
    served = tmp_path / "hub-root" / REPO / "av_features" / "vid2_rgb.npy"
    assert (Path(fetched.features["i3d_vggish"]) / "vid2_rgb.npy").read_bytes() == served.read_bytes()


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_archives_are_unpacked_once_and_train_reads_the_layout_in_place(hub_archived: FileServer) -> None:
    fetched = data_fetch.fetch_dataset("unav100", progress=False)
    features = Path(fetched.features["i3d_vggish"])
    assert features.parts[-3:] == ("extracted", "av_features", "av_features")
    # what `avdet train` does with the printed overrides: the config, the classes, every video's features
    sets = [s for s in shlex.split(fetched.train_command()) if "=" in s]
    cfg = load_config("unav_i3d_vggish", [*sets, "model.num_classes=3"])
    assert cfg.data.released_root == str(features) and cfg.data.source == "released"
    annotations = load_annotations(cfg.data.annotations)
    assert read_classes(annotations, cfg.data.classes) == CLASSES
    source = make_source(cfg.data, annotations)
    for vid in VIDEOS:
        feats = source.load(vid)
        assert feats.visual.shape == (24, 2048) and feats.audio.shape == (24, 128)
    mtime = features.stat().st_mtime_ns
    data_fetch.fetch_dataset("unav100", progress=False)
    assert features.stat().st_mtime_ns == mtime  # not unpacked again


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_cli_prints_the_layout_and_the_train_line(hub: FileServer, tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "fetch", "unav100", "--dir", str(tmp_path / "mine")])
    assert res.exit_code == 0, res.output
    assert "i3d_vggish features:" in res.output and "(4 videos)" in res.output
    assert "avdet train --config unav_i3d_vggish" in res.output and str(tmp_path / "mine") in res.output


def test_unknown_dataset_and_missing_extra_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="unknown dataset 'unav'; avdet can fetch: unav100"):
        data_fetch.fetch_dataset("unav")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    res = runner.invoke(app, ["data", "fetch", "unav100"])
    assert res.exit_code == 1 and "pip install 'avdet[data]'" in res.output


def test_unreachable_hub_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    with pytest.raises(AvdetError) as err:
        data_fetch.fetch_dataset("unav100", tmp_path / "data", progress=False)
    assert "\n" not in str(err.value) and REPO in str(err.value)
