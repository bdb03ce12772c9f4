"""Multi-class Gaussian soft-NMS and greedy NMS of 1-D segments, bit for bit as the UnAV reference.

Follows the UnAV reference (`batched_nms` in `libs/utils/nms.py` and `softnms_1d_cpu` / `nms_1d_cpu` in
`libs/utils/csrc/nms_cpu.cpp`) operation by operation, in float32 (glibc's expf included), so results match it bit
for bit, ties included. The soft-NMS runs every (video, class) group of a batch at once in numpy, one pick per group
and step, and stops each group as soon as it provably cannot reach its video's best max_seg_num (the only
detections the reference keeps). The reference's other `nms_method`s are there too: "hard" (`nms_1d_cpu`, greedy)
and "none". The settings travel as one `NMSSettings`; `batched_nms` is the torch-facing entry, everything below it
is numpy (torch is imported only where tensors come in or go out).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from avdet.errors import ConfigError
from avdet.pipeline.threads import torch_threads

if TYPE_CHECKING:
    import torch

NMS_METHODS = ("soft", "hard", "none")


@dataclass(frozen=True)
class NMSSettings:
    """The NMS parameters, as `PostprocessConfig` sets them (its `nms`); defaults are the UnAV reference test
    settings. Errors name the config keys (`postprocess.*`), which is where users set them."""

    method: str = "soft"  # "soft" (Gaussian soft-NMS), "hard" (greedy NMS) or "none"
    sigma: float = 0.4  # Gaussian soft-NMS: score *= exp(-iou^2 / sigma)
    iou_threshold: float = 0.7  # hard NMS only: suppress overlaps at or above this IoU (unused by Gaussian soft-NMS)
    min_score: float = 0.001  # soft-NMS drops segments whose decayed score falls below this; hard NMS keeps > this
    max_seg_num: int = 100  # at most this many per class and per video
    multiclass: bool = True  # NMS within each class (True) or across classes
    voting_thresh: float = 0.75  # class-agnostic NMS only: average the kept segments with candidates above this IoU

    def __post_init__(self) -> None:
        checks = [
            (self.method in NMS_METHODS, f"postprocess.nms_method must be one of {', '.join(NMS_METHODS)}"),
            (self.sigma > 0, "postprocess.sigma must be > 0"),
            (0 <= self.iou_threshold <= 1, "postprocess.iou_threshold must be in [0, 1]"),
            (self.max_seg_num >= 1, "postprocess.max_seg_num must be >= 1"),
            (0 <= self.min_score < 1, "postprocess.min_score must be in [0, 1)"),
            (0 <= self.voting_thresh <= 1, "postprocess.voting_thresh must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# The NMS loop runs in numpy on the CPU: each step is a couple of dozen operations on small arrays, for which numpy's
# per-call cost is several times lower than torch's. Inputs on another device come back there.
_F32 = np.float32
_DENSE_SIZE = 4096  # (groups x width) up to which the decay runs on every candidate: fewer, larger calls


@dataclass
class _Groups:
    """Candidates laid out one NMS group (video, class) per row, in input order along the row; padding is dead."""

    geo: np.ndarray  # (3, G, W) float32: x1, x2 and the reference's area x2 - x1 + 1e-6
    score: np.ndarray  # (G, W) float32, -inf where dead (picked, dropped or padding)
    alive: np.ndarray  # (G, W) bool: not picked, not dropped
    slot: np.ndarray  # (G, W) position of each candidate in the reference's working array (when tracked)
    row: np.ndarray  # (G,) row id in the original layout (rows are dropped as groups finish)
    video: np.ndarray  # (G,) video of each row

    def take(self, keep: np.ndarray) -> _Groups:
        k = keep
        return _Groups(self.geo[:, k], self.score[k], self.alive[k], self.slot[k], self.row[k], self.video[k])


def _layout(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort candidates by group key (stable): order, row and column of each, and each row's key."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.concatenate(([0], np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1))
    counts = np.concatenate((first[1:], [len(key)])) - first
    row = np.repeat(np.arange(len(first)), counts)
    col = np.arange(len(key)) - np.repeat(first, counts)
    return order, row, col, sorted_key[first]


def _padded(values: np.ndarray, row: np.ndarray, col: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
    out = np.full(shape, fill, dtype=values.dtype)
    out[row, col] = values
    return out


@cache
def _exp2_scales() -> np.ndarray:
    """2^(k/32) for k = 0, -1, ..., -_MAX_K (index -k), as glibc builds it: T[k mod 32] (2^(i/32) correctly rounded
    to float64, bits less i << 47) plus k << 47 in its bits. One lookup by -k replaces that per element."""
    with localcontext() as ctx:
        ctx.prec = 40
        powers = np.array([float(Decimal(2) ** (Decimal(i) / 32)) for i in range(32)])
    table = powers.view(np.uint64) - (np.arange(32, dtype=np.uint64) << np.uint64(47))
    k = (-np.arange(_MAX_K + 1, dtype=np.int64)).view(np.uint64)  # two's complement, as glibc's uint64 arithmetic
    return (table[k & np.uint64(31)] + (k << np.uint64(47))).view(np.float64)


# glibc's expf (>= 2.28): x / ln2 = k / 32 + r / 32, exp(x) = 2^(k/32) * 2^(r/32) with a cubic for 2^(r/32), in
# float64, rounded to float32 once. Its constants below; the float64 exp rounded to float32 differs from it in about
# 1 case in 1,000 (by one unit in the last place), enough to change the last bit of some decayed scores.
_INV_LN2_32 = float.fromhex("0x1.71547652b82fep+0") * 32
_NEG_INV_LN2_32 = np.float64(-_INV_LN2_32)  # a numpy float64: float32 x float64 scalar runs in float64
_SHIFT = float.fromhex("0x1.8p+52")  # adding it rounds to an integer k, found in the low bits: bits = _SHIFT's + k
_SHIFT_BITS = int(np.array(_SHIFT).view(np.int64))
_MAX_K = int(110 * _INV_LN2_32) + 1  # -k for the largest (clamped) argument, 110
_POLY = (
    float.fromhex("0x1.c6af84b912394p-5") / 32**3,
    float.fromhex("0x1.ebfce50fac4f3p-3") / 32**2,
    float.fromhex("0x1.62e42ff0c52d6p-1") / 32,
)
_POLY_LINEAR = np.array([[_POLY[0]], [_POLY[2]]])  # c0 r and c2 r in one call
_POLY_CONSTANT = np.array([[_POLY[1]], [1.0]])  # then + c1 and + 1


def _expf_neg(q: np.ndarray, clamp: bool = True) -> np.ndarray:
    """exp(-q) of a float32 array q >= 0 with the float32 result of glibc's `expf` (std::exp(float) in the
    reference). q is clamped to 110, where the float32 result is 0 as glibc's (which flushes beyond 103.97); the
    caller may skip that when q stays below 103. At a few hundred elements the number of numpy calls, not their
    size, sets the cost: steps run in place, and the cubic's two linear terms in one call."""
    flat = q.reshape(-1)
    z = np.multiply(np.minimum(flat, _F32(110)) if clamp else flat, _NEG_INV_LN2_32)  # in float64; -q is exact
    kd = z + _SHIFT
    s = _exp2_scales()[np.subtract(_SHIFT_BITS, kd.view(np.int64))]
    kd -= _SHIFT
    r = np.subtract(z, kd, out=z)
    lin = _POLY_LINEAR * r  # glibc's order: (c0 r + c1) r^2 + (c2 r + 1), times the scale
    lin += _POLY_CONSTANT
    y = lin[0]
    y *= np.multiply(r, r, out=r)
    y += lin[1]
    y *= s
    return y.astype(_F32).reshape(q.shape)


def _expf(x: np.ndarray) -> np.ndarray:
    """glibc's float32 `expf` of float32 x <= 0."""
    return _expf_neg(np.negative(x))


def _gaussian_weight(ovr: np.ndarray, sigma: np.float32) -> np.ndarray:
    """exp(-(ovr^2) / sigma) as the reference computes it in float32 (-(a) / s is -(a / s) exactly); ovr <= 1."""
    return _expf_neg(np.divide(np.multiply(ovr, ovr), sigma), clamp=sigma < 0.01)


def _decay(  # float32 scalars, not the settings: converted once per call of the loop, not once per step
    g: _Groups, inter: np.ndarray, iarea: np.ndarray, sigma: np.float32, min_score: np.float32, full: bool
) -> np.ndarray:
    """Gaussian decay of the live candidates by their overlap with the picks; returns the drop mask. Large blocks
    only touch the overlapping candidates (inter > 0; exp(-0) = 1), which is enough after step 0 (`full`), where
    scores below min_score are dropped whether or not they overlap."""
    if g.score.size <= _DENSE_SIZE:
        np.maximum(inter, _F32(0), out=inter)
        ovr = inter / ((iarea[:, None] + g.geo[2]) - inter)
        np.multiply(g.score, _gaussian_weight(ovr, sigma), out=g.score, where=g.alive)
        return g.alive & (g.score < min_score)
    rr, cc = np.nonzero((inter > 0) & g.alive)
    hit = inter[rr, cc]
    ovr = hit / ((iarea[rr] + g.geo[2, rr, cc]) - hit)
    decayed = g.score[rr, cc] * _gaussian_weight(ovr, sigma)
    g.score[rr, cc] = decayed
    if full:
        return g.alive & (g.score < min_score)
    low = decayed < min_score
    drop = np.zeros_like(g.alive)
    drop[rr[low], cc[low]] = True
    return drop


def _refill(g: _Groups, drop: np.ndarray) -> None:
    """The reference moves the surviving candidates nearest the tail into dropped places (lowest place first)."""
    rows = np.flatnonzero(drop.any(axis=1))
    d, alive, slot = drop[rows], g.alive[rows], g.slot[rows]
    survive = alive & ~d
    width = slot.shape[1]
    holes = np.sort(np.where(d, slot, width + 1), axis=1)
    donor_col = np.argsort(np.where(survive, -slot, 1), axis=1, kind="stable")  # by descending place
    donor_slot = np.take_along_axis(np.where(survive, slot, -1), donor_col, axis=1)
    np.put_along_axis(slot, donor_col, np.where(holes < donor_slot, holes, donor_slot), axis=1)
    g.slot[rows] = slot
    g.alive[rows] = survive
    g.score[rows] = np.where(survive, g.score[rows], -np.inf)


def _kth_best(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray], n_videos: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best k (score, row) picks of each video, by the final order: score descending, then row (class) order;
    returns the reduced pool and, per video, the k-th best score and row (-inf and -1 while fewer than k)."""
    score, row, video = pool
    if n_videos == 1:
        order = np.lexsort((row, -score))[:k]
        score, row, video = score[order], row[order], video[order]
        if len(score) < k:
            return (score, row, video), np.full(1, -np.inf, dtype=_F32), np.full(1, -1)
        return (score, row, video), score[-1:], row[-1:]
    order = np.lexsort((row, -score, video))
    score, row, video = score[order], row[order], video[order]
    rank = np.arange(len(score)) - np.searchsorted(video, video)
    keep = rank < k
    kth_score, kth_row = np.full(n_videos, -np.inf, dtype=_F32), np.full(n_videos, -1)
    last = rank == k - 1
    kth_score[video[last]], kth_row[video[last]] = score[last], row[last]
    return (score[keep], row[keep], video[keep]), kth_score, kth_row


class _TopK:
    """The early stop's state: each video's best k picks so far and the k-th best's score and row."""

    def __init__(self, n_videos: int, k: int) -> None:
        self.n_videos, self.k = n_videos, k
        self.pool: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # picks since the last k-th best, its top k
        self.pooled = 0
        self.kth_score, self.kth_row = np.full(n_videos, -np.inf, dtype=_F32), np.full(n_videos, -1)

    def go(self, best: np.ndarray, row: np.ndarray, video: np.ndarray, floor: float) -> np.ndarray:
        """Which groups' next picks (`best`) can still make their video's top k and are above `floor`: beating the
        k-th best, or equal to it from an earlier class (ties go by class, then pick order)."""
        if self.n_videos == 1:  # scalars: fewer operations
            ks, kr = self.kth_score[0], self.kth_row[0]
            if ks <= floor:
                return best > floor
            go = best > ks
            return go | ((best == ks) & (kr > row)) if self.pooled >= self.k else go
        ks, kr = self.kth_score[video], self.kth_row[video]
        go = best > np.maximum(ks, floor)
        if self.pooled >= self.k:
            go |= (best == ks) & (ks > floor) & (kr > row)
        return go

    def add(self, best: np.ndarray, row: np.ndarray, video: np.ndarray) -> None:
        self.pool.append((best, row, video))
        self.pooled += len(best)
        if self.pooled >= self.k:  # some video may have k picks
            merged = tuple(np.concatenate(part) for part in zip(*self.pool, strict=True))
            kept, self.kth_score, self.kth_row = _kth_best(merged, self.n_videos, self.k)
            self.pool, self.pooled = [kept], len(kept[0])


def _grouped_nms(
    segs: np.ndarray,
    scores: np.ndarray,
    key: np.ndarray,
    n_groups: int,
    nms: NMSSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian soft-NMS ("soft") or greedy NMS ("hard") inside each group, then each video's best `max_seg_num`.

    `key` = video * n_groups + group. "soft" reproduces `softnms_1d_cpu` (method 2) exactly, including its
    tie-breaking: it picks the first maximum in its working array, whose order it changes by swapping the pick to the
    front and refilling dropped places from the tail; `slot` tracks that order instead of moving data. "hard" is
    `nms_1d_cpu`: the best remaining candidate suppresses every other one with IoU >= iou_threshold (ties: input
    order). All groups advance together, one pick per step; a group stops as soon as it cannot reach its video's
    best `max_seg_num` (see `_grouped_picks`). Returns the kept candidates' indices, scores and videos, video by video,
    each video by descending score, equal scores by class, then pick order (a stable sort of the reference's
    concatenation; its own final `sort` is torch's unstable CPU sort, which may order exactly equal scores of
    different classes otherwise, and so cut a different one of them at max_seg_num).
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(scores) == 0:
        return empty, np.zeros(0, dtype=_F32), empty
    order, row, col, row_key = _layout(key)
    row_video = row_key // n_groups
    pr, pc, kept, step = _grouped_picks(segs[order], scores[order], row, col, row_video, nms)
    cand = _padded(order, row, col, (len(row_key), int(col.max()) + 1), -1)
    video = row_video[pr]
    final = np.lexsort((step, pr, -kept, video))  # rows run in (video, class) order
    if row_video[-1] == 0:  # one video
        final = final[: nms.max_seg_num]
    else:
        video = video[final]
        final = final[np.arange(len(final)) - np.searchsorted(video, video) < nms.max_seg_num]
    return cand[pr[final], pc[final]], kept[final], row_video[pr[final]]


def _grouped_picks(
    segs: np.ndarray,
    scores: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    row_video: np.ndarray,
    nms: NMSSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The NMS loop ("soft" or "hard"): every pick's row, column, score and step (its rank among its row's picks).

    Exact early stop: a group's picks have non-increasing scores (the NMS only lowers scores), so its next pick
    bounds all later ones. In the final order (score descending, ties by class then pick order) that pick is beaten
    by every pick already made with a higher score, or an equal one in an earlier or the same class. Once a video's
    k-th best pick so far (k = max_seg_num) beats it, neither it nor any later pick of the group can make the top k: the
    group stops. Every pick made is the reference's, so the final top k is unchanged.

    Soft-NMS first runs without tracking the reference's array order, which only decides between equal maxima; if
    a pick has a tied maximum, it starts again tracking it.
    """
    n_rows, width = int(row[-1]) + 1, int(col.max()) + 1
    geo = np.zeros((3, n_rows, width), dtype=_F32)
    geo[:2, row, col] = segs.T
    np.add(geo[1] - geo[0], _F32(1e-6), out=geo[2])
    soft = nms.method == "soft"
    if soft:
        score = _padded(scores, row, col, (n_rows, width), -np.inf)
        picks = _soft_picks(geo, score, row_video, nms)
        if picks is not None:
            return picks
    score = _padded(scores, row, col, (n_rows, width), -np.inf)
    slot = np.tile(np.arange(width), (n_rows, 1)) if soft else np.zeros((n_rows, 0), dtype=np.int64)
    g = _Groups(geo, score, score > -np.inf, slot, np.arange(n_rows), row_video)
    return _pick_loop(g, nms)


def _soft_picks(
    geo: np.ndarray, score: np.ndarray, video: np.ndarray, nms: NMSSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Soft-NMS without the reference's array order (`score` changed in place): the picks as `_grouped_picks`
    returns them, or None at the first tied maximum (which that order decides).

    Lean, as each step costs a few dozen numpy calls: dropped candidates are not removed. The reference picks at
    step 0 whatever the score and drops every other candidate below min_score then, and later each one decayed
    below it; scores only fall, so after step 0 every live score is >= min_score and every dropped one below: a
    group whose best is below min_score is done, and the best of a live group is never a dropped candidate.
    """
    width = score.shape[1]
    geo = np.stack((geo[1], np.negative(geo[0]), geo[2]))  # x2, -x1, area: one minimum gives both overlap ends
    f_sigma, f_min = _F32(nms.sigma), _F32(nms.min_score)  # once: the loop uses float32 scalars, as the reference
    live = np.nextafter(f_min, _F32(-np.inf))  # best > live: best >= min_score
    row = np.arange(len(score))
    start = row * width  # flat index of each row's first place: one flat index per pick serves three lookups
    top = _TopK(int(video[-1]) + 1, nms.max_seg_num)
    picks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per step: rows, columns, scores
    for i in range(min(width, nms.max_seg_num)):
        j = score.argmax(axis=1)
        flat = start + j
        best = score.reshape(-1)[flat]
        go = top.go(best, row, video, live if i else -np.inf)
        n_go = np.count_nonzero(go)
        if n_go < len(row):
            if n_go == 0:
                break
            keep = np.flatnonzero(go)
            score, geo, row, video, j, best = score[keep], geo[:, keep], row[keep], video[keep], j[keep], best[keep]
            start = start[:n_go]
            flat = start + j
        if np.count_nonzero(score == best[:, None]) > n_go:
            return None
        picks.append((row, j, best))
        score.reshape(-1)[flat] = -np.inf
        picked = geo.reshape(3, -1).take(flat, axis=1)[:, :, None]  # the reference's float32 operations below
        ends = np.minimum(geo[:2], picked[:2])  # min(x2, ix2) and -max(x1, ix1): exact negations
        inter, iarea = ends[0] + ends[1], picked[2]
        if score.size <= _DENSE_SIZE:  # every candidate: fewer, larger calls
            np.maximum(inter, _F32(0), out=inter)
            union = iarea + geo[2]
            union -= inter
            weight = _gaussian_weight(np.divide(inter, union, out=inter), f_sigma)
            if f_sigma < 0.01:  # the weight may be 0: keep the dead at -inf (-inf * 0 is nan)
                np.multiply(score, weight, out=score, where=score > -np.inf)
            else:
                score *= weight
        else:  # only the live overlapping ones (exp(-0) = 1)
            rr, cc = np.nonzero((inter > 0) & (score >= f_min))
            hit = inter[rr, cc]
            ovr = hit / ((iarea[rr, 0] + geo[2, rr, cc]) - hit)
            score[rr, cc] *= _gaussian_weight(ovr, f_sigma)
        top.add(best, row, video)
    return _picks_arrays(picks)


def _picks_arrays(
    picks: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per step (rows, columns, scores) -> all picks' rows, columns, scores and steps."""
    if not picks:  # no finite score at all
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=_F32), np.zeros(0)
    rows, cols, scores = (np.concatenate(part) for part in zip(*picks, strict=True))
    return rows, cols, scores, np.repeat(np.arange(len(picks)), [len(p[0]) for p in picks])


def _pick_loop(g: _Groups, nms: NMSSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`_grouped_picks`' loop on `g` (changed in place) for hard NMS, and for soft-NMS tracking the reference's
    array order (`g.slot`), which decides between tied maxima."""
    n_rows, width = g.score.shape
    picks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per step: rows, columns, scores
    soft = nms.method == "soft"
    f_sigma, f_min, f_iou = _F32(nms.sigma), _F32(nms.min_score), _F32(nms.iou_threshold)  # once, as float32
    top = _TopK(int(g.video[-1]) + 1, nms.max_seg_num)
    for i in range(min(width, nms.max_seg_num)):
        best = g.score.max(axis=1)
        go = top.go(best, g.row, g.video, -np.inf)  # also drops exhausted groups (-inf)
        if not go.all():
            if not go.any():
                break
            g = g.take(np.flatnonzero(go))
            best = best[go]
        rows = np.arange(len(best))
        if soft:  # the first maximum in the reference's array order
            j = np.where(g.score == best[:, None], g.slot, width).argmin(axis=1)
            at_i = g.alive & (g.slot == i)  # the candidate in place i swaps places with the pick
            g.slot = np.where(at_i, g.slot[rows, j][:, None], g.slot)
        else:  # hard NMS: the first maximum in input order
            j = g.score.argmax(axis=1)
        picks.append((g.row, j, best))
        g.alive[rows, j] = False
        g.score[rows, j] = -np.inf
        # overlap of the rest with the pick, in the reference's float32 operation order
        ix1, ix2, iarea = g.geo[:, rows, j][:, :, None]
        x1, x2, area = g.geo
        inter = np.minimum(x2, ix2) - np.maximum(x1, ix1)
        if soft:  # only overlapping candidates decay (exp(-0) = 1); at step 0 every score meets min_score
            drop = _decay(g, inter, iarea[:, 0], f_sigma, f_min, full=i == 0)
        else:
            np.maximum(inter, _F32(0), out=inter)
            drop = g.alive & (inter / ((iarea + area) - inter) >= f_iou)
        if drop.any():
            if soft:
                _refill(g, drop)
            else:
                g.alive ^= drop  # drop is within alive
                np.copyto(g.score, -np.inf, where=drop)
        top.add(best, g.row, g.video)
    return _picks_arrays(picks)


def segment_voting(
    kept: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Refine kept segments (K, 2) as the score-weighted mean of the candidates (N, 2) overlapping them by at least
    `iou_threshold` (the reference's `seg_voting`, used after class-agnostic NMS)."""
    import torch

    left = torch.maximum(kept[:, None, 0], candidates[None, :, 0])  # (K, N)
    right = torch.minimum(kept[:, None, 1], candidates[None, :, 1])
    inter = (right - left).clamp(min=0)
    union = (kept[:, 1] - kept[:, 0])[:, None] + (candidates[:, 1] - candidates[:, 0])[None, :] - inter
    weights = (inter / union >= iou_threshold).to(scores.dtype) * scores[None, :]
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights @ candidates


Detections = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]  # segments (N, 2), scores (N,), labels (N,)


def batched_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    video: torch.Tensor,
    n_videos: int,
    nms: NMSSettings = NMSSettings(),  # frozen: one shared default is safe
) -> list[Detections]:
    """NMS of several videos' candidates at once, as the reference `batched_nms` on each video alone.

    `video` (N,) holds 0..n_videos-1. Per video: NMS within each class (`nms.multiclass`) or across classes, at most
    `nms.max_seg_num` per class, then at most `nms.max_seg_num` overall by descending score; without `multiclass` a
    positive `voting_thresh` refines the kept segments by `segment_voting` over all of the video's candidates.
    Method "none" returns the candidates untouched (the reference skips NMS and the limits then).
    """
    with torch_threads(1):  # thousands of tiny ops: extra threads only add waiting
        return _batched_nms(segments.float(), scores.float(), labels, video, n_videos, nms)


def _batched_nms(
    segments: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    video: torch.Tensor,
    n_videos: int,
    nms: NMSSettings,
) -> list[Detections]:
    import torch

    if nms.method == "none":
        return [(segments[video == v], scores[video == v], labels[video == v]) for v in range(n_videos)]
    device = segments.device
    segs_np, scores_np = segments.numpy(force=True), scores.numpy(force=True)  # force: detached, on the CPU
    labels_np, video_np = labels.numpy(force=True), video.numpy(force=True).astype(np.int64)
    group = labels_np.astype(np.int64) if nms.multiclass else np.zeros_like(video_np)
    n_groups = int(group.max()) + 1 if len(group) else 1
    key = video_np * n_groups + group  # one NMS group per (video, class)
    cand = None
    if nms.method == "hard":  # the reference filters before hard NMS (strictly above min_score)
        cand = np.flatnonzero(scores_np > _F32(nms.min_score))
    idx, kept_scores, kept_video = _grouped_nms(
        segs_np if cand is None else segs_np[cand],
        scores_np if cand is None else scores_np[cand],
        key if cand is None else key[cand],
        n_groups,
        nms,
    )
    if cand is not None:
        idx = cand[idx]
    bounds = np.searchsorted(kept_video, np.arange(n_videos + 1))
    results = []
    for v in range(n_videos):
        mine = idx[bounds[v] : bounds[v + 1]]
        segs = torch.from_numpy(segs_np[mine]).to(device)
        if not nms.multiclass and nms.voting_thresh > 0:
            segs = segment_voting(segs, segments[video == v], scores[video == v], nms.voting_thresh)
        kept = torch.from_numpy(kept_scores[bounds[v] : bounds[v + 1]]).to(device)
        results.append((segs, kept, torch.from_numpy(labels_np[mine]).to(device)))
    return results
