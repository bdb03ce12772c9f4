"""A newcomer's first hour with the CLI (issue 27, item 5): each rough edge they hit, with the behaviour now."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_conventions import _commands, _tiny_eval_files
from typer.testing import CliRunner

from avdet.cli import app
from avdet.console import json_argv
from avdet.errors import ConfigError, DataError


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _avdet(*args: object, stderr_to: Path | None = None) -> subprocess.CompletedProcess:
    """`avdet ...` as a shell runs it (stderr not a terminal: a file when `stderr_to`)."""
    cmd = [sys.executable, "-m", "avdet", *map(str, args)]
    if stderr_to is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    with open(stderr_to, "w") as err:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=120, check=False)


# -- log lines -----------------------------------------------------------------------------------------------------
def test_log_lines_are_not_padded_when_stderr_is_a_file(tmp_path: Path) -> None:
    """`-vv 2> log` once wrote 300 KB for 3 records: each padded to the 100,000 columns tables get off a terminal."""
    ann, preds = _tiny_eval_files(tmp_path)
    doc = json.loads(ann.read_text())
    doc["database"]["w"] = {**doc["database"]["v"], "subset": "validation"}
    ann.write_text(json.dumps(doc))
    pred = json.loads(preds.read_text())
    pred["database"] = {"w": pred["database"]["v"]}  # no prediction for the test split's video: a warning
    preds.write_text(json.dumps(pred))
    log = tmp_path / "log"
    res = _avdet("-vv", "eval", "--predictions", preds, "--annotations", ann, stderr_to=log)
    assert res.returncode == 0
    text = log.read_text()
    assert "no predictions for any video" in text
    assert len(text) < 2000 and max(len(line) for line in text.splitlines()) < 300, len(text)


# -- --json -------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_json_dash_is_accepted_by_every_command_that_has_json(tmp_path: Path) -> None:
    res = _avdet("weights", "--weights-dir", tmp_path, "--json", "-")
    assert res.returncode == 0, res.stderr
    assert isinstance(json.loads(res.stdout), list)
    ann, preds = _tiny_eval_files(tmp_path)
    res = _avdet("eval", "--predictions", preds, "--annotations", ann, "--json", "-")
    assert res.returncode == 0 and "average_mAP" in json.loads(res.stdout)


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["eval", "--predictions", "p", "--json"], ["eval", "--predictions", "p", "--json", "-"]),
        (["-v", "eval", "--json", "--split", "x"], ["-v", "eval", "--json", "-", "--split", "x"]),
        (["eval", "--json", "-"], ["eval", "--json", "-"]),
        (["extract", "eval", "--json"], ["extract", "eval", "--json"]),  # a folder named eval
        (["cache", "list", "--json", "-"], ["cache", "list", "--json"]),
        (["extract", "v.mp4", "--json", "-"], ["extract", "v.mp4", "--json"]),
    ],
)
def test_json_argv_reads_the_command_not_any_word(argv: list[str], expected: list[str]) -> None:
    assert json_argv(argv) == expected


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_extract_of_a_folder_named_eval_with_json(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "avdet", "extract", "eval", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "no video files found in eval" in res.stderr and "unexpected extra argument" not in res.stderr


# -- --out --------------------------------------------------------------------------------------------------------
def test_out_suffix_and_format_must_agree(tmp_path: Path) -> None:
    from avdet.pipeline.outputs import plan_outputs

    clip = tmp_path / "a.mp4"
    with pytest.raises(DataError, match="suffix says json but --format says srt"):
        plan_outputs([clip], tmp_path / "x.json", "srt", None)
    assert plan_outputs([clip], tmp_path / "x.srt", "srt", None) == {str(clip): tmp_path / "x.srt"}
    assert plan_outputs([clip], tmp_path / "x.txt", "srt", None) == {str(clip): tmp_path / "x.txt"}


def test_out_file_in_a_new_folder_creates_it(tmp_path: Path) -> None:
    from avdet.pipeline.outputs import plan_outputs

    target = tmp_path / "new" / "deeper" / "x.json"
    assert plan_outputs([tmp_path / "a.mp4"], target, None, None) == {str(tmp_path / "a.mp4"): target}
    assert target.parent.is_dir()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match="cannot create the output folder"):
        plan_outputs([tmp_path / "a.mp4"], tmp_path / "a_file" / "x.json", None, None)


# -- calibrate / export: --checkpoint, --overwrite ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_detect_fixed import _fixed_checkpoint

    return _fixed_checkpoint(tmp_path_factory.mktemp("ckpt") / "fixed.ckpt")


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_export_takes_checkpoint_overwrite_and_writes_a_normal_file_mode(ckpt: Path, tmp_path: Path) -> None:
    dst = tmp_path / "model.safetensors"
    old = os.umask(0o022)
    try:
        res = _invoke("export", "--checkpoint", ckpt, dst)
        assert res.exit_code == 0, res.output
        assert stat.S_IMODE(dst.stat().st_mode) == 0o644  # as `open()` makes a file under this umask, not 0600
        res = _invoke("export", "--checkpoint", ckpt, dst)
        assert res.exit_code == 1 and "--overwrite" in res.output
        assert _invoke("export", "--checkpoint", ckpt, dst, "--overwrite").exit_code == 0
        assert _invoke("export", "--checkpoint", ckpt, dst, "--force").exit_code == 0  # the old name, hidden
    finally:
        os.umask(old)
    assert "--force" not in _invoke("export", "--help").output
    res = _invoke("export", ckpt, dst, "--overwrite")  # the positional form: one more release, with a warning
    assert res.exit_code == 0 and "deprecated" in res.output and "--checkpoint" in res.output
    res = _invoke("export", dst)
    assert res.exit_code == 2 and "needs --checkpoint" in res.output


def test_calibrate_takes_checkpoint_and_usage_errors_exit_2(tmp_path: Path) -> None:
    res = _invoke("calibrate")
    assert res.exit_code == 2 and "needs --checkpoint" in res.output
    res = _invoke("calibrate", "--checkpoint", tmp_path / "a.ckpt", tmp_path / "b.ckpt")
    assert res.exit_code == 2 and "once" in res.output
    res = _invoke("calibrate", tmp_path / "missing.ckpt")
    assert "deprecated" in res.output and res.exit_code == 1 and "missing.ckpt" in res.output


# -- help -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,command", _commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_help_has_h_an_example_and_no_bool(path: list[str], command: object) -> None:
    res = _invoke(*path, "-h")
    assert res.exit_code == 0, res.output
    assert "Example: avdet " + " ".join(path) in res.output
    assert "<bool>" not in res.output and "-h" in res.output


def test_root_help_has_no_bool() -> None:
    res = _invoke("-h")
    assert res.exit_code == 0 and "<bool>" not in res.output


# -- usage errors ---------------------------------------------------------------------------------------------------
def test_eval_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _invoke("eval").exit_code == 2
    assert _invoke("eval", "--predictions", tmp_path / "p.json").exit_code == 2


def test_file_name_starting_with_dash_gets_a_hint(tmp_path: Path) -> None:
    res = _invoke("detect", "--checkpoint", tmp_path / "m.ckpt", "-clip.mp4")
    assert res.exit_code == 2 and "-clip.mp4" in res.output and "put -- before it" in res.output
    res = _invoke("detect", "--checkpoint", tmp_path / "m.ckpt", "--bogus")
    assert res.exit_code == 2 and "put -- before it" not in res.output


def test_unknown_config_and_split_list_the_valid_ones(tmp_path: Path) -> None:
    from avdet.pipeline.config import load_config
    from avdet.pipeline.data.annotations import split_ids

    with pytest.raises(ConfigError, match=r"shipped: .*tiny"):
        load_config("tinny")
    with pytest.raises(DataError, match=r"splits: test, train"):
        split_ids({"database": {"a": {"subset": "train"}, "b": {"subset": "test"}}}, "validation")
    ann, preds = _tiny_eval_files(tmp_path)
    res = _invoke("eval", "--predictions", preds, "--annotations", ann, "--split", "validaton")
    assert res.exit_code == 1 and "splits: test" in res.output


def test_train_without_data_paths_names_the_setting(tmp_path: Path) -> None:
    res = _invoke("train", "--config", "tiny", "--run-dir", tmp_path / "run")
    assert res.exit_code == 1
    assert "data.annotations is empty: set it with --set data.annotations=FILE" in res.output


def test_one_stream_tiny_needs_one_switch() -> None:
    from avdet.pipeline.config import load_config

    cfg = load_config("tiny", ["model.modality=audio"])
    assert cfg.model_config().lcf == "none" and cfg.model_config().modality == "audio"
