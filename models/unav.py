"""UnAV ("DAVEL", Geng et al. CVPR 2023): the dense audio-visual event localization baseline.

    visual, audio (B, T, C) --masked conv embeddings + sinusoidal PE--> (B, T, D) each
        --self-attention stem per modality--> --cross-modal attention (full rate)--> level 0
        --cross-modal attention with stride-2 downsampling, level by level--> levels 1..L-1
        --concat (visual, audio) per level (B, T_l, 2D)--> dependency block (temporal + co-occurrence attention over
          class-specific features) --> classification / class-aware regression heads

Reproduces ttgeng233/UnAV `LocPointTransformer` operation by operation (eval mode), including its inference path
for inputs longer than max_seq_len (padding to a multiple of the top stride, linearly stretched position encoding).
Reference weights load through `avdet.models.keymaps.convert_state_dict("unav", ...)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avdet.models.base import DetectorOutput
from avdet.models.blocks import ConvStack, MaskedConv1d, TransformerBlock, downsample_mask, sinusoid_encoding
from avdet.models.heads import detection_heads
from avdet.models.pyramid import PyramidConfig, PyramidDetector, streams


@dataclass
class UnAVConfig(PyramidConfig):
    """UnAV's fields; the pyramid and head ones (max_seq_len, num_levels = reference backbone_arch[2] + 1, head_*)
    come from `PyramidConfig`, and UnAV makes scale_factor, head_with_ln and class_aware configurable."""

    visual_dim: int = 2048
    audio_dim: int = 128
    num_classes: int = 100
    embed_dim: int = 512  # D of each modality stream
    num_heads: int = 4
    embed_convs: int = 2  # masked conv projections per modality (reference backbone_arch[0])
    embed_kernel: int = 3
    embed_with_ln: bool = True
    self_attn_layers: int = 2  # unimodal self-attention blocks (reference backbone_arch[1] - 1)
    scale_factor: int = 2  # downsampling between levels
    use_abs_pe: bool = True
    use_dependency: bool = True
    dependency_dim: int = 128  # per-class feature size H of the dependency block
    dependency_heads: int = 1
    class_aware: bool = True
    head_with_ln: bool = True
    dropout: float = 0.0
    drop_path: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embed_convs < 1 or self.self_attn_layers < 0:
            raise ValueError("embed_convs must be >= 1, self_attn_layers >= 0")
        if self.embed_dim % self.num_heads or self.dependency_dim % self.dependency_heads:
            raise ValueError("embed_dim must be a multiple of num_heads, dependency_dim of dependency_heads")
        if self.embed_kernel % 2 == 0:
            raise ValueError("embed_kernel must be odd")


def conv_embedding(in_dim: int, cfg: UnAVConfig) -> ConvStack:
    """embed_convs x [masked conv -> LayerNorm (or identity) -> ReLU] for one modality."""
    return ConvStack(in_dim, cfg.embed_dim, cfg.embed_convs, cfg.embed_kernel, cfg.embed_with_ln)


class DependencyBlock(nn.Module):
    """UnAV's event-dependency block: class-specific features, attention over time and over classes.

    (B, T, 2D) --masked conv + ReLU--> (B, T, K, H) (K classes, H = dependency_dim);
    temporal branch: self-attention over T for every (video, class);
    co-occurrence branch: self-attention over the K classes at every valid step;
    sum of both --masked conv--> (B, T, 2D).
    """

    def __init__(self, in_dim: int, cfg: UnAVConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        hidden = cfg.dependency_dim
        self.expand = MaskedConv1d(in_dim, hidden * cfg.num_classes, cfg.embed_kernel, bias=False)
        block = lambda: TransformerBlock(  # noqa: E731
            hidden, cfg.dependency_heads, drop_path=cfg.drop_path, hidden_dim=hidden
        )
        self.cooccur = block()
        self.temporal = block()
        self.squeeze = MaskedConv1d(hidden * cfg.num_classes, in_dim, cfg.embed_kernel, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, length, _ = x.shape
        k = self.num_classes
        feats = F.relu(self.expand(x, mask)).unflatten(-1, (k, -1))  # (B, T, K, H)
        hidden = feats.shape[-1]

        seq_t = feats.transpose(1, 2).reshape(batch * k, length, hidden)  # (B*K, T, H)
        # the reference pairs rows with masks through mask.repeat(K, 1, 1), which is right only for B = 1;
        # here every (video, class) row gets its own video's mask
        mask_t = mask.repeat_interleave(k, dim=0)  # (B*K, T)
        temporal = self.temporal(seq_t, mask_t).reshape(batch, k, length, hidden).transpose(1, 2)  # (B, T, K, H)

        seq_c = feats.reshape(batch * length, k, hidden)  # (B*T, K, H)
        mask_c = mask.reshape(batch * length, 1).expand(batch * length, k)  # a padded step masks all its classes
        cooccur = self.cooccur(seq_c, mask_c).reshape(batch, length, k, hidden)  # (B, T, K, H)

        return self.squeeze((temporal + cooccur).flatten(2), mask)  # (B, T, K*H) -> (B, T, 2D)


class UnAV(PyramidDetector):
    """The UnAV detector: tensors in, `DetectorOutput` out (no losses, no NMS, no seconds)."""

    def __init__(self, cfg: UnAVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        used = streams(cfg.modality)
        self.visual_embed = conv_embedding(cfg.visual_dim, cfg) if "visual" in used else None
        self.audio_embed = conv_embedding(cfg.audio_dim, cfg) if "audio" in used else None
        pe = sinusoid_encoding(cfg.max_seq_len, dim) / dim**0.5  # (max_seq_len, D)
        self.register_buffer("pos_embed", pe if cfg.use_abs_pe else None, persistent=False)

        def block(stride: int = 1) -> TransformerBlock:
            return TransformerBlock(dim, cfg.num_heads, dropout=cfg.dropout, drop_path=cfg.drop_path, stride=stride)

        def per_stream(name: str, make) -> nn.Module | None:
            return make() if name in used else None

        self.visual_stem = per_stream("visual", lambda: nn.ModuleList(block() for _ in range(cfg.self_attn_layers)))
        self.audio_stem = per_stream("audio", lambda: nn.ModuleList(block() for _ in range(cfg.self_attn_layers)))
        # cross-modal blocks: keys/values/residual from their own stream, queries from the other one (a unimodal
        # model takes its queries from its own stream: self-attention)
        self.visual_cross = per_stream("visual", block)
        self.audio_cross = per_stream("audio", block)
        levels = cfg.num_levels - 1
        self.visual_pyramid = per_stream(
            "visual", lambda: nn.ModuleList(block(cfg.scale_factor) for _ in range(levels))
        )
        self.audio_pyramid = per_stream("audio", lambda: nn.ModuleList(block(cfg.scale_factor) for _ in range(levels)))
        width = len(used) * dim
        self.dependency = DependencyBlock(width, cfg) if cfg.use_dependency else None
        self.cls_head, self.reg_head = detection_heads(width, cfg, cfg.num_classes)

    def position_encoding(self, length: int) -> Tensor:
        """(T, D): the table; at inference, from max_seq_len on, linearly resampled to T (reference behaviour)."""
        if self.training:
            if length > self.cfg.max_seq_len:
                raise ValueError(f"training sequences must not exceed max_seq_len {self.cfg.max_seq_len}, got {length}")
            return self.pos_embed[:length]
        if length < self.cfg.max_seq_len:
            return self.pos_embed[:length]
        table = self.pos_embed.T[None]  # (1, D, max_seq_len)
        return F.interpolate(table, size=length, mode="linear", align_corners=False)[0].T  # (T, D)

    def encode(self, audio: Tensor, visual: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The backbone: per level the fused features (B, T_l, 2D) (visual, audio concatenated; a unimodal model's
        one stream, (B, T_l, D)) and masks."""
        keep = mask[..., None].to(audio.dtype if self.audio_embed is not None else visual.dtype)
        pe = None
        if self.pos_embed is not None:
            pe = self.position_encoding(mask.shape[1]).to(keep.dtype) * keep  # (B, T, D)
        inputs = {"visual": visual, "audio": audio}
        stems = {}
        for name in streams(self.cfg.modality):
            x = getattr(self, f"{name}_embed")(inputs[name] * keep, mask)  # padded rows read as zeros, as the reference
            x = x if pe is None else x + pe
            for blk in getattr(self, f"{name}_stem"):
                x = blk(x, mask)
            stems[name] = x
        other = {"visual": "audio", "audio": "visual"}
        levels: dict[str, list[Tensor]] = {}
        for name, x in stems.items():
            query = stems.get(other[name])  # None (self-attention) for a unimodal model
            levels[name] = [getattr(self, f"{name}_cross")(x, mask, query=query)]
        masks = [mask]
        for level in range(self.cfg.num_levels - 1):
            m = masks[-1]
            previous = {name: feats[-1] for name, feats in levels.items()}
            for name, feats in levels.items():
                feats.append(
                    getattr(self, f"{name}_pyramid")[level](previous[name], m, query=previous.get(other[name]))
                )
            masks.append(downsample_mask(m, self.cfg.scale_factor))
        feats = [
            torch.cat(parts, dim=-1) for parts in zip(*levels.values(), strict=True)
        ]  # (B, T_l, 2D) or (B, T_l, D)
        if self.dependency is not None:
            feats = [self.dependency(x, m) for x, m in zip(feats, masks, strict=True)]
        return feats, masks

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> DetectorOutput:
        """audio (B, T, Ca), visual (B, T, Cv), mask (B, T) bool with T a multiple of the top stride."""
        self.check_inputs(audio, visual, mask)
        used = streams(self.cfg.modality)
        if ("visual" in used and visual.shape[-1] != self.cfg.visual_dim) or (
            "audio" in used and audio.shape[-1] != self.cfg.audio_dim
        ):
            raise ValueError(
                f"features of dims (visual {visual.shape[-1]}, audio {audio.shape[-1]}) but the model expects "
                f"(visual {self.cfg.visual_dim}, audio {self.cfg.audio_dim})"
            )
        feats, masks = self.encode(audio, visual, mask.bool())
        return DetectorOutput(
            cls_logits=self.cls_head(feats, masks),
            offsets=self.reg_head(feats, masks),
            masks=masks,
            strides=self.cfg.strides,
        )
