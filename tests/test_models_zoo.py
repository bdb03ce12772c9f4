"""Named pretrained models (pipeline/models_zoo.py) against a server on 127.0.0.1 serving the golden recipe models
in the references' checkpoint format: download once, strict conversion reproducing the golden outputs, unpinned
files, checksum mismatch, offline, `avdet models`, `avdet detect --model` and `avdet.load(NAME)`."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fileserver import FileServer
from typer.testing import CliRunner
from zoo_served import CLASSES, build_served_zoo

import avdet
from avdet.cli import app
from avdet.errors import ConfigError, DownloadError
from avdet.pipeline import models_zoo
from avdet.pipeline.checkpoint import load_checkpoint
from conftest import make_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, golden_dir: Path) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("served")
    build_served_zoo(root, golden_dir)
    with FileServer(root) as server:
        yield server


@pytest.fixture
def zoo_env(served: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$AVDET_HOME in a temp folder, the index from the server, a private feature cache."""
    monkeypatch.setenv(models_zoo.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setenv(models_zoo.INDEX_ENV, served.url("index.json"))
    monkeypatch.setenv("AVDET_CACHE", str(tmp_path / "features"))
    served.requests.clear()
    return tmp_path / "home"


def _gets(server: FileServer, name: str) -> int:
    return sum(1 for method, path, _ in server.requests if method == "GET" and path == name)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
@pytest.mark.parametrize("name", ["golden-unav", "golden-ccnet"])
def test_download_once_and_strict_conversion_reproduces_the_golden_outputs(
    name: str, zoo_env: Path, served: FileServer, golden_dir: Path
) -> None:
    path = models_zoo.model_checkpoint(name, progress=False)
    assert path == zoo_env / "models" / name / f"{name}.safetensors"
    ckpt = load_checkpoint(path)
    assert ckpt.classes == CLASSES and ckpt.extractor == {"name": "i3d_vggish", "released": True}
    golden = torch.load(golden_dir / f"{name.split('-')[1]}_model.pt", weights_only=True)
    video, want = golden["inputs"][0], golden["outputs"][0]
    visual, audio = video["visual"][None].float(), video["audio"][None].float()  # (1, T, C)
    length = ckpt.model.padded_length(visual.shape[1])
    pad = length - visual.shape[1]
    mask = torch.arange(length)[None] < visual.shape[1]  # (1, T')
    with torch.no_grad():
        out = ckpt.model(
            torch.nn.functional.pad(audio, (0, 0, 0, pad)), torch.nn.functional.pad(visual, (0, 0, 0, pad)), mask
        )
    for level in range(len(want["cls_logits"])):
        torch.testing.assert_close(out.cls_logits[level][0], want["cls_logits"][level].float(), rtol=1e-4, atol=1e-4)
    # a second resolution downloads nothing and verifies the converted file against its recorded digest
    assert _gets(served, f"{name}.pth.tar") == 1
    converted_at = path.stat().st_mtime_ns
    assert models_zoo.model_checkpoint(name, progress=False) == path
    assert _gets(served, f"{name}.pth.tar") == 1 and path.stat().st_mtime_ns == converted_at  # kept, not redone
    sums = (path.parent / "SHA256SUMS").read_text()
    assert f"{name}.safetensors" in sums and f"{name}.pth.tar" in sums


def test_unpinned_model_says_so_once_and_later_loads_are_verified(
    zoo_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        path = models_zoo.model_checkpoint("tiny-unav-lite", progress=False)
        models_zoo.model_checkpoint("tiny-unav-lite", progress=False)
    notes = [r.getMessage() for r in caplog.records if "unpinned" in r.getMessage()]
    assert len(notes) == 1 and "tiny-unav-lite" in notes[0] and "\n" not in notes[0]
    recorded = (path.parent / "SHA256SUMS").read_text()
    assert "tiny-unav-lite.pth.tar" in recorded
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the converted file changes on disk: the next load refuses it
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="recorded when it was downloaded"):
        models_zoo.model_checkpoint("tiny-unav-lite", progress=False)


def test_a_changed_pinned_digest_is_refused_and_nothing_is_kept(
    served: FileServer, zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = json.loads((served.root / "index.json").read_text())
    entry = next(e for e in index["models"] if e["name"] == "golden-unav")
    entry["sha256"] = "ab" * 32
    local = tmp_path / "index.json"
    local.write_text(json.dumps({"base_url": served.base + "/", "models": [entry]}))
    monkeypatch.setenv(models_zoo.INDEX_ENV, str(local))
    with pytest.raises(DownloadError) as err:
        models_zoo.model_checkpoint("golden-unav", progress=False)
    message = str(err.value)
    assert served.url("golden-unav.pth.tar") in message and "ab" * 32 in message and entry["url"] in message
    assert not any((zoo_env / "models" / "golden-unav").glob("*.pth.tar*"))


def test_offline_names_the_url_and_where_to_place_the_file(
    served: FileServer, zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    index = json.loads((served.root / "index.json").read_text())
    local = tmp_path / "index.json"
    local.write_text(json.dumps({"base_url": dead, "models": index["models"]}))
    monkeypatch.setenv(models_zoo.INDEX_ENV, str(local))
    res = runner.invoke(app, ["detect", str(tmp_path / "clip.mp4"), "--model", "golden-unav"])
    want = zoo_env / "models" / "golden-unav" / "golden-unav.pth.tar"
    assert res.exit_code == 1
    assert f"{dead}golden-unav.pth.tar" in res.output and str(want) in res.output.replace("\n", "")


def test_unknown_name_suggests_the_closest(zoo_env: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'golden-unv' \(did you mean 'golden-unav'\?\)"):
        models_zoo.model_checkpoint("golden-unv", progress=False)


def test_models_command_lists_the_index(zoo_env: Path) -> None:
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(rows) == {"golden-unav", "golden-ccnet", "tiny-unav-lite"}
    assert rows["golden-unav"]["pinned"] and not rows["tiny-unav-lite"]["pinned"]
    assert rows["golden-unav"]["url"].startswith("http://127.0.0.1:") and not rows["golden-unav"]["downloaded"]
    table = runner.invoke(app, ["models"])
    assert table.exit_code == 0 and "unpinned" in table.output and "tiny-unav-lite" in table.output


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_builtin_index_pins_what_can_be_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models_zoo.INDEX_ENV, raising=False)
    index = models_zoo.load_index()
    assert {"unav-unav100", "ccnet-unav100"} <= set(index)
    for model in index.values():
        assert "/master/" not in model.url and model.published_map is not None and model.license
        assert model.classes_url and "/raw/" in model.classes_url and "/master/" not in model.classes_url


@pytest.mark.slow
def test_detect_model_name_and_avdet_load_give_the_same_events(zoo_env: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", duration=6.0)
    events_json = tmp_path / "events.json"
    # The golden classifier keeps a prior bias near p = 0.01, so its scores stay low: 0.02 shows a few events.
    args = ["detect", str(clip), "--model", "tiny-unav-lite", "--threshold", "0.02", "--out", str(events_json)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    written = json.loads(events_json.read_text())
    assert written["events"], "the model found no event above its threshold"
    assert {e["label"] for e in written["events"]} <= set(CLASSES)
    detector = avdet.load("tiny-unav-lite", threshold=0.02)
    events = detector.detect(clip).events
    # the same events (the file lists them by time with rounded seconds, the API by score)
    api = sorted((e.label, e.start, e.end, e.score) for e in events)
    cli = sorted((e["label"], e["start"], e["end"], e["score"]) for e in written["events"])
    assert len(api) == len(cli)
    for a, c in zip(api, cli, strict=True):
        assert a[0] == c[0] and a[1:] == pytest.approx(c[1:], abs=0.006)
