from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from avdet.extractors import tv_compat
from conftest import REPO


@pytest.mark.slow  # builds the wheel with pip
def test_wheel_installs_everything_under_avdet_only(tmp_path: Path) -> None:
    # pip builds in the checkout: a module left in build/lib by an earlier build must not reach the wheel
    stale = REPO / "build" / "lib" / "avdet" / "pipeline" / "moved_away.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("")
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
    assert not any(n.startswith(("avdet/tests/", "avdet/benchmarks/", "avdet/scripts/")) for n in names)
    assert "avdet/setup.py" not in names and "avdet/pipeline/moved_away.py" not in names  # packaging, not avdet
    assert "avdet/py.typed" in names  # type checkers use the package's hints (PEP 561)
    entry_points = zipfile.ZipFile(wheel).read(wheel.name.split("-py")[0] + ".dist-info/entry_points.txt").decode()
    assert "avdet = avdet.entry:main" in entry_points  # the command skips Typer where it can (avdet/entry.py)


def tracked_leftovers(repo: Path) -> list[str]:
    """Merge and patch leftovers (`*.orig`, `*.rej`) that git tracks in `repo`."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return [f for f in tracked.split("\0") if f.endswith((".orig", ".rej"))]


def test_no_merge_leftovers_are_tracked() -> None:
    """A `*.orig` / `*.rej` left by a merge would ship in the Docker image (COPY . .) and mislead readers."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing is tracked")
    leftovers = tracked_leftovers(REPO)
    assert not leftovers, f"merge leftovers tracked by git (delete them): {leftovers}"


def test_leftover_check_sees_a_tracked_orig_file(tmp_path: Path) -> None:
    """The check above finds leftovers at any depth (a fresh repository with one `.orig` and one `.rej`)."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "pkg").mkdir()
    for name in ("pkg/mod.py", "pkg/mod.py.orig", "notes.rej"):
        (tmp_path / name).write_text("x\n")
    subprocess.run([*git, "add", "-f", "."], cwd=tmp_path, check=True)
    assert sorted(tracked_leftovers(tmp_path)) == ["notes.rej", "pkg/mod.py.orig"]


def slow_marks(tests: Path) -> tuple[set[str], set[str]]:
    """The test modules marked slow as a whole (`pytestmark`) and the tests marked slow one by one (module::name)."""
    whole, single = set(), set()
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                if "pytest.mark.slow" in ast.unparse(node.value):
                    whole.add(path.stem)
            elif isinstance(node, ast.FunctionDef) and "pytest.mark.slow" in map(ast.unparse, node.decorator_list):
                single.add(f"{path.stem}::{node.name}")
    return whole, single


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_slow_marker_is_used() -> None:
    """`pytest -m "not slow"` is the inner-loop subset: the `slow` marker is declared and marks the heavy tests
    (DDP, Ray, trained-model fixtures through conftest's SLOW_FIXTURES, heavy goldens and end-to-end runs)."""
    import conftest

    assert '"slow:' in (REPO / "pyproject.toml").read_text()
    whole, single = slow_marks(REPO / "tests")
    assert {"test_ddp", "test_ray", "test_segment_task", "test_unimodal"} <= whole
    assert "test_extract::test_sigkill_then_rerun_gives_identical_features" in single
    assert {"sample_set", "trained_run"} <= set(conftest.SLOW_FIXTURES)
    assert all(callable(getattr(conftest, name, None)) for name in conftest.SLOW_FIXTURES)


@pytest.mark.slow  # a subprocess imports timm, torchvision and builds RAFT
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


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_cli_help() -> None:
    for args in (["--help"], ["extract", "--help"]):
        res = subprocess.run([sys.executable, "-m", "avdet", *args], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout
