"""LoCo: locality-aware cross-modal correspondence learning for dense audio-visual event detection.

    audio, visual (B, T, C) --unimodal encoders--> (B, T, D) each    [+ LCF loss inputs while training]
        --LAC pyramid--> per level l: audio, visual (B, T_l, D)       (level 0 full rate, then stride 2)
        --concat + fusion transformer--> (B, T_l, 2D) --UnAV heads--> class logits, class-aware offsets

`modality: audio | visual` builds a unimodal LoCo on the same pipeline: one encoder, a pyramid of strided
self-attention blocks (LAC and LCF are cross-modal, so they are off), the fusion decoder and heads on the one
stream. Every ablation of the paper is a config field: `lcf` (target type or "none"), `attention` (global / fixed /
adaptive), `window_size`, `lac_heads`; the LCF weight lambda is `loss.lcf_weight`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avdet.models.base import DetectorOutput
from avdet.models.blocks import LayerNorm, MaskedConv1d, SelfAttentionPyramid, TransformerBlock, sinusoid_encoding
from avdet.models.fusion import StreamGate, apply_keep, dropout_keep
from avdet.models.heads import detection_heads
from avdet.models.lac import ATTENTION_TYPES, LACPyramid
from avdet.models.lcf import LCF_TYPES, LCFModulation
from avdet.models.pyramid import PyramidConfig, PyramidDetector, streams
from avdet.models.spatial import SPATIAL_REDUCTIONS, AudioGuidedVisualAttention, reduce_visual, visual_map

log = logging.getLogger(__name__)


@dataclass
class LoCoConfig(PyramidConfig):
    """LoCo's fields; the pyramid and head ones (max_seq_len, num_levels, head_*) come from `PyramidConfig`. Inputs
    pad to `padded_length`: LAC pads each level to whole windows itself, so the top stride alone decides."""

    visual_dim: int = 2048
    audio_dim: int = 128
    num_classes: int = 100
    embed_dim: int = 512  # D of each modality stream
    num_heads: int = 4  # heads of the unimodal and fusion transformers
    embed_convs: int = 2  # masked conv (k3) + LayerNorm + ReLU projections per modality
    embed_kernel: int = 3
    encoder_layers: int = 2  # unimodal self-attention blocks
    use_abs_pe: bool = True  # sinusoidal position encoding after the projection
    attention: Literal["adaptive", "fixed", "global"] = "adaptive"
    window_size: int = 8  # LAC base window W
    lac_heads: int = 4  # LAC heads h (each head adapts its own windows)
    lcf: Literal["adaptive_gaussian", "fixed_gaussian", "softened", "diagonal", "none"] = "adaptive_gaussian"
    lcf_dim: int | None = None  # LCF projection size; null = embed_dim // 2
    lcf_sigma_init: float = 1.0  # in segments
    lcf_sigma_floor: float = 0.25
    lcf_tau_init: float = 0.07
    lcf_label_smoothing: float = 0.1  # eps of the "softened" target
    decoder_layers: int = 1  # fusion transformer blocks on the concatenated streams
    decoder_shared: bool = True  # one fusion stack for every level (False: one per level)
    # Segment-level AVEL (AVE): "segment" keeps the classification head only, over num_classes + 1 labels
    # (background last), as the paper evaluates LoCo on AVE; "detection" is the dense UnAV-100 pair of heads.
    head: Literal["detection", "segment"] = "detection"
    # A spatial visual map per step (AVE's 7 x 7 x 512 VGG-19 pool5) is reduced to one vector before the encoder:
    # "mean" pools the locations, "audio_attention" weights them by audio-guided attention (AGVA, the AVE
    # baseline's module, hidden 512 / attention 49). Inputs without locations pass through unchanged.
    spatial: Literal["mean", "audio_attention"] = "mean"
    dropout: float = 0.0
    drop_path: float = 0.1
    # Safe fusion (models.fusion; docs/fusion.md), each off by default so the paper's LoCo is unchanged:
    # modality_dropout: chance per training clip of losing one whole stream (audio or visual, evenly);
    # stream_gate: a learned per-clip sigmoid gate on each stream's encoder output, initialised open;
    # lcf_stop_grad: keep LCF's gradient out of this stream's encoder ("audio" / "visual"; "none": both get it);
    # lcf_start_epoch: LCF's loss counts only from this epoch on (0: from the start), once the encoders learned.
    # stream_pyramid: each stream also gets the unimodal LoCo's self-attention pyramid, added to LAC's output level by
    # level. LAC alone gives a stream temporal context only through the other stream's keys, so with a useless
    # other stream it has none beyond its encoder (docs/fusion.md).
    modality_dropout: float = 0.0
    stream_gate: bool = False
    stream_pyramid: bool = False
    lcf_stop_grad: Literal["none", "audio", "visual"] = "none"
    lcf_start_epoch: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_TYPES)}, not {self.attention!r}")
        if self.lcf not in LCF_TYPES:
            raise ValueError(f"lcf must be one of {', '.join(LCF_TYPES)}, not {self.lcf!r}")
        if self.window_size < 1 or self.encoder_layers < 0 or self.decoder_layers < 0:
            raise ValueError("window_size must be >= 1, encoder/decoder_layers >= 0")
        for name, heads, dim in (
            ("num_heads", self.num_heads, self.embed_dim),
            ("lac_heads", self.lac_heads, self.embed_dim),
        ):
            if heads < 1 or dim % heads:
                raise ValueError(f"embed_dim {dim} must be a multiple of {name} {heads}")
        if self.lcf != "none" and not self.lcf_sigma_init > self.lcf_sigma_floor >= 0:
            raise ValueError("lcf_sigma_init must exceed lcf_sigma_floor, which must be >= 0")
        if not 0.0 <= self.lcf_label_smoothing < 1.0:
            raise ValueError("lcf_label_smoothing must lie in [0, 1)")
        if self.head not in ("detection", "segment"):
            raise ValueError(f"head must be 'detection' or 'segment', not {self.head!r}")
        if self.spatial not in SPATIAL_REDUCTIONS:
            raise ValueError(f"spatial must be one of {', '.join(SPATIAL_REDUCTIONS)}, not {self.spatial!r}")
        if self.embed_kernel % 2 == 0:
            raise ValueError("embed_kernel must be odd")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must lie in [0, 1), got {self.modality_dropout}")
        if self.lcf_stop_grad not in ("none", "audio", "visual"):
            raise ValueError(f"lcf_stop_grad must be none, audio or visual, not {self.lcf_stop_grad!r}")
        if self.lcf_start_epoch < 0:
            raise ValueError(f"lcf_start_epoch must be >= 0, got {self.lcf_start_epoch}")
        if self.modality != "audio_visual":
            if self.modality_dropout > 0 or self.stream_gate or self.stream_pyramid:
                raise ValueError(
                    f"a {self.modality}-only LoCo has one stream: modality_dropout, stream_gate and stream_pyramid "
                    "need two"
                )
            if self.lcf != "none":  # one switch is enough: a one-stream model has nothing for LCF to align
                log.info("a %s-only LoCo has no cross-modal parts: LCF (%s) is not used", self.modality, self.lcf)
                self.lcf = "none"
            if self.spatial == "audio_attention":
                raise ValueError("spatial: audio_attention reads the audio stream; a unimodal LoCo needs mean")


class UnimodalEncoder(nn.Module):
    """Masked conv projections + sinusoidal position encoding + self-attention blocks for one modality."""

    def __init__(self, in_dim: int, cfg: LoCoConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.max_seq_len = cfg.max_seq_len
        self.convs = nn.ModuleList(
            MaskedConv1d(in_dim if i == 0 else dim, dim, cfg.embed_kernel, bias=False) for i in range(cfg.embed_convs)
        )
        self.norms = nn.ModuleList(LayerNorm(dim) for _ in range(cfg.embed_convs))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, cfg.num_heads, dropout=cfg.dropout, drop_path=cfg.drop_path)
            for _ in range(cfg.encoder_layers)
        )
        pe = sinusoid_encoding(cfg.max_seq_len, dim) / math.sqrt(dim)  # (max_seq_len, D)
        self.register_buffer("pos_embed", pe if cfg.use_abs_pe else None, persistent=False)

    def position_encoding(self, length: int) -> Tensor:
        """(T, D): the table up to max_seq_len; beyond it (inference only) linearly stretched to T."""
        if length <= self.max_seq_len:
            return self.pos_embed[:length]
        if self.training:
            raise ValueError(f"training sequences must not exceed max_seq_len {self.max_seq_len}, got {length}")
        table = self.pos_embed.T[None]  # (1, D, max_seq_len)
        return F.interpolate(table, size=length, mode="linear", align_corners=False)[0].T  # (T, D)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, C_in), mask (B, T) -> (B, T, D), zero on padding."""
        keep = mask[..., None].to(x.dtype)
        x = x * keep  # whatever the caller padded with reads as zeros
        for conv, norm in zip(self.convs, self.norms, strict=True):
            # re-mask after the norm: LayerNorm turns zero padding into ReLU(bias), which the next k3 conv would
            # read at the last valid step only when padding follows (UnAV does not mask; LoCo need not copy it)
            x = F.relu(norm(conv(x, mask))) * keep
        if self.pos_embed is not None:
            x = x + self.position_encoding(x.shape[1]).to(x.dtype) * keep
        for block in self.blocks:
            x = block(x, mask)
        return x * keep


class FusionDecoder(nn.Module):
    """Self-attention over the concatenated streams of each level (shared across levels or per level); a unimodal
    model's one stream alone."""

    def __init__(self, cfg: LoCoConfig) -> None:
        super().__init__()
        dim = len(streams(cfg.modality)) * cfg.embed_dim
        stacks = 1 if cfg.decoder_shared else cfg.num_levels
        self.shared = cfg.decoder_shared
        self.stacks = nn.ModuleList(
            nn.ModuleList(
                TransformerBlock(dim, cfg.num_heads, dropout=cfg.dropout, drop_path=cfg.drop_path)
                for _ in range(cfg.decoder_layers)
            )
            for _ in range(stacks)
        )

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        out = []
        for level, (x, mask) in enumerate(zip(feats, masks, strict=True)):
            for block in self.stacks[0 if self.shared else level]:
                x = block(x, mask)
            out.append(x)
        return out


class LoCo(PyramidDetector):
    """The LoCo detector: tensors in, `DetectorOutput` out (no losses, no NMS, no seconds)."""

    def __init__(self, cfg: LoCoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        used = streams(cfg.modality)
        self.audio_encoder = UnimodalEncoder(cfg.audio_dim, cfg) if "audio" in used else None
        self.visual_encoder = UnimodalEncoder(cfg.visual_dim, cfg) if "visual" in used else None
        self.lcf = (
            None
            if cfg.lcf == "none"
            else LCFModulation(
                cfg.embed_dim,
                cfg.lcf_dim or cfg.embed_dim // 2,
                cfg.lcf,
                sigma_init=cfg.lcf_sigma_init,
                sigma_floor=cfg.lcf_sigma_floor,
                smoothing=cfg.lcf_label_smoothing,
                tau_init=cfg.lcf_tau_init,
            )
        )
        # LAC is cross-modal; a unimodal LoCo builds its pyramid from strided self-attention blocks instead
        self.pyramid = (
            LACPyramid(cfg.embed_dim, cfg.lac_heads, cfg.num_levels, cfg.window_size, cfg.attention, cfg.dropout)
            if len(used) == 2
            else SelfAttentionPyramid(cfg.embed_dim, cfg.num_heads, cfg.num_levels, cfg.dropout, cfg.drop_path)
        )
        self.decoder = FusionDecoder(cfg)
        two = len(used) == 2
        own = two and cfg.stream_pyramid  # the unimodal pyramid of each stream, beside LAC
        pyramid = lambda: SelfAttentionPyramid(cfg.embed_dim, cfg.num_heads, cfg.num_levels, cfg.dropout, cfg.drop_path)  # noqa: E731
        self.audio_pyramid = pyramid() if own else None
        self.visual_pyramid = pyramid() if own else None
        self.audio_gate = StreamGate(cfg.embed_dim) if two and cfg.stream_gate else None
        self.visual_gate = StreamGate(cfg.embed_dim) if two and cfg.stream_gate else None
        self.removed_stream: str | None = None  # set by models.fusion.without_stream (inference with one stream)
        self.lcf_on = cfg.lcf_start_epoch == 0  # set_epoch switches LCF's loss on at lcf_start_epoch
        segment = cfg.head == "segment"
        self.spatial = (
            AudioGuidedVisualAttention(cfg.visual_dim, cfg.audio_dim) if cfg.spatial == "audio_attention" else None
        )
        # the segment head (C + 1 labels, background last) has no regression head, so every parameter gets a
        # gradient (DDP needs that)
        num_labels = cfg.num_classes + 1 if segment else cfg.num_classes
        width = len(used) * cfg.embed_dim
        self.cls_head, self.reg_head = detection_heads(width, cfg, num_labels, regression=not segment)

    def _pooled_visual(self, audio: Tensor, visual: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """A spatial visual map reduced to (B, T, Cv) (and the attention map); pooled inputs pass through."""
        if visual.dim() == 3 and visual.shape[-1] == self.cfg.visual_dim:
            return visual, None
        vmap = visual_map(visual, self.cfg.visual_dim) * mask[:, :, None, None]  # (B, T, L, Cv)
        return reduce_visual(vmap, audio * mask[..., None], self.spatial)

    def correspondence_embeddings(self, audio: Tensor, visual: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-step audio and visual embeddings (B, T, d), L2-normalised, in LCF's common space: what cross-modal
        localization compares. Any T up to max_seq_len; the visual map must not be reduced with the audio's help
        (that would let the audio query see into the visual track)."""
        if self.lcf is None:
            raise ValueError("cross-modal embeddings need LCF (model.lcf is 'none')")
        visual, alpha = self._pooled_visual(audio, visual, mask)
        if alpha is not None:
            raise ValueError("cross-modal localization needs model.spatial: mean (audio-guided attention reads audio)")
        a = self.lcf.proj_audio(self.audio_encoder(audio, mask))
        v = self.lcf.proj_visual(self.visual_encoder(visual, mask))
        return F.normalize(a.float(), dim=-1), F.normalize(v.float(), dim=-1)

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch: LCF's loss counts from `lcf_start_epoch` on."""
        self.lcf_on = epoch >= self.cfg.lcf_start_epoch

    def _lcf_inputs(self, a: Tensor, v: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """LCF's loss inputs from the encoder outputs (B, T, D). The stopped stream's encoder gets no LCF gradient
        (its projection still learns); before `lcf_start_epoch` the loss weight is 0 (the graph stays whole, so
        DDP sees every parameter used)."""
        stop = self.cfg.lcf_stop_grad
        out = self.lcf(a.detach() if stop == "audio" else a, v.detach() if stop == "visual" else v, mask)
        out["weight"] = torch.tensor(1.0 if self.lcf_on else 0.0, device=a.device)
        return out

    def _fuse_streams(self, a: Tensor, v: Tensor, mask: Tensor, aux: dict) -> tuple[Tensor, Tensor]:
        """Encoder outputs (B, T, D) as the cross-modal pyramid gets them: gated (stream_gate), a stream dropped per
        clip while training (modality_dropout), or one removed at inference (`fusion.without_stream`)."""
        if self.audio_gate is not None:
            a, aux["audio_gate"] = self.audio_gate(a, mask)
            v, aux["visual_gate"] = self.visual_gate(v, mask)
        if self.training and self.cfg.modality_dropout > 0:
            keep_a, keep_v = dropout_keep(a.shape[0], self.cfg.modality_dropout)
            a, v = apply_keep(a, keep_a), apply_keep(v, keep_v)
        if self.removed_stream == "audio":
            a = torch.zeros_like(a)
        elif self.removed_stream == "visual":
            v = torch.zeros_like(v)
        return a, v

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> DetectorOutput:
        """audio (B, T, Ca), visual (B, T, Cv) or a spatial map (B, T, H, W, Cv) / (B, T, L * Cv), mask (B, T)
        bool with T a multiple of the top stride. The segment head returns no offsets.

        Up to max_seq_len, outputs on valid steps do not depend on how much padding follows, provided every level
        keeps at least one padded step (the shared blocks and heads keep UnAV's padding semantics).
        """
        self.check_inputs(audio, visual, mask)
        aux = {}
        if self.visual_encoder is not None:
            visual, alpha = self._pooled_visual(audio, visual, mask)
            if alpha is not None:
                aux["visual_attention"] = alpha  # (B, T, L)
        if self.cfg.modality == "audio_visual":
            a = self.audio_encoder(audio, mask)
            v = self.visual_encoder(visual, mask)
            if self.training and self.lcf is not None:
                aux["lcf"] = self._lcf_inputs(a, v, mask)
            a, v = self._fuse_streams(a, v, mask, aux)
            audios, visuals, masks = self.pyramid(a, v, mask)
            if self.audio_pyramid is not None:
                audios = [x + y for x, y in zip(audios, self.audio_pyramid(a, mask)[0], strict=True)]
                visuals = [x + y for x, y in zip(visuals, self.visual_pyramid(v, mask)[0], strict=True)]
            feats = [torch.cat([fv, fa], dim=-1) for fv, fa in zip(visuals, audios, strict=True)]  # (B, T_l, 2D)
        elif self.cfg.modality == "audio":
            feats, masks = self.pyramid(self.audio_encoder(audio, mask), mask)
        else:
            feats, masks = self.pyramid(self.visual_encoder(visual, mask), mask)
        feats = self.decoder(feats, masks)
        return DetectorOutput(
            cls_logits=self.cls_head(feats, masks),
            offsets=[] if self.reg_head is None else self.reg_head(feats, masks),
            masks=masks,
            strides=self.cfg.strides,
            aux=aux,
        )
