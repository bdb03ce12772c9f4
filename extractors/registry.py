"""Registry: extractor-set name -> factory. Factories import lazily, so heavy backbones load only when asked."""

from __future__ import annotations

import importlib

from avdet.errors import ConfigError
from avdet.extractors.base import ExtractorSet

# name -> "module:function"; each factory takes (weights_dir, random_weights, device) keywords.
EXTRACTORS: dict[str, str] = {
    "lite": "avdet.extractors.lite:build",
    "i3d_vggish": "avdet.extractors.i3d_vggish:build",
    "onepeace": "avdet.extractors.onepeace:build",
    "vgg19_vggish": "avdet.extractors.vgg19_vggish:build",
}


def build_extractor_set(
    name: str, *, weights_dir: str | None = None, random_weights: bool = False, device: str = "cpu"
) -> ExtractorSet:
    """Build a registered extractor set; unknown names are a one-line `ConfigError`."""
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {name!r}; choose one of: {', '.join(sorted(EXTRACTORS))}")
    module, _, func = EXTRACTORS[name].partition(":")
    factory = getattr(importlib.import_module(module), func)
    return factory(weights_dir=weights_dir, random_weights=random_weights, device=device)
