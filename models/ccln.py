"""CCLN: Cross-modal Contrastive Learning Network for segment-level AVEL (Sun et al., TMM 2025; seed
`ccln_paper.txt`). The authors' code is not public: this follows the paper's equations; the details it leaves
open are `CCLNConfig` fields marked "choice".

Backbone (AV branch):
- Fusion stage: audio-guided visual attention over the 7x7 map of each segment (AGVA, Tian et al. 2018), then per
  modality a Bi-LSTM and a self-attention block -> v^F, a^F (B, T, d). Eq. (1)-(3).
- Interaction stage (SBI): V1, V2 = lin(v^F), A1, A2 = lin(a^F); h^va = softmax(V2 A1^T / sqrt(d)), h^av its
  transpose; each gated by tau (entries below tau dropped, rows renormalised); cross residuals
  v^I = v^F + h^va(tau) A2, a^I = a^F + h^av(tau) V1. Eq. (4)-(10).
- Integration stage: v^Z = Ln(Fl(Sa(v^I))), a^Z likewise; P^out = (v^Z + a^Z) / 2; P^o = lin(P^out) (C + 1
  labels per segment), P^f = lin(P^out) (contrastive fusion prediction); FEE: P^fe = max_t lin(P^out) (C),
  v^e = sigmoid(mean(topK_t(lin(v^I)))), a^e likewise, P^e = P^fe * v^e * a^e. Eq. (11)-(20).
- Weak setting: Theta = sigmoid(relu(lin(P_w))) per segment and the video-level prediction is the Theta-weighted
  mean of the segment predictions. Eq. (23)-(24).
Contrastive branch (AV + V, Table II): P^v = lin(Ln(Fl(Sa(v^F)))); WCCL contrasts P^v with P^f (models.segment).

Inputs are channel-last: audio (B, T, 128), visual (B, T, 7, 7, 512), (B, T, 49 * 512) flattened in that order,
or already pooled (B, T, 512); mask (B, T) bool, True = valid, valid steps first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from avdet.models.base import DetectorOutput
from avdet.models.spatial import AudioGuidedVisualAttention, reduce_visual, visual_map

BRANCHES = ("visual", "audio")


@dataclass
class CCLNConfig:
    num_classes: int = 28  # C foreground classes; the model predicts C + 1 (background last)
    audio_dim: int = 128  # VGGish
    visual_dim: int = 512  # VGG-19 pool5 channels
    d_model: int = 256  # d; choice (the paper does not give it; CMBS / PSP use 256)
    agva_hidden: int = 512  # choice: AGVA's hidden size (the AVE baseline's value)
    agva_att: int = 49  # choice: AGVA's attention projection (the AVE baseline's value)
    num_heads: int = 4  # choice: heads of every self-attention block
    ffn_dim: int = 512  # choice: hidden size of the position-wise feed-forward layers
    dropout: float = 0.1  # choice: "dropout on all linear mappings", rate not given
    tau: float = 0.05  # SBI gate threshold (paper: 0.05 full, 0.06 weak)
    top_k: int = 3  # choice: K of FEE's TopK over the segments (not given)
    setting: Literal["full", "weak"] = "full"
    branches: tuple[str, ...] = ("visual",)  # contrastive branches next to AV: "AV+V" (the paper's choice)
    contrast_dim: int = 1  # P^f, P^v per segment: 1 as in the paper; a video's embedding is its (T * dim) profile
    use_agva: bool = True  # ablation switches (Table I)
    use_sbi: bool = True
    use_fee: bool = True

    def __post_init__(self) -> None:
        if self.setting not in ("full", "weak"):
            raise ValueError(f"setting must be 'full' or 'weak', not {self.setting!r}")
        if self.d_model % 2 or self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} must be even and a multiple of num_heads {self.num_heads}")
        if not 0.0 <= self.tau < 1.0:
            raise ValueError(f"tau must lie in [0, 1), not {self.tau}")
        if self.top_k < 1 or self.contrast_dim < 1 or self.num_classes < 1:
            raise ValueError("top_k, contrast_dim and num_classes must be >= 1")
        bad = [b for b in self.branches if b not in BRANCHES]
        if bad:
            raise ValueError(f"branches must be among {', '.join(BRANCHES)}, not {bad}")
        if len(set(self.branches)) != len(self.branches):
            raise ValueError(f"duplicate branch in {self.branches}")


def _attention_padding(mask: Tensor) -> Tensor:
    """key_padding_mask for nn.MultiheadAttention (True = ignore); a video with no valid step keeps step 0 so the
    softmax has something to normalise (its outputs are zeroed afterwards anyway)."""
    pad = ~mask
    empty = mask.sum(dim=1) == 0
    if empty.any():
        pad = pad.clone()
        pad[empty, 0] = False
    return pad


class SelfAttention(nn.Module):
    """Sa(.): multi-head self-attention over the valid steps with a residual and LayerNorm (post-norm)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out, _ = self.attn(x, x, x, key_padding_mask=_attention_padding(mask), need_weights=False)
        return self.norm(x + self.drop(out)) * mask[..., None]


class FeedForward(nn.Module):
    """Fl(.) + Ln(.): position-wise feed-forward layer with a residual, then LayerNorm."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.norm(x + self.drop(self.net(x))) * mask[..., None]


class BiLSTM(nn.Module):
    """Bl(.): a one-layer bidirectional LSTM run on the valid prefix of each sequence only (packed), so padding
    never leaks into the backward direction. Output size = 2 * hidden."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(dim=1)
        if not torch.equal(mask, torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]):
            raise ValueError("CCLN needs masks whose valid steps come first (right padding)")
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, 2 * hidden)
        return out * mask[..., None]


def gate_rows(h: Tensor, tau: float, eps: float = 1e-8) -> Tensor:
    """SBI's h(tau): drop correlation entries below tau, renormalise each row to sum 1 (an all-dropped row is 0).

    The threshold keeps only the strongly correlated audio-visual pairs; unlike PSP's hard one-hot selection the
    surviving weights stay soft.
    """
    kept = h * (h >= tau).to(h.dtype)
    return kept / kept.sum(dim=-1, keepdim=True).clamp(min=eps)


class SBI(nn.Module):
    """Self-constrained Bi-modal Interaction, Eq. (4)-(10): dual input, dual output, same size."""

    def __init__(self, dim: int, tau: float, dropout: float) -> None:
        super().__init__()
        self.v1, self.v2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.a1, self.a2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.tau = tau
        self.drop = nn.Dropout(dropout)

    def forward(self, v: Tensor, a: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """v^F, a^F (B, T, d) -> v^I, a^I (B, T, d) and the correlation h^va (B, T, T)."""
        V1, V2, A1, A2 = self.v1(v), self.v2(v), self.a1(a), self.a2(a)
        scores = V2 @ A1.transpose(1, 2) / math.sqrt(v.shape[-1])  # (B, Tv, Ta)
        scores = scores.masked_fill(_attention_padding(mask)[:, None, :], float("-inf"))
        h_va = torch.softmax(scores, dim=-1) * mask[:, :, None]  # rows of padded visual steps -> 0
        h_av = h_va.transpose(1, 2)  # (B, Ta, Tv)
        a_msg = gate_rows(h_va, self.tau) @ A2  # audio information for each visual step
        v_msg = gate_rows(h_av, self.tau) @ V1  # visual information for each audio step
        v_i = (v + self.drop(a_msg)) * mask[..., None]
        a_i = (a + self.drop(v_msg)) * mask[..., None]
        return v_i, a_i, h_va


def masked_topk_mean(x: Tensor, mask: Tensor, k: int) -> Tensor:
    """(B, T, C) -> (B, C): per channel the mean of the k largest values over valid steps (k capped by the number
    of valid steps of each video)."""
    k = min(k, x.shape[1])
    top = x.masked_fill(~mask[..., None], float("-inf")).topk(k, dim=1).values  # (B, k, C)
    k_eff = mask.sum(dim=1).clamp(min=1, max=k)  # (B,)
    keep = torch.arange(k, device=x.device)[None, :] < k_eff[:, None]  # (B, k)
    top = top.masked_fill(~keep[..., None], 0.0)
    return top.sum(dim=1) / k_eff[:, None].to(x.dtype)


class Integration(nn.Module):
    """Ln(Fl(Sa(x))), Eq. (11)-(12) and (25)-(26)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.sa = SelfAttention(dim, heads, dropout)
        self.ff = FeedForward(dim, hidden, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.ff(self.sa(x, mask), mask)


class CCLN(nn.Module):
    def __init__(self, cfg: CCLNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, c = cfg.d_model, cfg.num_classes
        # Switched-off modules are not built, so every parameter gets a gradient (DDP needs that).
        self.agva = (
            AudioGuidedVisualAttention(cfg.visual_dim, cfg.audio_dim, cfg.agva_hidden, cfg.agva_att)
            if cfg.use_agva
            else None
        )
        # Fusion stage: Bi-LSTM (hidden d/2 per direction, so its output is already d) + self-attention.
        self.visual_lstm = BiLSTM(cfg.visual_dim, d // 2)
        self.audio_lstm = BiLSTM(cfg.audio_dim, d // 2)
        self.visual_sa = SelfAttention(d, cfg.num_heads, cfg.dropout)
        self.audio_sa = SelfAttention(d, cfg.num_heads, cfg.dropout)
        self.sbi = SBI(d, cfg.tau, cfg.dropout) if cfg.use_sbi else None
        self.visual_int = Integration(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout)
        self.audio_int = Integration(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d, c + 1)  # W5 (W_f5 or W_w5 by setting)
        self.fusion_contrast = nn.Linear(d, cfg.contrast_dim)  # W6
        self.fee_head = nn.Linear(d, c) if cfg.use_fee else None  # W7
        self.fee_visual = nn.Linear(d, c) if cfg.use_fee else None
        self.fee_audio = nn.Linear(d, c) if cfg.use_fee else None
        self.branch = nn.ModuleDict(
            {name: Integration(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout) for name in cfg.branches}
        )
        self.branch_out = nn.ModuleDict({name: nn.Linear(d, cfg.contrast_dim) for name in cfg.branches})
        self.weak_weight = nn.Linear(c + 1, 1) if cfg.setting == "weak" else None  # W_b

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> DetectorOutput:
        cfg = self.cfg
        b, t = mask.shape
        vmap = visual_map(visual, cfg.visual_dim)
        if vmap.shape[-1] != cfg.visual_dim or audio.shape != (b, t, cfg.audio_dim) or vmap.shape[:2] != (b, t):
            raise ValueError(f"audio {tuple(audio.shape)}, visual {tuple(visual.shape)}, mask {tuple(mask.shape)}")
        vmap = vmap * mask[:, :, None, None]
        audio = audio * mask[..., None]
        aux: dict = {}

        # Fusion stage.
        v_a, alpha = reduce_visual(vmap, audio, self.agva)  # (B, T, Cv)
        if alpha is not None:
            aux["visual_attention"] = alpha  # (B, T, L)
        v_f = self.visual_sa(self.visual_lstm(v_a, mask), mask)
        a_f = self.audio_sa(self.audio_lstm(audio, mask), mask)

        # Interaction stage.
        if self.sbi is not None:
            v_i, a_i, h_va = self.sbi(v_f, a_f, mask)
            aux["av_correlation"] = h_va
        else:
            v_i, a_i = v_f, a_f

        # Integration stage.
        v_z = self.visual_int(v_i, mask)
        a_z = self.audio_int(a_i, mask)
        p_out = self.drop(0.5 * (v_z + a_z))  # (B, T, d)
        logits = self.classifier(p_out)  # (B, T, C + 1)

        if self.fee_head is not None and self.fee_visual is not None and self.fee_audio is not None:
            fee = self.fee_head(p_out).masked_fill(~mask[..., None], float("-inf")).amax(dim=1)  # (B, C)
            fee = torch.where(torch.isfinite(fee), fee, torch.zeros_like(fee))
            v_e = torch.sigmoid(masked_topk_mean(self.fee_visual(v_i), mask, cfg.top_k))  # (B, C)
            a_e = torch.sigmoid(masked_topk_mean(self.fee_audio(a_i), mask, cfg.top_k))
            aux["fee"] = fee * v_e * a_e

        if self.weak_weight is not None:
            theta = torch.sigmoid(F.relu(self.weak_weight(logits))) * mask[..., None]  # (B, T, 1)
            aux["video_logits"] = (theta * logits).sum(dim=1) / theta.sum(dim=1).clamp(min=1e-6)  # (B, C + 1)

        # Contrastive views: the fusion prediction P^f and each branch's P^v / P^a, one (T * dim) profile a video.
        views = [self.fusion_contrast(p_out) * mask[..., None]]
        sources = {"visual": v_f, "audio": a_f}
        for name in cfg.branches:
            views.append(self.branch_out[name](self.branch[name](sources[name], mask)) * mask[..., None])
        aux["contrast"] = [v.reshape(b, -1) for v in views]  # (B, T, dim) -> (B, T * dim)

        return DetectorOutput(cls_logits=[logits], offsets=[], masks=[mask], strides=[1], aux=aux)
