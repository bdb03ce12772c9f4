from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from avdet.extractors import tv_compat
from conftest import REPO


def test_wheel_installs_everything_under_avdet_only(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("avdet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"avdet", wheel.name.split("-py")[0] + ".dist-info"}
    tracked = subprocess.run(
        ["git", "ls-files", "--", "*.py", "*.yaml", "*.html"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    package_files = [f for f in tracked if f.split("/")[0] in ("pipeline", "extractors", "models", "configs")]
    package_files += [f for f in tracked if "/" not in f and f.endswith(".py") and f != "setup.py"]
    assert "pipeline/io/media.py" in package_files and "configs/tiny.yaml" in package_files
    assert "pipeline/templates/report.html" in package_files  # package data: the HTML report's templates
    missing = [f for f in package_files if f"avdet/{f}" not in names]
    assert not missing, f"tracked modules missing from the wheel: {missing}"
    assert not any(n.startswith("avdet/tests/") for n in names)
    assert "avdet/py.typed" in names  # type checkers use the package's hints (PEP 561)
    entry_points = zipfile.ZipFile(wheel).read(wheel.name.split("-py")[0] + ".dist-info/entry_points.txt").decode()
    assert "avdet = avdet.entry:main" in entry_points  # the command skips Typer where it can (avdet/entry.py)


def test_torchvision_and_timm_import_through_compat() -> None:
    code = (
        "from avdet.extractors.tv_compat import import_torchvision; tv = import_torchvision();"
        "import timm; from torchvision.models.optical_flow import raft_small; raft_small(); print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


def test_compat_defines_schemas_only_where_the_ops_are_missing() -> None:
    tv = tv_compat.import_torchvision()
    assert tv_compat.import_torchvision() is tv
    # A torchvision whose C++ ops load (a CUDA machine) needs nothing defined.
    assert (tv_compat._lib is None) == tv.extension._has_ops()


def test_cli_help() -> None:
    for args in (["--help"], ["extract", "--help"]):
        res = subprocess.run([sys.executable, "-m", "avdet", *args], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout
