"""`avdet eval --predictions` without Typer (avdet/entry.py): which command lines take that path, and that it prints
what the Typer command prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from avdet.console import json_argv
from avdet.entry import fast_eval_args

TYPER = "import sys; sys.argv = ['avdet', *sys.argv[1:]]; from avdet.cli import main; main()"


def test_only_plain_eval_command_lines_skip_typer():
    plain = ["eval", "--predictions", "p.json", "--annotations=a.json", "--split", "val", "--json", "m.json"]
    assert fast_eval_args(plain) == {"--predictions": "p.json", "--annotations": "a.json", "--split": "val",
                                     "--json": "m.json"}  # fmt: skip
    assert fast_eval_args(json_argv(["eval", "--json", "--predictions", "p", "--annotations", "a"]))["--json"] == "-"
    for argv in (
        ["eval", "--predictions", "p", "--annotations", "a", "--help"],
        ["eval", "--predictions", "p"],  # Typer names what is missing
        ["eval", "--predictions", "p", "--annotations", "a", "--predictions", "q"],
        ["eval", "--predictions", "p", "--annotations", "a", "-v"],
        ["eval", "--predictions", "p", "--annotations", "a", "--device", "cpu"],
        ["eval", "--predictions", "p", "--annotations", "a", "--split"],
        ["eval", "--predictions", "p", "--annotations", "--split"],
        ["eval", "--predictions=", "--annotations", "a"],
        ["eval", "--predictions", "p", "--annotations", "a", "extra"],
        ["-v", "eval", "--predictions", "p", "--annotations", "a"],
        ["detect", "--predictions", "p", "--annotations", "a"],
        [],
    ):
        assert fast_eval_args(argv) is None, argv


def _run(args: list, typer: bool, cwd: Path) -> subprocess.CompletedProcess:
    head = ["-c", TYPER] if typer else ["-m", "avdet"]
    return subprocess.run(
        [sys.executable, *head, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_eval_of_a_predictions_file_imports_neither_typer_nor_pydantic(golden_dir: Path, shared_data_dir: Path):
    argv = ["avdet", "eval", "--predictions", str(golden_dir / "eval_predictions.json"),
            "--annotations", str(shared_data_dir / "unav100_annotations.json"), "--split", "test"]  # fmt: skip
    code = (
        f"import runpy, sys; sys.argv = {argv!r}\n"
        "try:\n    runpy.run_module('avdet', run_name='__main__')\nexcept SystemExit as stop:\n"
        "    assert not stop.code, stop.code\n"
        "heavy = sorted({'typer', 'pydantic', 'torch', 'numpy.ma'} & set(sys.modules))\n"
        "assert not heavy, heavy"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Avg." in res.stdout


@pytest.mark.slow  # two CLI subprocesses per case
@pytest.mark.parametrize("case", ["golden", "json-to-stdout", "unknown-video", "no-annotations-file"])
def test_eval_prints_what_the_typer_command_prints(case, golden_dir: Path, shared_data_dir: Path, tmp_path: Path):
    ann, preds = shared_data_dir / "unav100_annotations.json", golden_dir / "eval_predictions.json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"database": {"no-such-video": [{"segment": [1, 2], "label_id": 0, "score": 0.5}]}}))
    args = {
        "golden": ["--predictions", preds, "--annotations", ann, "--split", "test", "--json", "m.json"],
        "json-to-stdout": ["--json", f"--predictions={preds}", "--annotations", ann, "--split=test"],
        "unknown-video": ["--predictions", bad, "--annotations", ann],
        "no-annotations-file": ["--predictions", preds, "--annotations", tmp_path / "none.json"],
    }[case]
    runs = []
    for typer in (False, True):
        (tmp_path / ("typer" if typer else "fast")).mkdir()
        runs.append(_run(["eval", *args], typer, tmp_path / ("typer" if typer else "fast")))
    fast, slow = runs
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert fast.returncode == (0 if case in ("golden", "json-to-stdout") else 1), fast.stderr
    if case == "golden":
        assert (tmp_path / "fast" / "m.json").read_text() == (tmp_path / "typer" / "m.json").read_text()
