"""Training you can watch: metrics.jsonl (valid after every line, no repeated epoch on resume), curves.png from
plain numbers, calibration printed at the end, and training without tensorboard installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avdet.pipeline.run_log import CURVES_FILE, METRICS_FILE, MetricsLog, open_tensorboard, read_metrics, write_curves
from conftest import SampleSet


def _epochs(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def test_every_line_is_json_and_flushed(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, start_epoch=0)
    log.write({"epoch": 0, "loss_total": 1.5})
    # Flushed: a reader (tail -f, a notebook) sees the line before the run ends.
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"epoch": 0, "loss_total": 1.5}
    log.write({"epoch": 1, "loss_total": float("nan"), "val_mAP": 0.25})  # a diverged loss stays strict JSON
    log.close()
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert json.loads(lines[1]) == {"epoch": 1, "loss_total": None, "val_mAP": 0.25}


def test_resume_drops_the_epochs_it_runs_again(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    # epochs 0-3 written, then killed halfway through a line; last.ckpt holds epoch 1, so the run resumes at 2
    path.write_text("".join(json.dumps({"epoch": e, "loss_total": 1.0 / (e + 1)}) + "\n" for e in range(4)) + '{"ep')
    log = MetricsLog(tmp_path, start_epoch=2)
    assert _epochs(path) == [0, 1]
    for e in (2, 3, 4):
        log.write({"epoch": e, "loss_total": 0.1})
    log.close()
    assert _epochs(path) == [0, 1, 2, 3, 4]
    MetricsLog(tmp_path, start_epoch=0).close()  # a fresh (--overwrite) run starts an empty file
    assert path.read_text() == "" and read_metrics(path) == []


def test_curves_png_from_plain_numbers(tmp_path: Path) -> None:
    history = [
        {"epoch": 0, "loss_total": 2.0, "loss_cls": 1.0},
        {"epoch": 1, "loss_total": 1.0, "loss_cls": 0.5, "val_mAP": 0.2},
        {"epoch": 2, "loss_total": 0.5, "loss_cls": 0.2, "val_mAP": 0.3},
    ]
    path = write_curves(tmp_path, history, "val_mAP")
    assert path == tmp_path / CURVES_FILE and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_curves(tmp_path / "none", [], "val_mAP") is None


def test_no_tensorboard_is_no_writer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as when it is not installed
    assert open_tensorboard(tmp_path / "tb", purge_step=0) is None
    assert not (tmp_path / "tb").exists()


# `avdet train` in a process where tensorboard cannot be imported (a detect-only install).
NO_TENSORBOARD = (
    "import sys; sys.modules['tensorboard'] = None; sys.modules['torch.utils.tensorboard'] = None;"
    "from avdet.entry import main; sys.argv[0] = 'avdet'; main()"
)


@pytest.mark.slow
def test_train_without_tensorboard_writes_metrics_curves_and_prints_calibration(
    sample_set: SampleSet, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", NO_TENSORBOARD, "train", "--config", "tiny", "--run-dir", str(run)]
    for s in sample_set.overrides(train__epochs=2, train__warmup_epochs=1, train__eval_start=1):
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (run / "tensorboard").exists()
    records = read_metrics(run / METRICS_FILE)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert all("loss_total" in r for r in records) and "val_mAP" in records[-1] and "val_mAP" not in records[0]
    assert (run / CURVES_FILE).read_bytes()[:4] == b"\x89PNG"
    assert "Operating point chosen on validation" in res.stdout and "F1" in res.stdout, res.stdout
