"""Running a detector over cached features: batches in, events in seconds out."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from avdet.models.pyramid import PyramidDetector
from avdet.pipeline.data.dense import Batch
from avdet.pipeline.postprocess import PostprocessConfig, postprocess
from avdet.pipeline.types import Event


def pad_inputs(model: nn.Module, audio: Tensor, visual: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad (B, T, ...) inputs with zeros and their (B, T) mask with False to the length a pyramid detector
    needs (`PyramidDetector.padded_length`: max_seq_len, or a stride multiple beyond it); other models (CCLN) take
    any length."""
    extra = model.padded_length(mask.shape[1]) - mask.shape[1] if isinstance(model, PyramidDetector) else 0
    if extra <= 0:
        return audio, visual, mask

    def pad(x: Tensor) -> Tensor:
        return torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)

    return pad(audio), pad(visual), pad(mask)


def padded_batch(model: nn.Module, batch: Batch) -> Batch:
    """A batch padded to the length the model needs (`pad_inputs`)."""
    audio, visual, mask = pad_inputs(model, batch.audio, batch.visual, batch.mask)
    return Batch(batch.video_ids, batch.durations, batch.grids, audio, visual, mask, batch.segments, batch.labels)


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[Batch],
    cfg: PostprocessConfig,
    classes: list[str],
    device: torch.device | str = "cpu",
) -> dict[str, list[Event]]:
    """Events per video id for every batch (model in eval mode; no gradients)."""
    was_training = model.training
    model.eval()
    events: dict[str, list[Event]] = {}
    try:
        for batch in batches:
            batch = padded_batch(model, batch).to(device)
            out = model(batch.audio, batch.visual, batch.mask)
            for vid, evs in zip(
                batch.video_ids, postprocess(out, batch.grids, batch.durations, cfg, classes), strict=True
            ):
                events[vid] = evs
    finally:
        model.train(was_training)
    return events
