"""The `Task` interface: what differs between avdet's two prediction problems, behind one set of methods.

A task is chosen once, from the experiment config (`task:`) when training or from the checkpoint when detecting or
evaluating (`task_class`). Training builds an instance from the config (datasets, loaders, losses, the validation
metric); inference needs only a loaded checkpoint, so those methods are class methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from avdet.pipeline.checkpoint import Checkpoint
    from avdet.pipeline.config import ExperimentConfig
    from avdet.pipeline.data.sources import VideoFeatures
    from avdet.pipeline.distributed import DistributedContext
    from avdet.pipeline.types import Event, OperatingPoint


class Report(Protocol):
    """A task's evaluation of a checkpoint on one split, printable and serialisable the same way for every task."""

    def table(self) -> tuple[str, list[str], list[list[str]]]:
        """(title, column names, rows of cells) for the terminal."""
        ...

    def as_dict(self) -> dict[str, Any]:
        """The scores as JSON-ready values."""
        ...

    def save_outputs(self, checkpoint: Path, *, predictions: Path | None, confusion: Path | None) -> list[Path]:
        """Files an evaluation leaves (default: beside the checkpoint): the dense predictions, the segment
        confusion matrix."""
        ...


class Task(ABC):
    """One prediction problem end to end: data and collate, losses, validation metric, predictions -> events,
    evaluation of a checkpoint."""

    name: ClassVar[str]
    metric: ClassVar[str]  # the validation metric that picks best.ckpt (higher is better)
    metric_tag: ClassVar[str]  # its TensorBoard scalar

    classes: list[str]
    spec: dict  # the extractor spec of the features, recorded in checkpoints
    train_set: Dataset
    val_set: Dataset

    @abstractmethod
    def __init__(self, cfg: ExperimentConfig, model_cfg: Any, dist: DistributedContext) -> None:
        """Load the training and validation data of `cfg` and check them against the model config."""

    # -- training ------------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, world: int) -> None:
        """Adapt the model to a distributed run of `world` processes (before the DDP wrapper)."""
        return None

    def set_epoch(self, epoch: int) -> None:
        """Per-epoch randomness of the training items (crops), seeded by the epoch."""
        return None

    @abstractmethod
    def train_loader(self, sampler: torch.utils.data.Sampler) -> DataLoader: ...

    @abstractmethod
    def losses(
        self, net: nn.Module, model: nn.Module, batch: Any, device: torch.device, world: int, amp: bool
    ) -> dict[str, torch.Tensor]:
        """Loss parts of one batch, "total" included (`net` may be the DDP wrapper of `model`)."""

    @staticmethod
    @abstractmethod
    def loss_scale(world: int) -> int:
        """Factor on the loss before backward so that DDP's gradient average equals the one-process gradient."""

    @abstractmethod
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Validation metrics of the (EMA) model, `metric` among them."""

    def calibration(self) -> OperatingPoint | None:
        """The operating point `detect` should use, chosen on the candidates of the last `validate` pass (dense:
        per-class thresholds and overlap suppression); None for a task without score thresholds."""
        return None

    def state_dict(self) -> dict:
        """Task state to resume (e.g. the positive-count normaliser)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    # -- inference -----------------------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def events(cls, ckpt: Checkpoint, feats: list[VideoFeatures], device: torch.device) -> dict[str, list[Event]]:
        """Every candidate event of each video (by descending score for dense models), keyed by video id."""

    @classmethod
    @abstractmethod
    def evaluate(cls, ckpt: Checkpoint, split: str, *, device: str, batch_size: int) -> Report:
        """Score the checkpoint on a split of the data it records (or the overrides it was loaded with)."""
