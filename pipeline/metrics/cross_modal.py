"""Cross-modal localization (CML) on AVE (Tian et al., ECCV 2018): given the event segments of one modality, find
their synchronized span in the other modality of the same video.

A2V: the query is the audio of the event's L segments, the candidates are every L-segment window of the video's
visual track; V2A the reverse. The prediction is the window whose segment embeddings match the query best (cosine
similarity, segment by segment in order, averaged); a video is correct when the predicted window starts where the
event does (AVE's exact-match criterion). Videos whose event fills every segment have one window only and are left
out; `chance` is the accuracy of picking a window at random.

The embeddings come from the model's cross-modal common space (`correspondence_embeddings`): for LoCo, the LCF
projections of its unimodal encoders, which the LCF loss trains during segment training. So a LoCo segment
checkpoint is also the CML model, with no separate training. The query modality is encoded from its L segments
alone: it never sees the rest of the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from avdet.errors import DataError


@dataclass
class CMLResult:
    a2v: float  # percent of videos localized exactly, audio query -> visual track
    v2a: float  # visual query -> audio track
    chance: float  # percent expected from a random window
    videos: int  # videos scored (events shorter than the video)


def event_span(labels: np.ndarray, background: int) -> tuple[int, int] | None:
    """[start, end) of the event segments of one video's (T,) labels (-1 = padding); None when the event is
    missing or fills every valid segment (nothing to localize)."""
    valid = labels >= 0
    event = np.nonzero(valid & (labels != background))[0]
    if len(event) == 0 or len(event) == int(valid.sum()):
        return None
    return int(event[0]), int(event[-1]) + 1


def best_window(query: Tensor, candidates: Tensor) -> int:
    """Start of the L-step window of `candidates` (T, d) most similar to `query` (L, d): the mean over the L aligned
    pairs of their dot products (cosine similarities for normalised embeddings); ties go to the earliest."""
    length = query.shape[0]
    windows = candidates.unfold(0, length, 1)  # (T - L + 1, d, L)
    scores = torch.einsum("ld,wdl->w", query, windows) / length
    return int(scores.argmax())


@torch.no_grad()
def evaluate_cml(model: nn.Module, dataset: Dataset, device: torch.device | str = "cpu") -> CMLResult:
    """A2V and V2A exact-match accuracy over the videos of a labelled split (one video at a time)."""
    embed = getattr(model, "correspondence_embeddings", None)
    if embed is None:
        raise DataError(f"{type(model).__name__} has no cross-modal embedding space for CML (LoCo with LCF has)")
    model.eval()
    hits = {"a2v": 0, "v2a": 0}
    chance, count = 0.0, 0
    for index in range(len(dataset)):
        item = dataset[index]
        if "segment" not in item:
            raise DataError("CML needs segment labels (the full-setting labels of a val/test split)")
        mask = item["mask"]
        labels = item["segment"].numpy()
        span = event_span(np.where(mask.numpy(), labels, -1), int(item["video"].shape[0]) - 1)
        if span is None:
            continue
        start, end = span
        audio, visual = item["audio"][None].to(device), item["visual"][None].to(device)
        full_a, full_v = embed(audio, visual, mask[None].to(device))  # (1, T, d) each
        query_mask = torch.ones(1, end - start, dtype=torch.bool, device=device)
        query_a, query_v = embed(audio[:, start:end], visual[:, start:end], query_mask)
        length = int(mask.sum())
        hits["a2v"] += best_window(query_a[0], full_v[0, :length]) == start
        hits["v2a"] += best_window(query_v[0], full_a[0, :length]) == start
        chance += 1.0 / (length - (end - start) + 1)
        count += 1
    if not count:
        raise DataError("no video of the split has an event shorter than the video: nothing to localize")
    return CMLResult(100.0 * hits["a2v"] / count, 100.0 * hits["v2a"] / count, 100.0 * chance / count, count)
