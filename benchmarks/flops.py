"""Model size: parameter count and forward FLOPs (as `torch.utils.flop_counter` counts them).

FlopCounterMode counts matrix products and convolutions (2 FLOPs per multiply-add); element-wise operations
(norms, activations, softmax) are not counted, as in the usual fvcore/thop-style numbers papers report.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def synthetic_inputs(model: nn.Module, length: int, batch: int = 1, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random (audio, visual) features of the model's dims, (batch, length, C), and a full mask."""
    cfg = model.cfg
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, length, cfg.audio_dim, generator=gen).to(device)
    visual = torch.randn(batch, length, cfg.visual_dim, generator=gen).to(device)
    mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    return audio, visual, mask


def count_flops(model: nn.Module, length: int | Sequence[Tensor], batch: int = 1) -> int:
    """Forward FLOPs of one eval-mode pass.

    `length`: a sequence length T (random (batch, T, C) features of the model's dims with a full mask; T must be a
    length the model accepts, e.g. its max_seq_len) or the model's inputs themselves (audio, visual, mask).
    """
    inputs = synthetic_inputs(model, length, batch) if isinstance(length, int) else tuple(length)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
