"""Spatial visual maps (AVE's VGG-19 pool5, 7 x 7 x 512 per segment) -> one visual vector per step.

Shared by the segment-task models (CCLN, LoCo-AVEL). Accepted layouts, channel-last: (B, T, H, W, C),
(B, T, L * C) flattened in that order (how the feature store keeps `vgg19_vggish` rows), or already pooled
(B, T, C).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SpatialReduce = Literal["mean", "audio_attention"]
SPATIAL_REDUCTIONS: tuple[str, ...] = ("mean", "audio_attention")


def visual_map(visual: Tensor, channels: int) -> Tensor:
    """Any accepted visual layout -> (B, T, L, C) with L locations (1 when already pooled)."""
    b, t = visual.shape[:2]
    if visual.dim() == 5 and visual.shape[-1] == channels:
        return visual.reshape(b, t, -1, channels)  # (B, T, H, W, C) -> (B, T, H*W, C)
    if visual.dim() == 3 and visual.shape[-1] % channels == 0:
        return visual.reshape(b, t, visual.shape[-1] // channels, channels)  # (B, T, L*C) -> (B, T, L, C)
    raise ValueError(
        f"visual {tuple(visual.shape)}: expected (B, T, H, W, {channels}), (B, T, L*{channels}) or (B, T, {channels})"
    )


class AudioGuidedVisualAttention(nn.Module):
    """AGVA (Tian et al., ECCV 2018, the AVE baseline): per segment an attention map over the H x W locations,
    computed from the visual map and the segment's audio feature; the output is the attention-weighted sum of the
    raw visual features."""

    def __init__(self, visual_dim: int, audio_dim: int, hidden: int = 512, att: int = 49) -> None:
        super().__init__()
        self.visual_proj = nn.Linear(visual_dim, hidden)
        self.audio_proj = nn.Linear(audio_dim, hidden)
        self.visual_att = nn.Linear(hidden, att, bias=False)
        self.audio_att = nn.Linear(hidden, att, bias=False)
        self.score = nn.Linear(att, 1, bias=False)

    def forward(self, visual: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """visual (N, L, Cv), audio (N, Ca) -> attended visual (N, Cv) and the attention map (N, L)."""
        v = F.relu(self.visual_proj(visual))  # (N, L, h)
        a = F.relu(self.audio_proj(audio))  # (N, h)
        content = torch.tanh(self.visual_att(v) + self.audio_att(a)[:, None])  # (N, L, att)
        alpha = torch.softmax(self.score(content).squeeze(-1), dim=-1)  # (N, L)
        return torch.bmm(alpha[:, None], visual).squeeze(1), alpha  # (N, 1, L) @ (N, L, Cv) -> (N, Cv)


def reduce_visual(
    vmap: Tensor, audio: Tensor, attention: AudioGuidedVisualAttention | None
) -> tuple[Tensor, Tensor | None]:
    """(B, T, L, Cv) map -> (B, T, Cv): audio-guided attention when a module is given and L > 1, else the mean
    over locations. Returns the attention map (B, T, L) too (None for the mean)."""
    b, t = vmap.shape[:2]
    if attention is None or vmap.shape[2] == 1:
        return vmap.mean(dim=2), None
    attended, alpha = attention(vmap.reshape(b * t, *vmap.shape[2:]), audio.reshape(b * t, -1))
    return attended.reshape(b, t, -1), alpha.reshape(b, t, -1)  # (B*T, .) -> (B, T, .)
