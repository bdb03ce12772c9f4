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
    return _feature_file(cache).parent.parent.name


@pytest.mark.parametrize("damage", ["empty", "truncated", "nan"])
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
