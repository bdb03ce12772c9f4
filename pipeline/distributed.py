"""torchrun / DistributedDataParallel plumbing: this process's place in the job and the collectives the loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from avdet.models.losses import PositiveNormaliser
from avdet.pipeline.threads import resolve_device_name


@dataclass
class DistributedContext:
    """This process's place in a torchrun job (world 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
        return value

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of a picklable object, on every rank."""
        if self.world <= 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device_name: str) -> tuple[DistributedContext, torch.device]:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world, local_rank), device


class SyncedNormaliser(PositiveNormaliser):
    """The positive-count EMA fed with the count summed over all ranks, so every rank keeps the same value."""

    def __init__(self, dist: DistributedContext, init: float, momentum: float) -> None:
        super().__init__(init, momentum)
        self._dist = dist

    def update(self, num_pos):  # type: ignore[override]
        total = self._dist.sum(torch.as_tensor(num_pos, dtype=torch.float64))
        return super().update(float(total))


def enable_lcf_gather(model: nn.Module) -> int:
    """Make LoCo's LCF use the whole global batch under DDP (every rank's segments as negatives)."""
    from avdet.models.lcf import LCFModulation

    found = [m for m in model.modules() if isinstance(m, LCFModulation)]
    for m in found:
        m.gather_ranks = True
    return len(found)


def count_replicated_once(losses: dict[str, torch.Tensor], lcf_weight: float, world: int) -> dict[str, torch.Tensor]:
    """Under DDP the gathered LCF term is the whole batch's loss on every rank, unlike the other terms (sums over the
    rank's share): divide it by the world size, so the sum over ranks (what the scaled backward and DDP's gradient
    average amount to) counts it once and the gradient equals the single-process one."""
    if world <= 1 or "lcf" not in losses:
        return losses
    share = losses["lcf"] / world
    total = losses["total"] - lcf_weight * (losses["lcf"] - share)
    return {**losses, "lcf": share, "total": total}


def resolve_device(name: str) -> torch.device:
    """train.device as a torch device (`threads.resolve_device_name`: auto resolved, a missing GPU one line)."""
    return torch.device(resolve_device_name(name, "train.device"))
