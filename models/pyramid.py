"""What the pyramid detectors (LoCo, UnAV, CCNet) share: the pyramid and head config fields, the values derived
from them, and the length contract with their callers.

    level l runs at stride scale_factor**l (level 0 = full rate); max_stride = scale_factor**(num_levels - 1)
    inputs are padded to padded_length(T): max_seq_len, or beyond it the next multiple of max_stride

A detector's config dataclass derives from `PyramidConfig` (its YAML keys and checkpoint fields keep their names);
the model derives from `PyramidDetector`, which is how the pipeline knows it must pad a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

MODALITIES = ("audio_visual", "audio", "visual")


def streams(modality: str) -> tuple[str, ...]:
    """The input streams a modality reads, in avdet's concatenation order (visual first)."""
    return {"audio_visual": ("visual", "audio"), "audio": ("audio",), "visual": ("visual",)}[modality]


@dataclass
class PyramidConfig:
    """Pyramid and head fields of a detector config.

    `scale_factor`, `head_with_ln` and `class_aware` are constants here; a detector that lets them be configured
    declares them as dataclass fields of its own config (UnAV: all three, CCNet: the two head ones).
    """

    max_seq_len: int = 224  # training length (crop / pad); 256 for ONE-PEACE features
    num_levels: int = 6  # pyramid levels, strides 1, scale_factor, scale_factor**2, ...
    head_dim: int = 512
    head_layers: int = 3
    head_kernel: int = 3
    head_prior_prob: float = 0.01  # the classifier's initial foreground probability (focal prior)
    # which streams the model reads: both (the audio-visual task), or one of them (sound events heard, on screen
    # or not; visual events seen, silent or not)
    modality: str = "audio_visual"
    scale_factor: ClassVar[int] = 2
    head_with_ln: ClassVar[bool] = True
    class_aware: ClassVar[bool] = True  # one (left, right) offset pair per class

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, not {self.modality!r}")
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {self.num_levels}")
        if self.scale_factor < 2 or self.scale_factor % 2:
            raise ValueError(f"scale_factor must be an even number >= 2, got {self.scale_factor}")
        if self.max_seq_len < 1 or self.max_seq_len % self.max_stride:
            raise ValueError(
                f"max_seq_len {self.max_seq_len} is not a positive multiple of the top stride {self.max_stride}"
            )
        if self.head_kernel % 2 == 0:
            raise ValueError(f"head_kernel must be odd, got {self.head_kernel}")
        if not 0.0 < self.head_prior_prob < 1.0:
            raise ValueError("head_prior_prob must lie in (0, 1)")

    @property
    def strides(self) -> list[int]:
        return [self.scale_factor**level for level in range(self.num_levels)]

    @property
    def max_stride(self) -> int:
        return self.scale_factor ** (self.num_levels - 1)

    @property
    def level_lengths(self) -> list[int]:
        """Steps of each level for an input of max_seq_len steps."""
        return [self.max_seq_len // s for s in self.strides]

    def padded_length(self, length: int) -> int:
        """max_seq_len, or beyond it the next multiple of the top stride (the reference's inference padding)."""
        if length <= self.max_seq_len:
            return self.max_seq_len
        return -(-length // self.max_stride) * self.max_stride

    def check_length(self, length: int) -> None:
        """Refuses an input length `forward` cannot take (a one-line ValueError naming the padding to use)."""
        if length % self.max_stride:
            raise ValueError(
                f"sequence length {length} is not a multiple of {self.max_stride}: "
                f"pad to padded_length({length}) = {self.padded_length(length)}"
            )


class PyramidDetector(nn.Module):
    """Base of the pyramid detectors: `padded_length` and the input checks shared by their `forward`."""

    cfg: PyramidConfig

    def padded_length(self, length: int) -> int:
        """The length a batch of `length` steps must be padded to (see `PyramidConfig.padded_length`)."""
        return self.cfg.padded_length(length)

    @property
    def modality(self) -> str:
        return self.cfg.modality

    def check_inputs(self, audio: Tensor, visual: Tensor, mask: Tensor) -> None:
        """audio (B, T, ...) and visual (B, T, ...) must match mask (B, T), and T must suit the pyramid. A stream
        a unimodal model does not read may have zero channels."""
        if audio.shape[:2] != mask.shape or visual.shape[:2] != mask.shape:
            raise ValueError(f"audio {tuple(audio.shape)}, visual {tuple(visual.shape)}, mask {tuple(mask.shape)}")
        self.cfg.check_length(mask.shape[1])
