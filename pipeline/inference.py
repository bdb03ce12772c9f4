"""Running a detector over cached features: batches in, events in seconds out."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from avdet.pipeline.data import Batch
from avdet.pipeline.postprocess import Event, PostprocessConfig, postprocess


def padded_batch(model: nn.Module, batch: Batch) -> Batch:
    """Pad a batch to the length the model needs (its max_seq_len, or a stride multiple beyond it)."""
    need = model.padded_length(batch.mask.shape[1])
    extra = need - batch.mask.shape[1]
    if extra <= 0:
        return batch
    pad = (0, 0, 0, extra)  # pad (B, T, C) along T
    return Batch(
        batch.video_ids,
        batch.durations,
        batch.grids,
        torch.nn.functional.pad(batch.audio, pad),
        torch.nn.functional.pad(batch.visual, pad),
        torch.nn.functional.pad(batch.mask, (0, extra), value=False),
        batch.segments,
        batch.labels,
    )


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
