"""LoCo's Local Correspondence Feature modulation (LCF): a training-only contrastive constraint on the
unimodal encoder outputs.

Both modalities are projected to a smaller space and L2-normalised; over every valid segment of the batch,
the audio-visual similarities (divided by a learnable temperature) are pulled towards target weights w_ij.
Segments of different videos are negatives (w = 0). Inside one video the target depends on the variant:

- "adaptive_gaussian" (default): w_ij = exp(-(i - j)^2 / (2 sigma^2)), sigma learnable and kept above a floor;
- "fixed_gaussian": the same with sigma fixed at its initial value;
- "softened": label smoothing of the diagonal, 1 - eps on it and eps spread evenly over the video's other
  segments (every positive pair attracted equally);
- "diagonal": only the synchronous pair (i == j).

The loss itself (`models.losses.lcf_loss`) only needs the embeddings, the scale and the target matrix, which
the module returns.

Under DistributedDataParallel each rank holds only its share of the batch, so its segments would miss the other
ranks' negatives. With `gather_ranks` set (pipeline.train does so under DDP) the module gathers every rank's
embeddings (gradients flow back to their owners) and builds the target matrix of the whole global batch: each rank
then returns the single-process LCF inputs, and the trainer counts the replicated loss once (divides it by the
world size).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LCFType = Literal["adaptive_gaussian", "fixed_gaussian", "softened", "diagonal", "none"]
LCF_TYPES: tuple[str, ...] = ("adaptive_gaussian", "fixed_gaussian", "softened", "diagonal", "none")


def valid_segments(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Video index and time step of every valid step of a (B, T) mask, row-major: two (N,) tensors."""
    batch, length = mask.shape
    video = torch.arange(batch, device=mask.device)[:, None].expand(batch, length)  # (B, T)
    step = torch.arange(length, device=mask.device)[None, :].expand(batch, length)  # (B, T)
    return video[mask], step[mask]


def diagonal_targets(video: Tensor, step: Tensor) -> Tensor:
    """(N, N) one-hot targets: 1 only for the same segment of the same video."""
    same = (video[:, None] == video[None, :]) & (step[:, None] == step[None, :])
    return same.float()


def gaussian_targets(video: Tensor, step: Tensor, sigma: Tensor | float) -> Tensor:
    """(N, N) targets exp(-(i - j)^2 / (2 sigma^2)) within a video, 0 across videos (grad to sigma)."""
    same = video[:, None] == video[None, :]
    gap = (step[:, None] - step[None, :]).float()
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=step.device)
    weights = torch.exp(-gap.square() / (2 * sigma.square()))
    return torch.where(same, weights, torch.zeros_like(weights))


def softened_targets(video: Tensor, step: Tensor, smoothing: float) -> Tensor:
    """(N, N) label-smoothed diagonal: 1 - eps on the diagonal, eps / (n_b - 1) on the other segments of the
    same video (n_b of them valid), 0 across videos. A single-segment video keeps 1 on its diagonal."""
    same = video[:, None] == video[None, :]
    diag = same & (step[:, None] == step[None, :])
    others = same.sum(dim=1, keepdim=True) - 1  # (N, 1) other segments in the row's video
    off = smoothing / others.clamp(min=1).float()
    on = torch.where(others > 0, torch.full_like(off, 1.0 - smoothing), torch.ones_like(off))
    return torch.where(diag, on, torch.where(same, off, torch.zeros_like(off)))


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own share summed over every rank's loss."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # (n, d) -> (world, n, d)
        import torch.distributed as dist

        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's copy of the loss depends on this rank's share
        return grad[ctx.rank]


def gather_segments(
    emb_v: Tensor, emb_a: Tensor, video: Tensor, step: Tensor, batch: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Concatenate the valid segments of every rank in rank order, as one batch of all ranks' videos.

    emb_v, emb_a: (N_r, d) this rank's embeddings; video, step: (N_r,) its segment indices; batch: its videos.
    Returns (N, d), (N, d), (N,), (N,) with video ids offset by the videos of the lower ranks, so the order equals
    that of one process holding the ranks' shares one after another. Embedding gradients reach their own rank.
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = torch.tensor([[emb_v.shape[0], batch]], dtype=torch.int64, device=emb_v.device)  # (1, 2)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s[0, 0]) for s in all_sizes]
    offsets = [sum(int(s[0, 1]) for s in all_sizes[:r]) for r in range(world)]
    pad = max(counts) - emb_v.shape[0]  # collectives need equal shapes: pad, gather, then cut each share back

    def padded(x: Tensor) -> Tensor:
        return F.pad(x, (0, 0, 0, pad)) if x.ndim == 2 else F.pad(x, (0, pad))

    ids = torch.stack([video + offsets[rank], step], dim=1)  # (N_r, 2)
    all_ids = [torch.zeros_like(padded(ids)) for _ in range(world)]
    dist.all_gather(all_ids, padded(ids).contiguous())
    all_v = _GatherWithGrad.apply(padded(emb_v))  # (world, n_max, d)
    all_a = _GatherWithGrad.apply(padded(emb_a))
    cut = [slice(0, n) for n in counts]
    ids = torch.cat([x[c] for x, c in zip(all_ids, cut, strict=True)])  # (N, 2)
    emb_v = torch.cat([x[c] for x, c in zip(all_v, cut, strict=True)])  # (N, d)
    emb_a = torch.cat([x[c] for x, c in zip(all_a, cut, strict=True)])  # (N, d)
    return emb_v, emb_a, ids[:, 0], ids[:, 1]


def lcf_targets(kind: str, video: Tensor, step: Tensor, sigma: Tensor | float, smoothing: float) -> Tensor:
    """The (N, N) target matrix of an LCF variant."""
    if kind in ("adaptive_gaussian", "fixed_gaussian"):
        return gaussian_targets(video, step, sigma)
    if kind == "softened":
        return softened_targets(video, step, smoothing)
    if kind == "diagonal":
        return diagonal_targets(video, step)
    raise ValueError(f"unknown LCF type {kind!r} (one of {', '.join(LCF_TYPES[:-1])})")


class LCFModulation(nn.Module):
    """Projections, temperature and sigma of LCF; `forward` returns what `lcf_loss` needs.

    sigma = floor + softplus(raw) so it stays above `sigma_floor`; `lcf_loss` gives it the KL gradient, so it follows
    the spread of the similarities instead of shrinking towards a one-hot target. The temperature is CLIP-style: a
    learnable log scale, capped at `max_scale`.
    """

    def __init__(
        self,
        dim: int,
        proj_dim: int,
        kind: str = "adaptive_gaussian",
        sigma_init: float = 1.0,
        sigma_floor: float = 0.25,
        smoothing: float = 0.1,
        tau_init: float = 0.07,
        max_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if kind not in LCF_TYPES or kind == "none":
            raise ValueError(f"unknown LCF type {kind!r} (one of {', '.join(LCF_TYPES[:-1])})")
        if not sigma_init > sigma_floor >= 0:
            raise ValueError(f"sigma_init ({sigma_init}) must exceed sigma_floor ({sigma_floor}) >= 0")
        self.kind = kind
        self.smoothing = smoothing
        self.sigma_floor = sigma_floor
        self.max_scale = max_scale
        self.gather_ranks = False  # set by the DDP trainer: build the loss inputs of the whole global batch
        self.proj_audio = nn.Linear(dim, proj_dim)
        self.proj_visual = nn.Linear(dim, proj_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau_init)))
        raw = math.log(math.expm1(sigma_init - sigma_floor))  # inverse softplus
        if kind == "adaptive_gaussian":
            self.sigma_raw = nn.Parameter(torch.tensor(raw))
        else:
            self.register_buffer("sigma_raw", torch.tensor(raw))

    @property
    def sigma(self) -> Tensor:
        return self.sigma_floor + F.softplus(self.sigma_raw)

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """audio, visual: (B, T, D) unimodal encoder outputs; mask (B, T) bool.

        Returns "visual", "audio" (N, d) normalised embeddings of the N valid segments, "scale" (1 / tau),
        "targets" (N, N) and "sigma" (for logging).
        """
        video, step = valid_segments(mask)
        emb_a = F.normalize(self.proj_audio(audio[mask]).float(), dim=-1)  # (N, d)
        emb_v = F.normalize(self.proj_visual(visual[mask]).float(), dim=-1)  # (N, d)
        if self.gather_ranks and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            emb_v, emb_a, video, step = gather_segments(emb_v, emb_a, video, step, mask.shape[0])
        sigma = self.sigma
        return {
            "visual": emb_v,
            "audio": emb_a,
            "scale": self.log_scale.exp().clamp(max=self.max_scale),
            "targets": lcf_targets(self.kind, video, step, sigma, self.smoothing),
            "sigma": sigma.detach(),
        }
