"""The CLI conventions of the field's tools: --version, defaults in every --help, listed choices, -v/-q after the
subcommand, --json to stdout, tables not cut when piped, and the project files a package carries."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from avdet import __version__
from avdet.cli import app
from conftest import REPO, make_clip

WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}


def _invoke(*args: object, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _commands() -> list[tuple[list[str], object]]:
    """Every leaf command with its path, e.g. (["cache", "list"], <Command>)."""
    found = []

    def walk(group: TyperGroup, path: list[str]) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, TyperGroup):
                walk(cmd, [*path, name])
            else:
                found.append(([*path, name], cmd))

    walk(typer.main.get_command(app), [])
    return found


def test_version() -> None:
    res = _invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"avdet {__version__}"


@pytest.mark.parametrize("path,command", _commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_help_shows_every_default(path: list[str], command: object) -> None:
    """Each option's help row carries `[default: ...]` or `[required]`; only plain on/off switches (off by default)
    and --help go without."""
    res = _invoke(*path, "--help", env=WIDE)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^│\s+\*?\s*-", line)]
    options = [p for p in command.params if isinstance(p, TyperOption) and p.name != "help"]
    assert len(options) >= 2  # the command's own and -v/-q
    for opt in options:
        if opt.is_flag and not opt.secondary_opts and not opt.count and not opt.default:
            continue  # `--json`, `--quiet`: a switch that is off unless given
        name = max(opt.opts, key=len)
        (row,) = [i for i in starts if re.search(rf"(^|\s){re.escape(name)}(\s|$)", lines[i])]
        block = " ".join(lines[row : min([i for i in starts if i > row], default=len(lines))])
        assert "[default:" in block or "[required]" in block, f"avdet {' '.join(path)} {name}: {block}"


def test_help_keeps_defaults_that_rich_would_eat() -> None:
    res = _invoke("extract", "--help", env=WIDE)
    assert "$AVDET_CACHE or ~/.cache/avdet/features" in res.stdout and "$AVDET_WEIGHTS" in res.stdout
    detect = _invoke("detect", "--help", env=WIDE).stdout
    assert detect.count("from the checkpoint") == 3  # --threshold, --sigma, --max-events


def test_fixed_choices_are_listed_and_checked(tmp_path: Path) -> None:
    extract = _invoke("extract", "--help", env=WIDE).stdout
    assert "lite|i3d_vggish|vgg19_vggish" in extract and "onepeace" not in extract
    assert "ffmpeg|decord" in extract and "auto|cpu|cuda|cuda:N" in extract
    assert "json|srt|vtt" in _invoke("detect", "--help", env=WIDE).stdout
    convert = _invoke("convert", "--help", env=WIDE).stdout
    assert "unav|ccnet" in convert and "i3d_vggish|onepeace" in convert
    for args in (("--extractor", "onepeace"), ("--backend", "opencv"), ("--device", "gpu0")):
        res = _invoke("extract", tmp_path, *args)
        assert res.exit_code == 2 and args[1] in res.output, res.output


@pytest.mark.parametrize("flags,level", [(["-v"], logging.INFO), (["-vv"], logging.DEBUG), (["-q"], logging.ERROR)])
def test_verbosity_after_the_subcommand(tmp_path: Path, flags: list[str], level: int) -> None:
    root = logging.getLogger()
    before = root.level
    try:
        res = _invoke("cache", "list", "--cache", tmp_path, *flags)
        assert res.exit_code == 1 and "no feature store here" in res.output  # parsed, ran, failed cleanly
        assert root.level == level
        _invoke(*flags, "cache", "list", "--cache", tmp_path)  # before the subcommand too
        assert root.level == level
    finally:
        root.setLevel(before)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_extract_json_summary_on_stdout(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 2.0)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    res = _invoke("extract", clip, tmp_path / "broken.mp4", "--cache", tmp_path / "cache", "--json")
    assert res.exit_code == 1  # one video failed: the exit status says so, the JSON still comes
    summary = json.loads(res.stdout)
    assert summary["videos"] == 2 and summary["done"]["videos"] == 1 and summary["failed"]["videos"] == 1
    assert summary["failures"][0]["path"].endswith("broken.mp4") and summary["failures"][0]["reason"]


def test_weights_json_and_full_urls_when_piped(tmp_path: Path) -> None:
    res = _invoke("weights", "--weights-dir", tmp_path, "--json")
    rows = json.loads(res.stdout)
    assert res.exit_code == 0 and rows and all(r["present"] is False for r in rows)
    table = _invoke("weights", "--weights-dir", tmp_path).stdout
    assert all(r["url"] in table for r in rows), table  # not cut at 80 columns


def _tiny_eval_files(tmp_path: Path) -> tuple[Path, Path]:
    ann = {
        "version": "unav100",
        "database": {
            "v": {
                "duration": 10.0,
                "subset": "test",
                "annotations": [
                    {"segment": [1.0, 3.0], "label": "a", "label_id": 0},
                    {"segment": [4.0, 8.0], "label": "b", "label_id": 1},
                ],
            }
        },
    }
    preds = {
        "database": {
            "v": [
                {"segment": [1.0, 3.0], "label_id": 0, "label": "a", "score": 0.9},
                {"segment": [4.0, 6.5], "label_id": 1, "label": "b", "score": 0.8},
            ]
        }
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    return tmp_path / "ann.json", tmp_path / "preds.json"


def test_eval_json_to_stdout_or_file_without_float_noise(tmp_path: Path) -> None:
    ann, preds = _tiny_eval_files(tmp_path)
    res = _invoke("eval", "--predictions", preds, "--annotations", ann, "--json", "-")
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)  # the table went to stderr
    assert scores["tiou_thresholds"][2] == 0.3 and not re.search(r"\d\.\d{7,}", res.stdout), res.stdout
    assert 0 < scores["average_mAP"] < 1
    res = _invoke("eval", "--predictions", preds, "--annotations", ann, "--json", tmp_path / "s.json")
    assert res.exit_code == 0 and json.loads((tmp_path / "s.json").read_text()) == scores
    assert "mAP" in res.stdout  # with a file, the table stays on stdout


def test_bare_json_means_stdout_from_the_shell(tmp_path: Path) -> None:
    import subprocess
    import sys

    ann, preds = _tiny_eval_files(tmp_path)
    cmd = [sys.executable, "-m", "avdet", "eval", "--predictions", str(preds), "--annotations", str(ann), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tiou_thresholds"][2] == 0.3


# -- project files ------------------------------------------------------------------------------------------------
def test_citation_cites_the_methods_and_datasets() -> None:
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    notes = " ".join(r["notes"] for r in cff["references"])
    for name in ("LoCo", "UnAV ", "UnAV-100", "CCNet", "CCLN", "AVE"):
        assert name in notes, name
    assert all(r["title"] and r["authors"] and r["year"] for r in cff["references"])


def test_license_changelog_py_typed_and_metadata() -> None:
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and "MIT License" in (REPO / "LICENSE").read_text()
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text()
    assert (REPO / "py.typed").is_file() and meta["urls"] and "Typing :: Typed" in meta["classifiers"]
    assert not any(dep.startswith("timm") for dep in meta["dependencies"])  # never imported by the package
    assert any(dep.startswith("safetensors") for dep in meta["dependencies"])  # `avdet export`


def test_unused_runtime_dependencies_stay_out() -> None:
    """Each runtime dependency is imported somewhere in the package (import name = distribution name here,
    except the ones mapped)."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    import_names = {"ffmpeg-python": "ffmpeg", "pyyaml": "yaml", "tensorboard": "torch.utils.tensorboard"}
    sources = " ".join(p.read_text() for p in REPO.rglob("*.py") if not {"tests", ".venv", "benchmarks"} & set(p.parts))
    for dep in deps:
        dist = re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0]
        module = import_names.get(dist, dist)
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"{dist} is never imported"
