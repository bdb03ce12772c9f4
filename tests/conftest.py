"""Shared fixtures. Golden fixtures come from $AVDET_GOLDEN_DIR (default ../shared/golden) and must exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _golden_dir() -> Path:
    return Path(os.environ.get("AVDET_GOLDEN_DIR", REPO.parent / "shared" / "golden")).resolve()


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = _golden_dir()
    if not path.is_dir():
        pytest.fail(f"golden fixtures not found at {path}: set AVDET_GOLDEN_DIR", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = _golden_dir().parent / "data"
    if not path.is_dir():
        pytest.fail(f"UnAV-100 annotation folder not found at {path}", pytrace=False)
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", help="run tests marked gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--gpu"):
        return
    skip = pytest.mark.skip(reason="needs --gpu and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
