"""A plain (not editable) `pip install .` into a fresh virtual environment works on a machine with ffmpeg: the
command answers, `lite` extraction runs, nothing imports from the checkout, and TensorBoard is not needed.

pip takes its packages where it is configured to (as `scripts/setup.sh` does: on the development machine the CPU
torch is a local wheel pip's find-links know), under the project's CPU pins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import REPO, make_clip


@pytest.mark.slow
def test_plain_pip_install_in_a_fresh_venv(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # fresh: no system site-packages, nothing of the development venv
    python, avdet = env_dir / "bin" / "python", env_dir / "bin" / "avdet"
    res = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints-cpu.txt"), str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]

    work = tmp_path / "work"  # away from the checkout, so only the installed package can be imported
    clip = make_clip(work / "clip.mp4", 2.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVDET_CACHE": str(work / "cache")}
    env.pop("PYTHONPATH", None)
    probe = (
        "import importlib.util as u, avdet; print(avdet.__file__);"
        "print(u.find_spec('avdet.setup') is None, u.find_spec('tensorboard') is None)"
    )
    where, no_setup_no_tb = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=work, env=env, check=True
    ).stdout.split("\n", 1)
    assert Path(where).is_relative_to(env_dir), where
    assert no_setup_no_tb.split() == ["True", "True"]  # no avdet.setup module; tensorboard is an extra

    for args in (["--version"], ["train", "--help"]):
        run = subprocess.run([str(avdet), *args], capture_output=True, text=True, cwd=work, env=env)
        assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [str(avdet), "extract", str(clip), "--json"], capture_output=True, text=True, cwd=work, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["done"]["videos"] == 1
    assert sys.executable != str(python)
