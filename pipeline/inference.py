"""Running a detector over cached features: batches in, events in seconds out.

Every forward pass of a pyramid detector takes exactly its trained length (max_seq_len rows), so a video's events
never depend on the videos it is batched with and memory does not grow with video length:

    a video of at most max_seq_len rows   -> one window, padded to max_seq_len (the reference's answer)
    a longer video                        -> windows of max_seq_len rows overlapping by WINDOW_OVERLAP; each window
                                             reports the candidates whose point lies in its own part (the rows
                                             nearer to its centre than to a neighbour's), and the video's
                                             candidates, merged, go through one soft-NMS (max_seg_num per video)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from avdet.models.base import DetectorOutput
from avdet.models.pyramid import PyramidDetector
from avdet.pipeline.data.dense import Batch, collate, unlabelled_item
from avdet.pipeline.postprocess import PostprocessConfig, candidates_to_events, decode_video
from avdet.pipeline.threads import torch_threads
from avdet.pipeline.types import Event

if TYPE_CHECKING:
    from avdet.pipeline.data.sources import VideoFeatures

WINDOW_OVERLAP = 0.5  # share of max_seq_len two consecutive windows of a long video have in common

Candidates = tuple[Tensor, Tensor, Tensor]  # segments (N, 2) in grid units, scores (N,), labels (N,)


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


@dataclass(frozen=True)
class Window:
    """Rows [start, start + size) of video `video` of a batch; it reports the candidates of points in [lo, hi)."""

    video: int
    start: int
    lo: int
    hi: int


def plan_windows(
    length: int, size: int | None, align: int = 1, overlap: float = WINDOW_OVERLAP
) -> list[tuple[int, int, int]]:
    """(start, lo, hi) of the windows of `size` rows covering `length` rows: the whole video when it fits (or
    `size` is None), else windows starting every `size - overlap * size` rows, the last one reaching the last row.
    Starts are multiples of `align` (the top stride), so every window's points sit where the whole video's would.
    The owned parts [lo, hi) tile [0, length), each boundary in the middle of two windows' overlap."""
    if size is None or length <= size:
        return [(0, 0, length)]
    hop = max(align, (size - round(size * overlap)) // align * align)
    last = -(-(length - size) // align) * align  # the last window may end past the video (padding)
    starts = [*range(0, last, hop), last]
    bounds = [0, *((prev + size + nxt) // 2 for prev, nxt in zip(starts, starts[1:], strict=False)), length]
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def window_size(model: nn.Module) -> tuple[int | None, int]:
    """Rows per forward pass and the alignment of window starts: a pyramid detector's trained length and top
    stride; other models take whole videos."""
    if isinstance(model, PyramidDetector):
        return model.cfg.max_seq_len, model.cfg.max_stride
    return None, 1


def window_inputs(batch: Batch, windows: list[Window], size: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """(W, size, C) audio and visual and their (W, size) mask for the windows (zeros / False past a video's end)."""
    length = size or batch.mask.shape[1]

    def cut(x: Tensor, w: Window) -> Tensor:
        part = x[w.video, w.start : w.start + length]
        return torch.cat([part, part.new_zeros(length - part.shape[0], *part.shape[1:])])

    return tuple(torch.stack([cut(x, w) for w in windows]) for x in (batch.audio, batch.visual, batch.mask))


def owned_candidates(out: DetectorOutput, windows: list[Window], cfg: PostprocessConfig) -> list[Candidates]:
    """Candidates of each window from the points it owns, in grid units of its video (shifted by the start)."""
    masks = []
    for mask, stride in zip(out.masks, out.strides, strict=True):
        pos = torch.arange(mask.shape[1], device=mask.device) * stride  # (T_l,) grid position of each point
        lo = torch.tensor([w.lo - w.start for w in windows], device=mask.device)[:, None]
        hi = torch.tensor([w.hi - w.start for w in windows], device=mask.device)[:, None]
        masks.append(mask & (pos >= lo) & (pos < hi))  # (W, T_l)
    owned = replace(out, masks=masks)
    result = []
    for i, w in enumerate(windows):
        segs, scores, labels = decode_video(owned, i, cfg)
        result.append((segs + w.start, scores, labels))
    return result


def chunks(items: list[Window], size: int) -> Iterator[list[Window]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def video_candidates(
    model: nn.Module,
    feats: list[VideoFeatures],
    cfg: PostprocessConfig,
    classes: list[str],
    device: torch.device | str = "cpu",
) -> dict[str, list[Event]]:
    """Every candidate event of each video (no ground truth), by descending score, keyed by video id: what
    `detect` ranks for a dense model."""
    return predict(model, [collate([unlabelled_item(f) for f in feats])], cfg, classes, device)


def predict(
    model: nn.Module,
    batches: Iterable[Batch],
    cfg: PostprocessConfig,
    classes: list[str],
    device: torch.device | str = "cpu",
) -> dict[str, list[Event]]:
    """Events per video id for every batch (model in eval mode; no gradients). A batch of B videos runs as
    forward passes of at most B windows (see the module docstring), so each video gets its answer alone."""
    was_training = model.training
    model.eval()
    size, align = window_size(model)
    events: dict[str, list[Event]] = {}
    try:
        for batch in batches:
            lengths = batch.mask.sum(dim=1).tolist()
            windows = [Window(v, *plan) for v, n in enumerate(lengths) for plan in plan_windows(int(n), size, align)]
            found: list[list[Candidates]] = [[] for _ in lengths]
            for part in chunks(windows, len(lengths)):
                audio, visual, mask = pad_inputs(model, *window_inputs(batch, part, size))
                out = model(audio.to(device), visual.to(device), mask.to(device))
                with torch_threads(1):
                    for w, cand in zip(part, owned_candidates(out, part, cfg), strict=True):
                        found[w.video].append(cand)
            merged = [tuple(torch.cat(parts) for parts in zip(*video, strict=True)) for video in found]
            for vid, evs in zip(
                batch.video_ids,
                candidates_to_events(merged, batch.grids, batch.durations, cfg, classes),
                strict=True,
            ):
                events[vid] = evs
    finally:
        model.train(was_training)
    return events
