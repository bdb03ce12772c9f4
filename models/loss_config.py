"""The loss settings of both tasks as plain dataclasses, apart from the loss code: experiment configs and
checkpoints read them without importing torch's loss machinery (the detection path never loads the losses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Setting = Literal["full", "weak"]


@dataclass
class LossConfig:
    reg_loss: Literal["diou", "giou"] = "diou"
    reg_weight: float = 1.0  # UnAV's loss_weight
    lcf_weight: float = 0.1  # lambda of LoCo's total loss (ignored for models without an LCF term)
    focal_alpha: float = 0.25  # < 0 disables the alpha balance
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0  # on the classification targets, as the reference's train_label_smoothing
    # Per-level (low, high) in grid units of the larger boundary distance; null = the UnAV ranges.
    regression_ranges: tuple[tuple[float, float], ...] | None = None
    norm_init: float = 250.0  # initial value of the positive-count EMA (the reference's init_loss_norm)
    norm_momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.reg_weight < 0 or self.lcf_weight < 0:
            raise ValueError("reg_weight and lcf_weight must be >= 0")
        if self.focal_alpha > 1 or self.focal_gamma < 0:
            raise ValueError("focal_alpha must be <= 1 and focal_gamma >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), not {self.label_smoothing}")
        if self.regression_ranges is not None:
            for low, high in self.regression_ranges:
                if not 0 <= low < high:
                    raise ValueError(f"regression range ({low}, {high}) must satisfy 0 <= low < high")


@dataclass
class SegmentLossConfig:
    """Loss weights of the segment task; the defaults are CCLN's (paper, fully supervised setting)."""

    setting: Setting = "full"
    focal_alpha: float = 0.25  # "default parameters" of the focal loss (RetinaNet's alpha, gamma)
    focal_gamma: float = 2.0
    fee_weight: float = 150.0  # lambda of CCLN's total loss (paper: 150, full setting)
    wccl_weight: float = 25.0  # eta of CCLN's total loss (paper: 25, full setting)
    wccl_temperature: float = 0.1  # delta of Eq. (27); not given in the paper (SupCon's range)
    lcf_weight: float = 0.1  # LoCo's LCF term when the output carries one

    def __post_init__(self) -> None:
        if self.setting not in ("full", "weak"):
            raise ValueError(f"setting must be 'full' or 'weak', not {self.setting!r}")
        if min(self.fee_weight, self.wccl_weight, self.lcf_weight) < 0:
            raise ValueError("fee_weight, wccl_weight and lcf_weight must be >= 0")
        if self.wccl_temperature <= 0:
            raise ValueError(f"wccl_temperature must be > 0, not {self.wccl_temperature}")
        if self.focal_alpha > 1 or self.focal_gamma < 0:
            raise ValueError("focal_alpha must be <= 1 and focal_gamma >= 0")
