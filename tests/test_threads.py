"""The thread policy: --threads wins; else each process takes its share of the idle cores, at least one."""

from __future__ import annotations

import pytest
import torch

from avdet.errors import ConfigError
from avdet.pipeline.threads import apply_threads, decide_threads, torch_threads


@pytest.mark.parametrize(
    ("workers", "cores", "load", "expected"),
    [
        (1, 64, 0.0, 64),  # an idle server, one process: every core
        (8, 64, 0.0, 8),  # eight workers: a share each
        (1, 64, 60.0, 4),  # a busy server: what is idle
        (16, 64, 60.0, 1),  # never below one
        (1, 2, 0.2, 1),  # a 2-core machine: only whole idle cores count
        (1, 2, 0.0, 2),
        (1, 2, 5.0, 1),  # a shared 2-core machine under load
        (3, 2, 0.0, 1),  # more workers than cores
    ],
)
def test_policy(workers: int, cores: int, load: float, expected: int) -> None:
    assert decide_threads(workers, cores=cores, load=load) == expected


def test_requested_wins_and_must_be_positive() -> None:
    assert decide_threads(8, 3, cores=2, load=9.0) == 3
    with pytest.raises(ConfigError, match="--threads"):
        decide_threads(1, 0)


def test_apply_and_restore() -> None:
    before = torch.get_num_threads()
    try:
        assert apply_threads(1, 1) == 1 and torch.get_num_threads() == 1
        with torch_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["extract", "detect", "eval", "train"])
def test_every_compute_command_takes_threads(command: str) -> None:
    from typer.testing import CliRunner

    from avdet.cli import app

    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--threads" in res.output


class RecordingPool:
    """Stands in for the extraction's process pool: records what each worker would be started with."""

    started: list[tuple] = []

    def __init__(self, workers: int, *, mp_context: object, initializer: object, initargs: tuple) -> None:
        RecordingPool.started.append((workers, initargs))

    def __enter__(self) -> RecordingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: object, path: str) -> object:
        from concurrent.futures import Future

        from avdet.pipeline.extract import ExtractResult

        done: Future = Future()
        done.set_result(ExtractResult(path, "v", "done"))
        return done


@pytest.mark.parametrize(
    ("workers", "cores", "requested", "expected"),
    [
        (2, 2, None, 1),  # workers fill the cores: one thread each
        (16, 16, None, 1),
        (4, 16, None, 4),  # an idle 16-core machine, 4 workers: 4 each
        (2, 2, 3, 3),  # --threads wins
    ],
)
def test_extraction_workers_get_their_share(
    workers: int, cores: int, requested: int | None, expected: int, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avdet.pipeline import extract, threads

    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(extract, "ProcessPoolExecutor", RecordingPool)
    RecordingPool.started.clear()
    paths = [str(tmp_path / f"{i}.mp4") for i in range(3)]
    results = extract.extract_videos(
        paths, tmp_path / "cache", extract.ExtractOptions(), workers=workers, threads=requested
    )
    assert len(results) == 3
    (started,) = RecordingPool.started
    assert started[0] == workers and started[1][2] == expected  # initargs: cache, options, threads, parent
