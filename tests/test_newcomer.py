"""A newcomer's first hour, end to end in a fresh virtual environment: build the wheel, install it, `avdet models`,
`avdet detect clip.mp4 --model NAME` -> events.json with a model served on 127.0.0.1, and the same through
`avdet.load(NAME)`.

No network: the wheel is installed with `--no-deps --no-index`, and the fresh venv sees the dependencies already
installed in the test's own environment (torch CPU, per constraints-cpu.txt) through a `.pth` line naming that
site-packages folder. A `.pth` path line does not run the `.pth` files inside it, so the editable avdet of the
test environment stays invisible: the `avdet` the venv imports is the installed wheel (checked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from fileserver import FileServer
from zoo_served import CLASSES, build_served_zoo

from conftest import REPO, make_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("newcomer")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = root.glob("avdet-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "test-environment-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, golden_dir: Path) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("served")
    build_served_zoo(root, golden_dir)
    with FileServer(root) as server:
        yield server


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_install_list_models_detect_and_load(fresh_venv: Path, served: FileServer, tmp_path: Path) -> None:
    env = {
        "PATH": f"{fresh_venv / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "AVDET_HOME": str(tmp_path / "avdet-home"),
        "AVDET_MODEL_INDEX": served.url("index.json"),
        "AVDET_CACHE": str(tmp_path / "features"),
        "OMP_NUM_THREADS": "1",
    }
    python = str(fresh_venv / "bin" / "python")
    where = _run([python, "-c", "import avdet; print(avdet.__file__)"], env, tmp_path)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(fresh_venv)), where.stdout  # the wheel, not the checkout

    listed = _run(["avdet", "models", "--json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "tiny-unav-lite" in {m["name"] for m in json.loads(listed.stdout)}

    make_clip(tmp_path / "clip.mp4", duration=6.0)
    # the golden classifier keeps its prior bias (p near 0.01): a threshold of 0.02 shows a few events
    detect = ["avdet", "detect", "clip.mp4", "--model", "tiny-unav-lite", "--threshold", "0.02", "--out", "events.json"]
    res = _run(detect, env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "unpinned" in res.stderr  # its first download says it has no published checksum
    written = json.loads((tmp_path / "events.json").read_text())
    assert written["events"] and {e["label"] for e in written["events"]} <= set(CLASSES)

    code = (
        "import avdet, json; d = avdet.load('tiny-unav-lite', threshold=0.02); "
        "print(json.dumps([[e.label, e.start, e.end] for e in d.detect('clip.mp4').events]))"
    )
    api = _run([python, "-c", code], env, tmp_path)
    assert api.returncode == 0, api.stderr
    assert "unpinned" not in api.stderr  # downloaded once: the second use is verified, not fetched
    got = sorted((label, round(s, 2), round(e, 2)) for label, s, e in json.loads(api.stdout))
    want = sorted((e["label"], round(e["start"], 2), round(e["end"], 2)) for e in written["events"])
    assert [g[0] for g in got] == [w[0] for w in want]
    assert all(abs(g[1] - w[1]) <= 0.011 and abs(g[2] - w[2]) <= 0.011 for g, w in zip(got, want, strict=True))
    assert sum(1 for m, p, _ in served.requests if m == "GET" and p == "tiny-unav-lite.pth.tar") == 1
