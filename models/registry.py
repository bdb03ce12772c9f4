"""Model registry: config name -> (config class, model class, tasks). Model modules import lazily."""

from __future__ import annotations

import importlib

from avdet.errors import ConfigError
from avdet.models.base import MODELS, ModelEntry

MODEL_MODULES: dict[str, str] = {
    "loco": "avdet.models.loco",
    "unav": "avdet.models.unav",
    "ccnet": "avdet.models.ccnet",
    "ccln": "avdet.models.ccln",
}


def model_entry(name: str | None) -> ModelEntry:
    """The registered entry for `name`; an unknown name is a one-line `ConfigError`."""
    if name not in MODEL_MODULES:
        raise ConfigError(f"model.name {name!r} is not one of: {', '.join(sorted(MODEL_MODULES))}")
    if name not in MODELS:
        importlib.import_module(MODEL_MODULES[name])
    return MODELS[name]
