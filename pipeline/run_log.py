"""What a training run writes for people to watch: `metrics.jsonl` (one JSON object per epoch), optional TensorBoard
scalars, and `curves.png` at the end.

`metrics.jsonl` is appended one line per epoch and flushed, so it is valid JSON Lines after every line and can be
followed with `tail -f`. A resumed run first drops the lines of epochs it will run again (a kill between the line
and `last.ckpt` would otherwise repeat an epoch), so every epoch appears once. TensorBoard is an optional extra
(`pip install 'avdet[tb]'`): without it the run goes on and says so once.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import IO, Any

from avdet.pipeline.io.atomic import atomic_open

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def _plain(value: Any) -> Any:
    """A JSON-safe number: NaN/inf (a diverged loss) become null, so every line stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a metrics file; a torn last line (killed mid-write) is left out."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricsLog:
    """`run_dir/metrics.jsonl`, opened for a run that starts at `start_epoch` (0 for a fresh run)."""

    def __init__(self, run_dir: Path, start_epoch: int) -> None:
        self.path = run_dir / METRICS_FILE
        kept = [r for r in read_metrics(self.path) if isinstance(r.get("epoch"), int) and r["epoch"] < start_epoch]
        with atomic_open(self.path) as f:  # fresh run: empty; resume: the epochs before start_epoch only
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")

    def write(self, metrics: dict[str, Any]) -> None:
        """Append one epoch's record and flush it."""
        assert self._file is not None
        self._file.write(json.dumps({k: _plain(v) for k, v in metrics.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_tensorboard(log_dir: Path, purge_step: int) -> Any | None:
    """A TensorBoard SummaryWriter, or None when tensorboard is not installed (one log line says how to get it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info(
            "tensorboard is not installed: metrics go to %s only (pip install 'avdet[tb]' for TensorBoard)",
            METRICS_FILE,
        )
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


def write_curves(run_dir: Path, history: list[dict[str, Any]], metric: str) -> Path | None:
    """`run_dir/curves.png` from the epoch records (losses and the validation metric); None without records."""
    from avdet.pipeline.io.plots import plot_training_curves

    if not history:
        return None
    epochs = [int(h["epoch"]) for h in history]
    losses = {
        key[len("loss_") :]: [h.get(key) for h in history]
        for key in sorted({k for h in history for k in h if k.startswith("loss_")})
    }
    validated = [(int(h["epoch"]), float(h[metric])) for h in history if h.get(metric) is not None]
    path = run_dir / CURVES_FILE
    plot_training_curves(epochs, losses, validated, metric, path)
    return path
