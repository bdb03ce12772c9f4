"""What every detector returns, and what the registry (`models.registry`) gives for a model name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class DetectorOutput:
    """Per pyramid level l (level 0 = full rate). Grid units only: no seconds inside models.

    cls_logits[l]: (B, T_l, C) pre-sigmoid class logits.
    offsets[l]:    (B, T_l, C, 2) class-aware (left, right) distances in units of strides[l], >= 0.
    masks[l]:      (B, T_l) bool, True = valid.
    strides[l]:    grid steps between consecutive points of level l; point i sits at grid i * strides[l].
    aux:           whatever the auxiliary losses need (e.g. LoCo's LCF embeddings), empty at inference.
    """

    cls_logits: list[torch.Tensor]
    offsets: list[torch.Tensor]
    masks: list[torch.Tensor]
    strides: list[int]
    aux: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_cls: type
    model_cls: Callable[..., nn.Module]
    tasks: tuple[str, ...]  # "dense" and/or "segment"
