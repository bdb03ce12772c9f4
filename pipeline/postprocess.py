"""Detector outputs -> events in seconds: decoding, multi-class Gaussian soft-NMS, conversion through the time grid.

Follows the UnAV reference (`LocPointTransformer.inference_single_video` / `postprocessing`, `batched_nms` and
`softnms_1d_cpu`) operation by operation, in float32, so results match it; the soft-NMS is pure PyTorch and runs
every (video, class) group of a batch at once: one loop step per kept detection, each step a handful of tensor ops.
The reference's other `nms_method`s are there too: "hard" (`nms_1d_cpu`, greedy) and "none";
`PostprocessConfig.from_reference(test_cfg)` reads a reference `test_cfg` mapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch

from avdet.errors import ConfigError
from avdet.models.base import DetectorOutput
from avdet.pipeline.types import Event, TimeGrid

NMS_METHODS = ("soft", "hard", "none")

# the reference's `test_cfg` names -> PostprocessConfig fields (same name when absent)
_REFERENCE_NAMES = {"nms_sigma": "sigma", "multiclass_nms": "multiclass"}


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
        checks = [
            (self.nms_method in NMS_METHODS, f"postprocess.nms_method must be one of {', '.join(NMS_METHODS)}"),
            (self.sigma > 0, "postprocess.sigma must be > 0"),
            (0 <= self.iou_threshold <= 1, "postprocess.iou_threshold must be in [0, 1]"),
            (self.pre_nms_topk >= 1, "postprocess.pre_nms_topk must be >= 1"),
            (self.max_seg_num >= 1, "postprocess.max_seg_num must be >= 1"),
            (0 <= self.pre_nms_thresh < 1, "postprocess.pre_nms_thresh must be in [0, 1)"),
            (0 <= self.min_score < 1, "postprocess.min_score must be in [0, 1)"),
            (self.duration_thresh >= 0, "postprocess.duration_thresh must be >= 0"),
            (0 <= self.voting_thresh <= 1, "postprocess.voting_thresh must be in [0, 1]"),
            (0 <= self.output_threshold <= 1, "postprocess.output_threshold must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_reference(cls, test_cfg: dict) -> PostprocessConfig:
        """From a UnAV / ActionFormer / CCNet `test_cfg` mapping (e.g. a golden file's `test_config`).

        `nms_sigma` -> sigma, `multiclass_nms` -> multiclass, the rest by name; `ext_score_file` (external
        video-level scores, a THUMOS14 option) must be None. Unknown keys are a ConfigError."""
        values: dict = {}
        known = {f.name for f in fields(cls)}
        for key, value in test_cfg.items():
            if key == "ext_score_file":
                if value is not None:
                    raise ConfigError("postprocess: ext_score_file (external classification scores) is not supported")
                continue
            name = _REFERENCE_NAMES.get(key, key)
            if name not in known:
                raise ConfigError(f"postprocess: unknown reference test_cfg key {key!r}")
            values[name] = value
        return cls(**values)


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


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops on one thread: the NMS loop is thousands of tiny ops, for which intra-op threads only add
    synchronisation (on a busy machine, 10-20x slower with 2 threads than with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- NMS -----------------------------------------------------------------------------------------------------------
def _grouped_nms(
    segs: torch.Tensor,
    scores: torch.Tensor,
    group: torch.Tensor,
    *,
    method: str,
    sigma: float,
    iou_threshold: float,
    min_score: float,
    max_keep: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS ("soft") or greedy NMS ("hard") inside each group, all groups at once.

    "soft" reproduces `softnms_1d_cpu` (method 2) exactly, including its tie-breaking: it picks the first maximum
    in its working array, whose order it changes by swapping the pick to the front and refilling dropped slots
    from the tail. We track that slot order (`slot`) instead of moving data. "hard" is `nms_1d_cpu`: the best
    remaining candidate suppresses every other one with IoU >= iou_threshold (ties: input order). Returns, per
    kept detection in the reference's output order (group by group, then pick order), its candidate index and
    (decayed) score; at most `max_keep` per group.
    """
    device = scores.device
    if len(scores) == 0:
        return torch.zeros(0, dtype=torch.long, device=device), scores.new_zeros(0)
    soft = method == "soft"
    order = torch.argsort(group, stable=True)  # candidates of a group keep their input order
    grp_ids, counts = torch.unique_consecutive(group[order], return_counts=True)
    n_grp, width = len(grp_ids), int(counts.max())
    row = torch.repeat_interleave(torch.arange(n_grp, device=device), counts)
    col = torch.arange(len(order), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)

    def padded(values: torch.Tensor, fill: float) -> torch.Tensor:  # (N,) -> (G, W) by (row, col)
        out = values.new_full((n_grp, width), fill)
        out[row, col] = values[order]
        return out

    x1, x2, sc = padded(segs[:, 0], 0.0), padded(segs[:, 1], 0.0), padded(scores, 0.0)
    cand = torch.full((n_grp, width), -1, dtype=torch.long, device=device)
    cand[row, col] = order
    area = x2 - x1 + 1e-6  # float32, as the reference
    alive = torch.zeros((n_grp, width), dtype=torch.bool, device=device)  # not yet picked, not dropped
    alive[row, col] = True
    slot = torch.arange(width, device=device).expand(n_grp, width).clone()  # position in the reference's array
    rows = torch.arange(n_grp, device=device)
    steps = min(width, max_keep)
    pick_col = torch.full((n_grp, steps), -1, dtype=torch.long, device=device)
    pick_score = sc.new_zeros((n_grp, steps))
    neg_inf = torch.tensor(-math.inf, dtype=sc.dtype, device=device)

    for i in range(steps):
        active = alive.any(dim=1)  # (G,)
        if not bool(active.any()):
            break
        best = torch.where(alive, sc, neg_inf).amax(dim=1)  # (G,)
        tied = alive & (sc == best[:, None])
        j = torch.where(tied, slot, width).argmin(dim=1)  # (G,) first maximum in the reference's array order
        pick_col[:, i] = torch.where(active, j, -1)
        pick_score[:, i] = best
        if soft:  # the pick swaps places with whoever sits at slot i
            slot = torch.where(alive & (slot == i), slot[rows, j][:, None], slot)
        alive[rows[active], j[active]] = False
        # overlap of the rest with the pick, in the reference's float32 operation order
        ix1, ix2, iarea = x1[rows, j][:, None], x2[rows, j][:, None], area[rows, j][:, None]
        inter = (torch.minimum(ix2, x2) - torch.maximum(ix1, x1)).clamp(min=0)
        ovr = inter / (iarea + area - inter)  # (G, W)
        if not soft:
            alive = alive & ~(ovr >= iou_threshold)  # groups without a pick have nothing alive
            continue
        sc = torch.where(alive, sc * torch.exp(-(ovr * ovr) / sigma), sc)
        drop = alive & (sc < min_score)
        if bool(drop.any()):
            # dropped slots (ascending) are refilled by the surviving candidates nearest the tail (descending)
            survive = alive & ~drop
            holes = torch.where(drop, slot, width + 1).sort(dim=1).values  # (G, W)
            donor_slot, donor_col = torch.where(survive, slot, -1).sort(dim=1, descending=True)  # (G, W)
            moved = holes < donor_slot  # a prefix of each row
            slot = slot.scatter(1, donor_col, torch.where(moved, holes, donor_slot))
            alive = survive

    kept = pick_col >= 0  # (G, S)
    flat_rows = rows[:, None].expand_as(pick_col)[kept]  # (K,) group by group, pick order within
    return cand[flat_rows, pick_col[kept]], pick_score[kept]


def segment_voting(
    kept: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Refine kept segments (K, 2) as the score-weighted mean of the candidates (N, 2) overlapping them by at least
    `iou_threshold` (the reference's `seg_voting`, used after class-agnostic NMS)."""
    left = torch.maximum(kept[:, None, 0], candidates[None, :, 0])  # (K, N)
    right = torch.minimum(kept[:, None, 1], candidates[None, :, 1])
    inter = (right - left).clamp(min=0)
    union = (kept[:, 1] - kept[:, 0])[:, None] + (candidates[:, 1] - candidates[:, 0])[None, :] - inter
    weights = (inter / union >= iou_threshold).to(scores.dtype) * scores[None, :]
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights @ candidates


Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # segments (N, 2), scores (N,), labels (N,)


def batched_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    video: torch.Tensor,
    n_videos: int,
    *,
    method: str = "soft",
    sigma: float = 0.4,
    iou_threshold: float = 0.7,
    min_score: float = 0.001,
    max_seg_num: int = 100,
    multiclass: bool = True,
    voting_thresh: float = 0.0,
) -> list[Detections]:
    """NMS of several videos' candidates at once, as the reference `batched_nms` on each video alone.

    `video` (N,) holds 0..n_videos-1. Per video: NMS within each class (`multiclass`) or across classes, at most
    `max_seg_num` per class, then at most `max_seg_num` overall by descending score; without `multiclass` a
    positive `voting_thresh` refines the kept segments by `segment_voting` over all of the video's candidates.
    method "none" returns the candidates untouched (the reference skips NMS and the limits then).
    """
    with _one_thread():
        return _batched_nms(
            segments.float(),
            scores.float(),
            labels,
            video,
            n_videos,
            method=method,
            sigma=sigma,
            iou_threshold=iou_threshold,
            min_score=min_score,
            max_seg_num=max_seg_num,
            multiclass=multiclass,
            voting_thresh=voting_thresh,
        )


def _batched_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    video: torch.Tensor,
    n_videos: int,
    *,
    method: str,
    sigma: float,
    iou_threshold: float,
    min_score: float,
    max_seg_num: int,
    multiclass: bool,
    voting_thresh: float,
) -> list[Detections]:
    if method == "none":
        return [(segments[video == v], scores[video == v], labels[video == v]) for v in range(n_videos)]
    group = labels if multiclass else torch.zeros_like(labels)
    key = video * (int(group.max()) + 1 if len(group) else 1) + group  # one NMS group per (video, class)
    cand = torch.arange(len(scores))
    if method == "hard":  # the reference filters before hard NMS (strictly above min_score)
        cand = cand[scores > min_score]
    idx, kept_scores = _grouped_nms(
        segments[cand],
        scores[cand],
        key[cand],
        method=method,
        sigma=sigma,
        iou_threshold=iou_threshold,
        min_score=min_score,
        max_keep=max_seg_num,
    )
    idx = cand[idx]
    results = []
    for v in range(n_videos):
        mine = video[idx] == v
        vid_idx, vid_scores = idx[mine], kept_scores[mine]
        _, rank = vid_scores.sort(descending=True, stable=True)
        rank = rank[:max_seg_num]
        segs = segments[vid_idx[rank]]
        if not multiclass and voting_thresh > 0:
            segs = segment_voting(segs, segments[video == v], scores[video == v], voting_thresh)
        results.append((segs, vid_scores[rank], labels[vid_idx[rank]]))
    return results


def _nms_options(cfg: PostprocessConfig) -> dict:
    """The `batched_nms` keywords a post-processing config sets."""
    return {
        "method": cfg.nms_method,
        "sigma": cfg.sigma,
        "iou_threshold": cfg.iou_threshold,
        "min_score": cfg.min_score,
        "max_seg_num": cfg.max_seg_num,
        "multiclass": cfg.multiclass,
        "voting_thresh": cfg.voting_thresh,
    }


def nms(segments: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, cfg: PostprocessConfig) -> Detections:
    """One video's candidates through the NMS `cfg` describes."""
    video = torch.zeros(len(scores), dtype=torch.long)
    (out,) = batched_nms(
        segments,
        scores,
        labels,
        video,
        1,
        **_nms_options(cfg),
    )
    return out


def soft_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    sigma: float,
    min_score: float,
    max_seg_num: int,
    multiclass: bool = True,
    voting_thresh: float = 0.0,
) -> Detections:
    """Gaussian soft-NMS of one video's candidates, as the reference `batched_nms(use_soft_nms=True)`.

    segments (N, 2), scores (N,), labels (N,). Returns the kept segments, decayed scores and labels, by
    descending score, at most `max_seg_num` (per class first when `multiclass`, then overall).
    """
    video = torch.zeros(len(scores), dtype=torch.long)
    (out,) = batched_nms(
        segments,
        scores,
        labels,
        video,
        1,
        method="soft",
        sigma=sigma,
        min_score=min_score,
        max_seg_num=max_seg_num,
        multiclass=multiclass,
        voting_thresh=voting_thresh,
    )
    return out


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
    with _one_thread():
        decoded = [decode_video(out, b, cfg) for b in range(n_videos)]
    segs = torch.cat([d[0] for d in decoded]).detach().cpu()
    scores = torch.cat([d[1] for d in decoded]).detach().cpu()
    labels = torch.cat([d[2] for d in decoded]).detach().cpu()
    video = torch.repeat_interleave(torch.arange(n_videos), torch.tensor([len(d[1]) for d in decoded]))
    kept = batched_nms(
        segs,
        scores,
        labels,
        video,
        n_videos,
        **_nms_options(cfg),
    )
    return [
        to_events(s, sc, lab, grid, dur, class_names)
        for (s, sc, lab), grid, dur in zip(kept, grids, durations, strict=True)
    ]
