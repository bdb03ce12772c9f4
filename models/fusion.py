"""Safe audio-visual fusion: the parts that let a two-stream detector do without a stream that tells it nothing.

An audio-visual model trained only on both streams learns to lean on both; when one stream is uninformative (real
footage with features that miss the classes, a static or muted stream) it loses to the one-stream model of the
other stream. These pieces are LoCo config switches (`models.loco`), each off by default:

- **modality dropout** (`modality_dropout: p`): while training, each clip loses one whole stream (the audio or the
  visual encoder output, chosen evenly) with probability p, so the detector must find events from either stream
  alone and learns to rely on the one that carries the events;
- **stream gates** (`stream_gate: true`): one scalar gate per stream and clip, sigmoid of a linear map of the
  stream's pooled encoder output, initialised open (sigmoid(4) = 0.98), so the model can turn a stream down;
- **removing a stream at inference** (`without_stream`): the same zeroing that modality dropout trains, so a model
  trained with it can be scored with one stream removed (its one-stream floors) and can say which stream drove
  an event. Without modality dropout the model never saw a missing stream and those scores mean little.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

STREAMS = ("audio", "visual")
GATE_INIT = 4.0  # sigmoid(4) = 0.98: the gates start open, so training starts from the ungated model


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) averaged over the valid steps of mask (B, T) -> (B, D); an empty clip gives zeros."""
    keep = mask[..., None].to(x.dtype)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


class StreamGate(nn.Module):
    """g = sigmoid(w . mean_t(x) + b) per clip; returns x * g. w starts at 0 and b at `GATE_INIT` (open)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, GATE_INIT)

    def gate(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B,) gate values in (0, 1)."""
        return torch.sigmoid(self.proj(masked_mean(x, mask)))[:, 0]

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, D), mask (B, T) -> gated x (B, T, D) and the gates (B,)."""
        g = self.gate(x, mask)
        return x * g[:, None, None].to(x.dtype), g


def dropout_keep(batch: int, p: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Which clips keep each stream under modality dropout: (audio_keep, visual_keep), (B,) bool each.

    Each clip loses one stream with probability p (audio or visual, evenly), never both, so every clip keeps
    something to detect from.
    """
    drop = torch.rand(batch, generator=generator) < p  # (B,) clips that lose a stream
    which = torch.rand(batch, generator=generator) < 0.5  # (B,) True: the audio goes, False: the visual goes
    return ~(drop & which), ~(drop & ~which)


def apply_keep(x: Tensor, keep: Tensor) -> Tensor:
    """Zero the clips of x (B, T, D) whose keep (B,) is False (a stream that is not there)."""
    return x * keep.to(device=x.device, dtype=x.dtype)[:, None, None]


@contextlib.contextmanager
def without_stream(model: nn.Module, stream: str | None) -> Iterator[nn.Module]:
    """Run `model` (a LoCo) with one stream removed (zeroed after its encoder, as modality dropout does); None
    leaves both. Restores the model on exit."""
    if stream is not None and stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)} or None, not {stream!r}")
    if not hasattr(model, "removed_stream"):
        raise ValueError(f"{type(model).__name__} cannot drop a stream (only the audio-visual LoCo can)")
    before = model.removed_stream
    model.removed_stream = stream
    try:
        yield model
    finally:
        model.removed_stream = before
