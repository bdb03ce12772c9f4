"""The model registry: each model name is written once, here, with where its classes live and the tasks it
supports. Model modules are imported on first use, so naming a model never loads the others."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from avdet.errors import ConfigError
from avdet.models.base import ModelEntry


@dataclass(frozen=True)
class _Where:
    module: str
    model_cls: str
    config_cls: str
    tasks: tuple[str, ...]  # "dense" and/or "segment"


MODELS: dict[str, _Where] = {
    "loco": _Where("avdet.models.loco", "LoCo", "LoCoConfig", ("dense", "segment")),
    "unav": _Where("avdet.models.unav", "UnAV", "UnAVConfig", ("dense",)),
    "ccnet": _Where("avdet.models.ccnet", "CCNet", "CCNetConfig", ("dense",)),
    "ccln": _Where("avdet.models.ccln", "CCLN", "CCLNConfig", ("segment",)),
}


def model_entry(name: str | None) -> ModelEntry:
    """The entry (config class, model class, tasks) of `name`; an unknown name is a one-line `ConfigError`."""
    if name not in MODELS:
        raise ConfigError(f"model.name {name!r} is not one of: {', '.join(sorted(MODELS))}")
    where = MODELS[name]
    module = importlib.import_module(where.module)
    return ModelEntry(name, getattr(module, where.config_cls), getattr(module, where.model_cls), where.tasks)
