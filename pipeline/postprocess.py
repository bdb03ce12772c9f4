"""Detector outputs -> events in seconds: decoding, NMS (`pipeline/nms.py`), conversion through the time grid.

Follows the UnAV reference (`LocPointTransformer.inference_single_video` / `postprocessing`) operation by operation,
in float32, so results match it bit for bit; the bit-exact soft-NMS / hard-NMS kernel and its reasoning live in
`avdet.pipeline.nms`. `PostprocessConfig` holds the decoding parameters and hands the NMS ones over as one
`NMSSettings` (its `nms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avdet.errors import ConfigError
from avdet.models.base import DetectorOutput
from avdet.pipeline.nms import NMSSettings, batched_nms
from avdet.pipeline.threads import torch_threads
from avdet.pipeline.types import Event, TimeGrid


@dataclass
class PostprocessConfig:
    """Decoding and NMS parameters; defaults are the UnAV reference test settings (`test_cfg`)."""

    pre_nms_thresh: float = 0.001  # per level, keep (point, class) candidates scoring above this
    pre_nms_topk: int = 2000  # per level, at most this many candidates (highest scores)
    duration_thresh: float = 0.05  # drop segments shorter than this, in grid units
    nms_method: str = "soft"  # "soft" (Gaussian soft-NMS), "hard" (greedy NMS) or "none"
    sigma: float = 0.4  # Gaussian soft-NMS: score *= exp(-iou^2 / sigma)
    iou_threshold: float = 0.7  # hard NMS only: suppress overlaps at or above this IoU (unused by Gaussian soft-NMS)
    min_score: float = 0.001  # soft-NMS drops segments whose decayed score falls below this; hard NMS keeps > this
    max_seg_num: int = 100  # at most this many per class and per video
    multiclass: bool = True  # NMS within each class (True) or across classes
    voting_thresh: float = 0.75  # class-agnostic NMS only: average the kept segments with candidates above this IoU
    output_threshold: float = 0.1  # `detect` hides events below this score (evaluation uses them all)

    def __post_init__(self) -> None:
        _ = self.nms  # NMSSettings checks the NMS fields (its messages name these config keys)
        checks = [
            (self.pre_nms_topk >= 1, "postprocess.pre_nms_topk must be >= 1"),
            (0 <= self.pre_nms_thresh < 1, "postprocess.pre_nms_thresh must be in [0, 1)"),
            (self.duration_thresh >= 0, "postprocess.duration_thresh must be >= 0"),
            (0 <= self.output_threshold <= 1, "postprocess.output_threshold must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def nms(self) -> NMSSettings:
        """The NMS parameters as one frozen object (built on each call: this config's fields may be changed)."""
        return NMSSettings(
            method=self.nms_method,
            sigma=self.sigma,
            iou_threshold=self.iou_threshold,
            min_score=self.min_score,
            max_seg_num=self.max_seg_num,
            multiclass=self.multiclass,
            voting_thresh=self.voting_thresh,
        )


# -- decoding ------------------------------------------------------------------------------------------------------
def decode_video(out: DetectorOutput, index: int, cfg: PostprocessConfig) -> tuple[torch.Tensor, ...]:
    """Candidates of video `index`: segments (N, 2) in grid units, scores (N,), labels (N,), levels concatenated."""
    segs, scores, labels = [], [], []
    for logits, offsets, mask, stride in zip(out.cls_logits, out.offsets, out.masks, out.strides, strict=True):
        logits, offsets, mask = logits[index], offsets[index], mask[index]  # (T, C), (T, C, 2), (T,)
        n_cls = logits.shape[-1]
        prob = (logits.sigmoid() * mask.unsqueeze(-1)).flatten()  # (T * C,) index = t * C + c
        flat_idx = (prob > cfg.pre_nms_thresh).nonzero(as_tuple=True)[0]
        prob, order = prob[flat_idx].sort(descending=True)
        k = min(cfg.pre_nms_topk, len(flat_idx))
        prob, flat_idx = prob[:k], flat_idx[order[:k]]
        point = torch.div(flat_idx, n_cls, rounding_mode="floor")
        label = torch.fmod(flat_idx, n_cls)
        off = offsets.reshape(-1, 2)[flat_idx].float()  # (T, C, 2) -> (T * C, 2), same flat index as prob
        centre = point.float() * stride  # point i of this level sits at grid i * stride
        seg = torch.stack((centre - off[:, 0] * stride, centre + off[:, 1] * stride), dim=-1)
        keep = (seg[:, 1] - seg[:, 0]) > cfg.duration_thresh
        segs.append(seg[keep])
        scores.append(prob[keep].float())
        labels.append(label[keep])
    return torch.cat(segs), torch.cat(scores), torch.cat(labels)


# -- seconds and events ------------------------------------------------------------------------------------------
def to_events(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    grid: TimeGrid,
    duration: float,
    class_names: list[str] | None,
) -> list[Event]:
    """Grid-unit detections -> events in seconds, clamped to [0, duration], in the given (score) order."""
    sec = grid.to_seconds(segments.detach().cpu().double()).clamp(min=0.0, max=float(duration)) + 0.0  # + 0.0: no -0.0
    events = []
    for (start, end), score, label in zip(sec.tolist(), scores.tolist(), labels.tolist(), strict=True):
        name = class_names[label] if class_names and 0 <= label < len(class_names) else f"class_{label}"
        events.append(Event(name, int(label), float(start), float(end), float(score)))
    return events


def postprocess(
    out: DetectorOutput,
    grids: list[TimeGrid],
    durations: list[float],
    cfg: PostprocessConfig,
    class_names: list[str] | None,
) -> list[list[Event]]:
    """Events per video of the batch, by descending score (decode -> NMS -> seconds)."""
    n_videos = out.cls_logits[0].shape[0]
    if not len(grids) == len(durations) == n_videos:
        raise ValueError(f"postprocess: {n_videos} videos but {len(grids)} grids and {len(durations)} durations")
    with torch_threads(1):  # thousands of tiny ops: extra threads only add waiting
        decoded = [decode_video(out, b, cfg) for b in range(n_videos)]
    return candidates_to_events(decoded, grids, durations, cfg, class_names)


def candidates_to_events(
    candidates: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    grids: list[TimeGrid],
    durations: list[float],
    cfg: PostprocessConfig,
    class_names: list[str] | None,
) -> list[list[Event]]:
    """Per video its decoded candidates (segments in grid units, scores, labels) -> NMS -> events in seconds."""
    segs = torch.cat([d[0] for d in candidates]).detach().cpu()
    scores = torch.cat([d[1] for d in candidates]).detach().cpu()
    labels = torch.cat([d[2] for d in candidates]).detach().cpu()
    video = torch.repeat_interleave(torch.arange(len(candidates)), torch.tensor([len(d[1]) for d in candidates]))
    kept = batched_nms(segs, scores, labels, video, len(candidates), cfg.nms)
    return [
        to_events(s, sc, lab, grid, dur, class_names)
        for (s, sc, lab), grid, dur in zip(kept, grids, durations, strict=True)
    ]
