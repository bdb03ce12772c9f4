"""Segment-level AVEL (AVE): targets, losses and predictions shared by CCLN and LoCo-AVEL.

A video is cut into T fixed 1 s segments; each segment is one of C event classes or background, background being
the last index C (the AVE release's one-hot layout, 29 = 28 + 1). Segment models return a `DetectorOutput` whose
`cls_logits` hold per-segment logits over the C + 1 labels.

Two training settings:
- full: per-segment labels (B, T) -> multi-class focal loss on the segment logits (+ model-specific terms);
- weak: video-level labels only (B, C + 1) multi-hot -> a binary focal loss on video-level scores. Weak losses
  never read a segment label; `SegmentTargets.segment` is None there, and the loss refuses one.

CCLN (`aux` of its output) adds the FEE loss (cross-entropy of the foreground-event prediction against the video's
event class) and the WCCL loss (supervised contrastive loss over the fusion and branch embeddings, positives = the
same video-level label). Pure functions: nothing here opens files or keeps state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avdet.models.base import DetectorOutput
from avdet.models.loss_config import SegmentLossConfig
from avdet.models.losses import lcf_loss, sigmoid_focal_loss


@dataclass
class SegmentTargets:
    """What a segment loss may see.

    segment: (B, T) int64 labels in 0..C (C = background), -1 on padding; None in the weak setting.
    video:   (B, C + 1) float multi-hot video-level labels (the event class(es); background for videos that are
             background only). Derived from `segment` in the full setting.
    """

    video: Tensor
    segment: Tensor | None = None

    @property
    def num_labels(self) -> int:
        return int(self.video.shape[-1])


# ---------------------------------------------------------------------------------------------- predictions


def segment_logits(output: DetectorOutput, length: int | None = None) -> Tensor:
    """(B, T, C + 1) per-segment logits of a segment model.

    One level (CCLN): its logits. Several pyramid levels (LoCo-AVEL): each level's logits repeated by its stride
    back to the segment rate, then averaged over the levels that cover the segment, so every level's head takes
    part in training and prediction. `length` crops to the unpadded segment count.
    """
    base = output.cls_logits[0]
    t0 = base.shape[1] if length is None else int(length)
    if len(output.cls_logits) == 1:
        return base[:, :t0]
    total = torch.zeros_like(base[:, :t0])
    count = torch.zeros(base.shape[0], t0, 1, device=base.device, dtype=base.dtype)
    for logits, mask, stride in zip(output.cls_logits, output.masks, output.strides, strict=True):
        up = logits.repeat_interleave(stride, dim=1)[:, :t0]  # (B, T_l * stride, K) -> (B, <=T0, K)
        valid = mask.repeat_interleave(stride, dim=1)[:, :t0, None].to(base.dtype)  # (B, <=T0, 1)
        n = up.shape[1]
        total[:, :n] += up * valid
        count[:, :n] += valid
    return total / count.clamp(min=1.0)


def segment_predictions(output: DetectorOutput, length: int | None = None) -> Tensor:
    """(B, T) int64 predicted labels: the argmax over the C + 1 labels (the AVE reference's convention)."""
    return segment_logits(output, length).argmax(dim=-1)


# ---------------------------------------------------------------------------------------------- metrics


# ---------------------------------------------------------------------------------------------- losses


def multiclass_focal_loss(logits: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """CCLN Eq. (28): binary focal loss on every (segment, label) slot of the one-hot target, summed over the
    C + 1 labels and averaged over the valid segments. logits (B, T, K), labels (B, T) with -1 = padding."""
    valid = labels >= 0
    if not valid.any():
        return logits.sum() * 0.0
    target = F.one_hot(labels[valid], logits.shape[-1]).float()  # (V, K)
    return sigmoid_focal_loss(logits[valid].float(), target, alpha, gamma, "sum") / target.shape[0]


def binary_focal_loss(logits: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """CCLN Eq. (32): binary focal loss of video-level logits (B, K) against multi-hot (B, K), summed over the
    labels, averaged over the videos."""
    return sigmoid_focal_loss(logits.float(), target.float(), alpha, gamma, "sum") / max(logits.shape[0], 1)


def fee_loss(fee_logits: Tensor, video: Tensor) -> Tensor:
    """CCLN Eq. (29)/(33): cross-entropy of the foreground-event prediction (B, C) against the video's event
    class. Videos without a foreground event (background-only) are left out; none left -> 0 (graph kept)."""
    num_fg = fee_logits.shape[-1]
    fg = video[:, :num_fg]
    keep = fg.sum(dim=-1) > 0
    if not keep.any():
        return fee_logits.sum() * 0.0
    return F.cross_entropy(fee_logits[keep].float(), fg[keep].argmax(dim=-1))


def wccl_loss(embeddings: Sequence[Tensor], labels: Tensor, temperature: float) -> Tensor:
    """CCLN's WCCL, Eq. (27): a supervised contrastive loss over every view of every video of the batch.

    embeddings: V views (e.g. the fusion branch P^f and the visual branch P^v), each (N, D); they are
        L2-normalised here. The 2N (VN) anchors are all views of all videos.
    labels: (N,) video-level class of each video; anchors with the same label are positives (the other views of
        the same video always are), every other anchor of the batch is in the denominator.
    Returns the mean over anchors of -log(mean over positives of exp(s_ip / delta) / sum_{a != i} exp(s_ia /
    delta)) (the paper sums over anchors; the mean keeps eta independent of the batch size).
    """
    z = F.normalize(torch.cat([e.float() for e in embeddings], dim=0), dim=-1)  # (VN, D)
    y = labels.repeat(len(embeddings))  # (VN,)
    n = z.shape[0]
    logits = z @ z.T / temperature  # (VN, VN)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_denominator = torch.logsumexp(logits, dim=1)  # (VN,)
    positives = (y[:, None] == y[None, :]) & ~self_mask  # (VN, VN)
    num_pos = positives.sum(dim=1)
    # log((1/|B|) sum_p exp(l_ip)) = logsumexp over positives - log |B|
    pos_logits = logits.masked_fill(~positives, float("-inf"))
    has_pos = num_pos > 0
    log_numerator = torch.logsumexp(pos_logits[has_pos], dim=1) - torch.log(num_pos[has_pos].float())
    return -(log_numerator - log_denominator[has_pos]).mean()


def video_class(video: Tensor) -> Tensor:
    """(B, K) multi-hot -> (B,) one label per video: its first event class, background (K - 1) if none."""
    fg = video[:, :-1]
    has_fg = fg.sum(dim=-1) > 0
    return torch.where(has_fg, fg.argmax(dim=-1), torch.full_like(has_fg, video.shape[-1] - 1, dtype=torch.long))


def weak_video_logits(output: DetectorOutput, mask: Tensor) -> Tensor:
    """(B, C + 1) video-level logits in the weak setting: the model's own MIL pooling (`aux["video_logits"]`,
    CCLN's Eq. (23)-(24)) when it has one, else the mean of the segment logits over valid segments."""
    if "video_logits" in output.aux:
        return output.aux["video_logits"]
    logits = segment_logits(output, mask.shape[1])  # (B, T, K)
    weights = mask[..., None].to(logits.dtype)
    return (logits * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def segment_loss(
    output: DetectorOutput, labels: SegmentTargets, cfg: SegmentLossConfig, mask: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts for one batch of the segment task.

    Auxiliary terms are declared by the model through its output: FEE (`aux["fee"]`) and WCCL
    (`aux["contrast"]`), which CCLN emits, and LCF (`aux["lcf"]`), which LoCo emits in training.
    mask: (B, T) valid segments; defaults to the output's level-0 mask cropped to the label length.
    Full: focal on segment logits vs `labels.segment`. Weak: binary focal on video-level logits vs
    `labels.video`; a segment label passed in the weak setting is an error (it must not leak into training).
    """
    if mask is None:
        mask = output.masks[0]
        if labels.segment is not None:
            mask = mask[:, : labels.segment.shape[1]]
    parts: dict[str, Tensor] = {}
    if cfg.setting == "full":
        if labels.segment is None:
            raise ValueError("the full setting needs segment labels")
        seg = labels.segment.masked_fill(~mask[:, : labels.segment.shape[1]], -1)
        parts["focal"] = multiclass_focal_loss(
            segment_logits(output, seg.shape[1]), seg, cfg.focal_alpha, cfg.focal_gamma
        )
    else:
        if labels.segment is not None:
            raise ValueError("weak-setting losses must not receive segment labels")
        video_logits = weak_video_logits(output, mask)
        parts["focal"] = binary_focal_loss(video_logits, labels.video, cfg.focal_alpha, cfg.focal_gamma)
    total = parts["focal"]

    if "fee" in output.aux:
        parts["fee"] = fee_loss(output.aux["fee"], labels.video)
        total = total + cfg.fee_weight * parts["fee"]
    views = output.aux.get("contrast")
    if views:
        parts["wccl"] = wccl_loss(views, video_class(labels.video), cfg.wccl_temperature)
        total = total + cfg.wccl_weight * parts["wccl"]
    lcf = output.aux.get("lcf")
    if lcf is not None:
        parts["lcf"] = lcf_loss(lcf["visual"], lcf["audio"], lcf["scale"], lcf["targets"])
        total = total + cfg.lcf_weight * parts["lcf"]
    parts["total"] = total
    return total, parts
