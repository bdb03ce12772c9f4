"""Bad inputs and faults (issue 17): each case is one clear line naming the file and the problem, the batch goes on,
nothing is lost or overwritten without being asked, and a damaged cache heals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avdet.errors import CheckpointError, ConfigError, DataError
from avdet.pipeline.config import load_config, save_config


# -- configs -----------------------------------------------------------------------------------------------------
def test_set_reads_yaml_1_1_exponent_floats() -> None:
    assert load_config("tiny", ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-0.1", "train.lr must be > 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("train.epochs=-1", "train.epochs must be >= 1"),
        ("train.ema_decay=1.5", "train.ema_decay must be < 1"),
    ],
)
def test_impossible_training_values_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_unknown_set_key_is_blamed_on_set() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["train.lr=0.01", "train.nope=1"])
    assert str(err.value).startswith("--set train.nope=1: unknown config key train.nope")


def test_binary_config_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(ConfigError, match="bad.yaml: not a text file"):
        load_config(bad)


# -- class lists and annotations -----------------------------------------------------------------------------------
def _annotations(label_ids: list[int]) -> dict:
    events = [{"segment": [0.0, 1.0], "label": f"c{i}", "label_id": i} for i in label_ids]
    return {"database": {"v": {"subset": "train", "duration": 5.0, "annotations": events}}}


def test_duplicate_class_id_is_refused(tmp_path: Path) -> None:
    from avdet.pipeline.data.annotations import read_classes

    tsv = tmp_path / "classes.tsv"
    tsv.write_text("0\tdog\n1\tcat\n1\tcow\n")
    with pytest.raises(DataError, match="classes.tsv: label_id 1 appears twice"):
        read_classes(_annotations([0]), tsv)


def test_binary_class_list_is_a_clear_error(tmp_path: Path) -> None:
    from avdet.pipeline.data.annotations import read_classes

    tsv = tmp_path / "classes.tsv"
    tsv.write_bytes(b"0\t\xff\xfe\x81\n")
    with pytest.raises(DataError, match="classes.tsv: not a text class list"):
        read_classes(_annotations([0]), tsv)


def test_label_id_beyond_the_class_list_is_refused_before_training(tmp_path: Path) -> None:
    from avdet.pipeline.data.annotations import read_classes

    tsv = tmp_path / "classes.tsv"
    tsv.write_text("".join(f"{i}\tc{i}\n" for i in range(5)))
    with pytest.raises(DataError, match="label_id 7 but the class list has 5 classes"):
        read_classes(_annotations([0, 7]), tsv)


# -- convert and checkpoints ---------------------------------------------------------------------------------------
def _classes(tmp_path: Path) -> Path:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("0\tdog\n1\tcat\n")
    return tsv


def _cli(*args: object):
    from typer.testing import CliRunner

    from avdet.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_convert_text_source_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "notes.pth"
    src.write_text("hello world, not a checkpoint\n")
    res = _cli("convert", src, tmp_path / "out.ckpt", "--classes", _classes(tmp_path))
    assert res.exit_code == 1, res.output
    assert "notes.pth: not a readable PyTorch checkpoint" in res.output, res.output
    assert not (tmp_path / "out.ckpt").exists()


def test_convert_binary_classes_or_config_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "src.pth"
    src.write_text("x")
    binary = tmp_path / "bin.tsv"
    binary.write_bytes(b"\xff\xfe\x81\x00")
    res = _cli("convert", src, tmp_path / "o.ckpt", "--classes", binary)
    assert res.exit_code == 1 and "bin.tsv: not a text class list" in res.output, res.output
    res = _cli("convert", src, tmp_path / "o.ckpt", "--classes", _classes(tmp_path), "--config", binary)
    assert res.exit_code == 1 and "bin.tsv: not a text file" in res.output, res.output


def test_bad_checkpoint_reason_is_words_not_a_number(tmp_path: Path) -> None:
    from avdet.pipeline.checkpoint import read_checkpoint

    bad = tmp_path / "bad.ckpt"
    bad.write_text("hquit this")  # the unpickler reads 'h' as a memo lookup: KeyError(113)
    bad2 = tmp_path / "text.ckpt"
    bad2.write_text("K1 text")
    for path in (bad, bad2):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert message.count(str(path)) == 1 and "\n" not in message, message
        reason = message.rsplit("(", 1)[-1].rstrip(")")
        assert not reason.strip("'\" ").isdigit() and "weights_only" not in reason, message


# -- train: the run folder -----------------------------------------------------------------------------------------
def test_train_refuses_a_run_folder_holding_a_run(tmp_path: Path) -> None:
    from avdet.pipeline.train import train

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"precious")
    with pytest.raises(DataError, match="--resume"):
        train(load_config("tiny"), run)
    assert (run / "best.ckpt").read_bytes() == b"precious"


def test_train_cli_same_command_twice_keeps_the_first_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_bytes(b"precious")
    res = _cli("train", "--config", "tiny", "--run-dir", run)
    assert res.exit_code == 1 and "holds a run already" in res.output and "--overwrite" in res.output, res.output
    assert (run / "last.ckpt").read_bytes() == b"precious"


def test_resume_with_a_changed_setting_says_what_differs(tmp_path: Path) -> None:
    from avdet.pipeline.train import train

    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config("tiny"), run / "config.yaml")
    before = (run / "config.yaml").read_text()
    (run / "last.ckpt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.002 -> 0\.01"):
        train(load_config("tiny", ["train.lr=0.01"]), run, resume=True)
    with pytest.raises(ConfigError, match="model.embed_dim"):
        train(load_config("tiny", ["model.embed_dim=32"]), run, resume=True)
    assert (run / "config.yaml").read_text() == before
    assert yaml.safe_load(before)["train"]["lr"] == pytest.approx(2e-3)


# -- the feature store ---------------------------------------------------------------------------------------------
def _extract(paths: list[Path], cache: Path, **options: object) -> list:
    from avdet.pipeline.extract import ExtractOptions, extract_videos

    return extract_videos(paths, cache, ExtractOptions(**options))


def _feature_file(cache: Path) -> Path:
    (found,) = sorted(cache.glob("*/??/*.npz"))
    return found


@pytest.mark.slow  # extracts through ffmpeg for each kind of damage
@pytest.mark.parametrize("damage", ["truncated", "garbled", "text"])
def test_damaged_index_is_rebuilt_from_the_feature_files(clips: dict[str, Path], tmp_path: Path, damage: str) -> None:
    from avdet.pipeline.io.store import FeatureStore

    cache = tmp_path / "cache"
    (first,) = _extract([clips["av"]], cache)
    index = cache / "index.sqlite"
    FeatureStore(cache)  # checkpoint the WAL into the main file, then damage it
    data = index.read_bytes()
    if damage == "truncated":
        index.write_bytes(data[: len(data) // 3])
    elif damage == "garbled":
        index.write_bytes(data[:100] + bytes(range(256)) * 4 + data[1124:])
    else:
        index.write_text("this is not a database\n")
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    store = FeatureStore(cache)
    (entry,) = store.entries(first_key(cache), "done")
    assert entry.video_id == "av" and entry.rows == first.rows
    assert store.load("av", first_key(cache)).duration == pytest.approx(first.media_seconds)
    assert list(cache.glob("index.sqlite.damaged-*"))
    (again,) = _extract([clips["av"]], cache)
    assert again.status == "cached"


def first_key(cache: Path) -> str:
    """The extractor key (spec folder) of the cache's features."""
    return sorted(cache.glob("*/??/*.npz"))[0].parent.parent.name


@pytest.mark.slow  # re-extracts through ffmpeg for each kind of damage
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbled", "nan"])
def test_damaged_feature_file_is_recomputed(clips: dict[str, Path], tmp_path: Path, damage: str) -> None:
    import numpy as np

    from avdet.errors import StoreError
    from avdet.pipeline.io.store import FeatureStore, npz_bytes

    cache = tmp_path / "cache"
    _extract([clips["av"]], cache)
    path = _feature_file(cache)
    good = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbled":
        path.write_bytes(good[:200] + bytes(range(256)) * 8 + good[200 + 2048 :])
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["visual"][3, 0] = np.nan
        path.write_bytes(npz_bytes(arrays))
    with pytest.raises(StoreError) as err:
        FeatureStore(cache).load("av", first_key(cache))
    assert str(path) in str(err.value) and "avdet extract" in str(err.value)
    (res,) = _extract([clips["av"]], cache)
    assert res.status == "done", res
    assert path.read_bytes() == good


# -- paths and names: extract ---------------------------------------------------------------------------------------
def _distinct_clip(path: Path, frequency: int) -> Path:
    from conftest import make_clip

    return make_clip(path, 1.5, frequency=frequency)


@pytest.mark.slow  # renders and extracts a clip per awkward name
def test_awkward_file_names_reach_ffmpeg_as_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-leading-dash.mp4` after `--`, `-` (stdin to ffmpeg) and `concat:x.mp4` (a protocol) are plain files."""
    from avdet.pipeline.io.store import FeatureStore

    monkeypatch.chdir(tmp_path)
    names = ["-leading-dash.mp4", "-", "concat:x.mp4"]
    for i, name in enumerate(names):
        _distinct_clip(tmp_path / "src" / f"{i}.mp4", 300 + 200 * i).rename(tmp_path / name)
    res = _cli("extract", "--cache", "cache", "--", *names)
    assert res.exit_code == 0, res.output
    entries = FeatureStore(tmp_path / "cache").entries(first_key(tmp_path / "cache"), "done")
    assert sorted(e.video_id for e in entries) == sorted(Path(n).stem for n in names)
    assert len(list((tmp_path / "cache").glob("*/??/*.npz"))) == 3


@pytest.mark.slow  # extraction with worker processes
@pytest.mark.parametrize("workers", [1, 2])
def test_fifo_and_looping_symlink_fail_alone(clips: dict[str, Path], tmp_path: Path, workers: int) -> None:
    import os
    import subprocess
    import sys

    from avdet.pipeline.io.store import FeatureStore

    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "avdet", "extract", "--cache", str(cache), "--workers", str(workers)]
    cmd += [str(tmp_path / "fifo.mp4"), str(tmp_path / "loop.mp4"), str(clips["av"])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "fifo.mp4: not a regular file (a named pipe)" in res.stderr
    assert "loop.mp4: symbolic link loop" in res.stderr
    assert "Traceback" not in res.stderr and "crashed" not in res.stderr
    store = FeatureStore(cache)
    key = first_key(cache)
    assert [e.video_id for e in store.entries(key, "done")] == ["av"]
    assert sorted(e.video_id for e in store.entries(key, "failed")) == ["fifo", "loop"]


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_corrupt_middle_is_counted_warned_and_recorded(clips: dict[str, Path], tmp_path: Path) -> None:
    import random

    from avdet.pipeline.io.store import FeatureStore

    data = bytearray(clips["av"].read_bytes())
    rng = random.Random(0)
    for i in range(len(data) // 3, len(data) // 3 + 3000):
        data[i] = rng.randrange(256)
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    res = _cli("extract", "--cache", tmp_path / "cache", bad)
    assert "damaged.mp4: decoded with" in res.output and "decode errors" in res.output, res.output
    (entry,) = FeatureStore(tmp_path / "cache").entries(first_key(tmp_path / "cache"))
    assert entry.status == "done" and "decode errors" in (entry.reason or "")


def test_duplicate_video_ids_in_one_batch_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from avdet.pipeline.extract import warn_duplicate_ids

    with caplog.at_level("WARNING"):
        assert warn_duplicate_ids([tmp_path / "a" / "v.mp4", tmp_path / "b" / "v.mkv", tmp_path / "w.mp4"]) == ["v"]
    assert "video id 'v' is shared by 2 files" in caplog.text


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_markup_in_paths_is_printed_not_parsed(clips: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "a[" / "]b"  # the path holds the markup `[/]`
    folder.mkdir(parents=True)
    (folder / "bad.mp4").write_text("not a video")
    shutil.copy(clips["av"], folder / "x[bold].mp4")
    res = _cli("extract", "--cache", tmp_path / "cache", folder)
    assert res.exit_code == 1, res.output
    assert f"failed {folder}/bad.mp4: not readable media" in res.output, res.output
    assert "done   │      1" in res.output, res.output


# -- processes -------------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    import os

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _descendants(pid: int) -> list[int]:
    """Children, their children, ...: workers forked by the forkserver are the server's children."""
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    """A process's command line, or "" when it exited between listing and reading (a short-lived ffmpeg child)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # kills an extract process with workers
def test_workers_die_with_a_killed_extract(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    videos = [_distinct_clip(tmp_path / "v" / f"v{i}.mp4", 300 + 50 * i) for i in range(8)]
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "avdet", "extract", "--cache", str(cache), "--workers", "2", *map(str, videos)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(cache.glob("*/??/*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [c for c in _descendants(proc.pid) if "multiprocessing" in _cmdline(c)]
    assert proc.poll() is None and workers, "extract finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:
        import os

        os.kill(w, signal.SIGKILL)
    assert not survivors, "worker processes outlived the killed extract"


# -- eval ------------------------------------------------------------------------------------------------------------
def test_eval_without_predictions_in_the_split_scores_zero(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json

    from avdet.pipeline.metrics.mean_ap import evaluate

    event = {"segment": [1.0, 2.0], "label": "x", "label_id": 0}
    db = {v: {"subset": s, "duration": 10.0, "annotations": [event]} for v, s in (("a", "test"), ("b", "train"))}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"database": db}))
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"results": {"b": [{"segment": [1.0, 2.0], "label_id": 0, "score": 0.9}]}}))
    with caplog.at_level("WARNING"):
        assert evaluate({"database": db}, json.loads(preds.read_text())).average_mAP == 0.0
    assert "no predictions for any video of split 'test'" in caplog.text
    res = _cli("eval", "--predictions", preds, "--annotations", ann, "--json", tmp_path / "s.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s.json").read_text())["average_mAP"] == 0.0


# -- train: pre-flight ----------------------------------------------------------------------------------------------
def test_a_run_that_cannot_finish_fails_before_its_first_step(sample_set, tmp_path: Path) -> None:
    """CCNet's fixed temporal size: validation videos longer than max_seq_len are refused before training, not at
    the first validation."""
    from avdet.pipeline.train import Reporter, train

    steps: list[int] = []
    cfg = load_config("tiny_ccnet", sample_set.overrides(model__max_seq_len=16, train__epochs=1, train__eval_start=0))
    with pytest.raises(ConfigError, match=r"\((validation|test)\): CCNet takes at most max_seq_len=16"):
        train(cfg, tmp_path / "run", reporter=Reporter(step=lambda step, losses: steps.append(step)))
    assert not steps and not (tmp_path / "run" / "last.ckpt").exists()


# -- detect ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoCo checkpoint with random weights on `lite` features: enough for detect's paths and messages."""
    from avdet.models.registry import model_entry
    from avdet.pipeline.checkpoint import save_checkpoint
    from avdet.pipeline.config import to_dict
    from avdet.pipeline.extract import ExtractOptions

    cfg = load_config("tiny")
    model_cfg = cfg.model_config()
    model = model_entry("loco").model_cls(model_cfg)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.ckpt"
    payload = {
        "task": "dense",
        "model": {"name": "loco", "config": to_dict(model_cfg)},
        "classes": [f"class [{i}]" for i in range(model_cfg.num_classes)],
        "extractor": ExtractOptions().build().spec,
        "postprocess": to_dict(cfg.postprocess),
        "state_dict": model.state_dict(),
    }
    save_checkpoint(path, payload)
    return path


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_detect_with_markup_in_paths(clips: dict[str, Path], untrained_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "a[" / "]b"  # `[/]` in the path
    folder.mkdir(parents=True)
    good = folder / "x[bold].mp4"
    shutil.copy(clips["av"], good)
    bad = folder / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "out"
    res = _cli("detect", good, bad, "--checkpoint", untrained_checkpoint, "--cache", tmp_path / "c", "--out", out)
    assert res.exit_code == 1, res.output
    assert f"{good}: " in res.output and (out / "x[bold].json").is_file(), res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.startswith("failed")]
    assert line.startswith(f"failed {bad}: not readable media") and line.count("bad.mp4") == 1, line


def test_detect_never_writes_two_videos_to_one_file(clips: dict[str, Path], untrained_checkpoint: Path, tmp_path: Path):
    import shutil

    for sub in ("one", "two"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(clips["av"] if sub == "one" else clips["dash"], tmp_path / "in" / sub / "same.mp4")
    out = tmp_path / "out"
    res = _cli("detect", tmp_path / "in", "--checkpoint", untrained_checkpoint, "--cache", tmp_path / "c", "--out", out)
    assert res.exit_code == 1 and "would both write" in res.output, res.output
    assert not list(out.glob("*.json")) if out.exists() else True


def test_damaged_spec_file_is_skipped_and_rewritten(tmp_path: Path) -> None:
    from avdet.pipeline.io.store import FeatureStore

    store = FeatureStore(tmp_path)
    key = store.register_spec({"name": "toy", "dim": 3})
    (tmp_path / key / "spec.json").write_bytes(b"\xff{garbled")
    assert store.specs("toy") == []
    assert store.register_spec({"name": "toy", "dim": 3}) == key
    assert store.specs("toy") == [(key, {"name": "toy", "dim": 3})]
