"""CCNet (AAAI 2025): cross-modal consistency collaboration + multi-temporal granularity collaboration.

    audio, visual (B, T, C) --masked conv embedding + sinusoid PE + self-attention--> (B, T, D) each
        --CMCC pyramid--> per level l: audio, visual (B, T_l, D)      (level 0 full rate, then stride 2)
            each level: cross-modal attention (queries from the other modality), times (1 + a temporal
            consistency gate computed by self-attention on the *other* modality's previous level)
        --concat (visual, audio)--> (B, T_l, 2D) --MTGC--> (B, T_l, 2D) --UnAV heads--> logits, class-aware offsets

MTGC, per level: coarse-to-fine (the next level, linearly stretched over time, queries this level), a class
expansion (2D -> K x E channels, plus a channel-attention branch whose linear layers run over time), temporal
self-attention per class + co-occurrence attention across classes per step, squeeze back to 2D; then
fine-to-coarse (the max-pooled finer output attends into the coarser one, accumulated level by level).

Fidelity to the reference (zzhhfut/CCNet-AAAI2025 `CCNet_base_TCG_Transformer`), which its released checkpoints
depend on:
- MTGC's linear layers over time have fixed sizes max_seq_len / 2^l, so every input is padded to exactly
  max_seq_len and longer inputs are refused (`SequenceTooLongError`), train and test alike.
- The temporal consistency gates of levels >= 1 let padded keys into the softmax (with zero values), as the
  reference does (it passes them the already-downsampled mask); `tcg_mask_padded_keys=True` masks them instead.
  Since inputs are always padded to max_seq_len, a video's output never depends on what it is batched with.
- Two reference behaviours that only show with batches > 1 are done the intended way: the per-class temporal
  branch uses each class row's own video mask (the reference repeats the batch masks in the wrong order), and the
  channel-attention features are reshaped rather than `view`ed (the reference's `view` fails for B > 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avdet.errors import AvdetError
from avdet.models.base import DetectorOutput
from avdet.models.blocks import (
    ConvStack,
    LayerNorm,
    MaskedAttention,
    MaskedConv1d,
    TransformerBlock,
    conv_stack,
    downsample_mask,
    sinusoid_encoding,
)
from avdet.models.heads import detection_heads
from avdet.models.pyramid import PyramidConfig, PyramidDetector


class SequenceTooLongError(AvdetError, ValueError):
    """The input has more feature steps than CCNet's fixed temporal size (max_seq_len)."""


@dataclass
class CCNetConfig(PyramidConfig):
    """CCNet's fields; the pyramid and head ones come from `PyramidConfig` (max_seq_len: every input is padded to
    it and longer ones are refused, 256 for ONE-PEACE; num_levels = backbone_arch[2] + 1; strides 1, 2, 4, ...)."""

    visual_dim: int = 2048
    audio_dim: int = 128
    num_classes: int = 100
    embed_dim: int = 512  # D of each modality stream (the reference's embd_dim)
    num_heads: int = 4  # heads of the backbone attention and its gates
    embed_convs: int = 2  # masked conv + LayerNorm + ReLU projections per modality (backbone_arch[0])
    embed_kernel: int = 3
    embed_with_ln: bool = True
    encoder_layers: int = 2  # unimodal self-attention blocks (backbone_arch[1])
    mtgc_dim: int = 128  # E: per-class channels inside MTGC (fixed at 128 in the reference)
    mtgc_heads: int = 1  # heads of MTGC's temporal, co-occurrence, channel and fine-to-coarse attention
    c2f_heads: int = 4  # heads of the coarse-to-fine attention
    channel_attention: bool = True  # MTGC's channel-attention expansion branch
    tcg_mask_padded_keys: bool = False  # True: gates of levels >= 1 exclude padded keys (reference: they do not)
    head_with_ln: bool = True
    class_aware: bool = True  # one (left, right) offset pair per class
    dropout: float = 0.0
    drop_path: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality != "audio_visual":
            raise ValueError("CCNet is cross-modal throughout (MTGC, gates): modality must be audio_visual")
        if self.embed_convs < 1 or self.encoder_layers < 0:
            raise ValueError("embed_convs must be >= 1, encoder_layers >= 0")
        for name, heads, dim in (
            ("num_heads", self.num_heads, self.embed_dim),
            ("c2f_heads", self.c2f_heads, 2 * self.embed_dim),
            ("mtgc_heads", self.mtgc_heads, self.mtgc_dim),
            ("mtgc_heads", self.mtgc_heads, 2 * self.embed_dim),
        ):
            if heads < 1 or dim % heads:
                raise ValueError(f"{name} {heads} does not divide the attention width {dim}")
        if self.channel_attention:
            bad = [n for n in self.level_lengths if n % self.mtgc_heads]
            if bad:
                raise ValueError(f"mtgc_heads {self.mtgc_heads} does not divide the level length {bad[0]}")
        if self.embed_kernel % 2 == 0:
            raise ValueError("embed_kernel must be odd")

    def padded_length(self, length: int) -> int:
        """Always max_seq_len: MTGC's linear layers over time need exactly that many steps."""
        if length > self.max_seq_len:
            raise SequenceTooLongError(_too_long_message(length, self.max_seq_len))
        return self.max_seq_len

    def check_length(self, length: int) -> None:
        """Exactly max_seq_len steps."""
        if self.padded_length(length) != length:  # beyond max_seq_len, padded_length raises
            raise ValueError(f"CCNet needs sequences padded to max_seq_len={self.max_seq_len} steps, got {length}")


def _too_long_message(length: int, limit: int) -> str:
    """One line naming the limit (the pipeline reports it per video)."""
    return (
        f"CCNet takes at most max_seq_len={limit} feature steps (its MTGC block has linear layers over time of "
        f"fixed size), got {length}: crop the video or use a model trained with a larger max_seq_len"
    )


# -- CMCC backbone -------------------------------------------------------------------------------------------------
def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    batch, length, dim = x.shape
    return x.reshape(batch, length, num_heads, dim // num_heads).transpose(1, 2)  # (B, h, T, d)


class ConsistencyGate(nn.Module):
    """Temporal consistency gate (the reference's TCG_block): masked conv-attention over one modality, then a
    1x1 masked conv to one channel and a sigmoid. forward(x (B, T, D), mask (B, T)) -> (B, T // stride, 1)."""

    def __init__(self, dim: int, num_heads: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.stride = stride
        self.norm_kv = LayerNorm(dim)
        self.norm_q = LayerNorm(dim)
        self.attn = MaskedAttention(dim, num_heads, stride=stride, dropout=dropout)
        self.gate = MaskedConv1d(dim, 1, 1, bias=True)

    def forward(self, x: Tensor, mask: Tensor, mask_keys: bool = True) -> Tensor:
        attn = self.attn
        out_mask = downsample_mask(mask, self.stride)  # (B, T')
        keys, queries, heads = self.norm_kv(x), self.norm_q(x), attn.num_heads
        q = _split_heads(attn.query(attn.query_norm(attn.query_conv(queries, mask))), heads)  # (B, h, T', d)
        k = _split_heads(attn.key(attn.key_norm(attn.key_conv(keys, mask))), heads)  # (B, h, T', d)
        v = _split_heads(attn.value(attn.value_norm(attn.value_conv(keys, mask))), heads)  # (B, h, T', d)
        att = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, h, T'q, T'k)
        if mask_keys:
            att = att.masked_fill(~out_mask[:, None, None, :], torch.finfo(att.dtype).min)
        # without key masking padded keys still take a share of the softmax; their values are zero either way
        out = att.softmax(dim=-1) @ (v * out_mask[:, None, :, None].to(v.dtype))  # (B, h, T', d)
        out = out.transpose(1, 2).flatten(2)  # (B, T', D)
        out = attn.proj_drop(attn.proj(out)) * out_mask[..., None].to(out.dtype)
        return torch.sigmoid(self.gate(out, out_mask))  # (B, T', 1); 0.5 on padded steps


class CMCCBackbone(nn.Module):
    """Unimodal embedding + self-attention, then the cross-modal consistency collaboration pyramid."""

    def __init__(self, cfg: CCNetConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.mask_gate_keys = cfg.tcg_mask_padded_keys

        def pyramid() -> nn.ModuleList:  # level 0 at full rate, every further level downsamples by 2
            return nn.ModuleList(
                TransformerBlock(
                    dim, cfg.num_heads, dropout=cfg.dropout, drop_path=cfg.drop_path, stride=1 if i == 0 else 2
                )
                for i in range(cfg.num_levels)
            )

        # UnAV's embedding, its convs and norms held apart (the reference's names); same registration order
        visual, audio = (
            ConvStack(in_dim, dim, cfg.embed_convs, cfg.embed_kernel, cfg.embed_with_ln)
            for in_dim in (cfg.visual_dim, cfg.audio_dim)
        )
        self.embed_visual, self.embed_audio = visual.convs, audio.convs
        self.embed_norm_visual, self.embed_norm_audio = visual.norms, audio.norms
        self.encoder_visual = nn.ModuleList(
            TransformerBlock(dim, cfg.num_heads, dropout=cfg.dropout, drop_path=cfg.drop_path)
            for _ in range(cfg.encoder_layers)
        )
        self.encoder_audio = nn.ModuleList(
            TransformerBlock(dim, cfg.num_heads, dropout=cfg.dropout, drop_path=cfg.drop_path)
            for _ in range(cfg.encoder_layers)
        )
        self.cross_visual, self.cross_audio = pyramid(), pyramid()
        self.gate_visual = nn.ModuleList(
            ConsistencyGate(dim, cfg.num_heads, 1 if i == 0 else 2, cfg.dropout) for i in range(cfg.num_levels)
        )
        self.gate_audio = nn.ModuleList(
            ConsistencyGate(dim, cfg.num_heads, 1 if i == 0 else 2, cfg.dropout) for i in range(cfg.num_levels)
        )
        pe = sinusoid_encoding(cfg.max_seq_len, dim) / math.sqrt(dim)  # (max_seq_len, D)
        self.register_buffer("pos_embed", pe, persistent=False)

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(B, T, Ca), (B, T, Cv), (B, T) -> per level visual (B, T_l, D), audio (B, T_l, D), masks (B, T_l)."""
        keep = mask[..., None].to(visual.dtype)  # (B, T, 1)
        v = conv_stack(visual * keep, mask, self.embed_visual, self.embed_norm_visual)
        a = conv_stack(audio * keep, mask, self.embed_audio, self.embed_norm_audio)
        pe = self.pos_embed[: mask.shape[1]].to(v.dtype) * keep  # (B, T, D)
        v, a = v + pe, a + pe
        for block_v, block_a in zip(self.encoder_visual, self.encoder_audio, strict=True):
            v, a = block_v(v, mask), block_a(a, mask)

        feats_v, feats_a, masks = [], [], []
        prev_v, prev_a, cur = v, a, mask  # level l reads level l - 1 (level 0 reads the encoders)
        for level in range(len(self.cross_visual)):
            mask_keys = level == 0 or self.mask_gate_keys
            # keys/values/residual from one modality, queries from the other
            x_v = self.cross_visual[level](prev_v, cur, query=prev_a)  # (B, T_l, D)
            x_a = self.cross_audio[level](prev_a, cur, query=prev_v)
            # each modality is gated by where the other one is temporally consistent
            gate_a = self.gate_audio[level](prev_a, cur, mask_keys)  # (B, T_l, 1)
            gate_v = self.gate_visual[level](prev_v, cur, mask_keys)
            prev_v, prev_a = x_v + x_v * gate_a, x_a + x_a * gate_v
            cur = downsample_mask(cur, 1 if level == 0 else 2)
            feats_v.append(prev_v)
            feats_a.append(prev_a)
            masks.append(cur)
        return feats_v, feats_a, masks


# -- MTGC ----------------------------------------------------------------------------------------------------------
class MTGCBlock(nn.Module):
    """Multi-temporal granularity collaboration over the fused pyramid (B, T_l, 2D), T_l = max_seq_len / 2^l."""

    def __init__(self, cfg: CCNetConfig) -> None:
        super().__init__()
        dim, hid, k = 2 * cfg.embed_dim, cfg.mtgc_dim, cfg.embed_kernel
        self.num_classes = cfg.num_classes
        self.lengths = cfg.level_lengths
        drop = {"dropout": cfg.dropout, "drop_path": cfg.drop_path}
        self.expand = MaskedConv1d(dim, hid * cfg.num_classes, k, bias=False)
        self.temporal = TransformerBlock(hid, cfg.mtgc_heads, hidden_dim=hid, **drop)
        self.cooccur = TransformerBlock(hid, cfg.mtgc_heads, hidden_dim=hid, **drop)
        self.squeeze = MaskedConv1d(hid * cfg.num_classes, dim, k, bias=False)
        self.c2f_attn = TransformerBlock(dim, cfg.c2f_heads, **drop)  # shared by every level
        self.c2f_linear = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_out, n_in in zip(self.lengths[:-1], self.lengths[1:], strict=True)
        )
        self.f2c_attn = nn.ModuleList(TransformerBlock(dim, cfg.mtgc_heads, **drop) for _ in self.lengths[1:])
        self.channel_press = self.channel_expand = self.channel_attn = None
        if cfg.channel_attention:
            self.channel_press = MaskedConv1d(dim, hid, k, bias=False)
            # the "sequence" of these blocks is the hid channels, their width the level's time steps
            self.channel_attn = nn.ModuleList(
                TransformerBlock(n, cfg.mtgc_heads, hidden_dim=hid, **drop) for n in self.lengths
            )
            self.channel_expand = nn.ModuleList(nn.Linear(n, n * cfg.num_classes) for n in self.lengths)
        for module in self.modules():  # the reference zeroes every linear/conv bias
            if isinstance(module, nn.Linear | nn.Conv1d) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _class_features(self, x: Tensor, mask: Tensor, level: int) -> Tensor:
        """(B, T, 2D) -> (B, K, E, T): per-class features (the reference's channel-first layout)."""
        batch, length, _ = x.shape
        k = self.num_classes
        feats = F.relu(self.expand(x, mask)).reshape(batch, length, k, -1).permute(0, 2, 3, 1)  # (B, K, E, T)
        if self.channel_attn is None:
            return feats
        press = F.relu(self.channel_press(x, mask)).transpose(1, 2)  # (B, E, T): sequence E, width T
        every = torch.ones(press.shape[:2], dtype=torch.bool, device=press.device)  # (B, E)
        press = self.channel_attn[level](press, every)  # (B, E, T)
        tem = F.relu(self.channel_expand[level](press.reshape(batch * press.shape[1], length)))  # (B*E, T*K)
        # the reference reinterprets this buffer as (B, K, E, T) without permuting: kept for its weights
        return feats + tem.reshape(batch, k, -1, length)

    def _collaborate(self, feats: Tensor, mask: Tensor) -> Tensor:
        """(B, K, E, T) -> (B, T, K*E): temporal attention within each class + co-occurrence across classes."""
        batch, k, hid, length = feats.shape
        temporal_in = feats.transpose(2, 3).reshape(batch * k, length, hid)  # (B*K, T, E)
        temporal = self.temporal(temporal_in, mask.repeat_interleave(k, dim=0))  # (B*K, T, E)
        temporal = temporal.reshape(batch, k, length, hid).transpose(1, 2)  # (B, T, K, E)
        cooccur_in = feats.permute(0, 3, 1, 2).reshape(batch * length, k, hid)  # (B*T, K, E): sequence = classes
        every = torch.ones(cooccur_in.shape[:2], dtype=torch.bool, device=feats.device)  # (B*T, K)
        cooccur = self.cooccur(cooccur_in, every).reshape(batch, length, k, hid)  # (B, T, K, E)
        cooccur = cooccur * mask[:, :, None, None].to(cooccur.dtype)  # padded steps: zero
        return (temporal + cooccur).flatten(2)  # (B, T, K*E), channel = class * E + e

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> list[Tensor]:
        fused = []
        for level, (x, mask) in enumerate(zip(feats, masks, strict=True)):
            if level + 1 < len(feats):  # coarse-to-fine: the next level, stretched over time, queries this one
                coarse = feats[level + 1].transpose(1, 2)  # (B, 2D, T_{l+1})
                coarse = F.relu(self.c2f_linear[level](coarse)).transpose(1, 2)  # (B, T_l, 2D)
                x = self.c2f_attn(x, mask, query=coarse)
            out = self._collaborate(self._class_features(x, mask, level), mask)
            fused.append(self.squeeze(out, mask))  # (B, T_l, 2D)
        # fine-to-coarse: the pooled finer result attends into each coarser level, accumulating upwards
        outs, up = [fused[0]], fused[0]
        for level, block in enumerate(self.f2c_attn, start=1):
            up = F.max_pool1d(up.transpose(1, 2), 3, 2, 1).transpose(1, 2)  # (B, T_l, 2D)
            up = fused[level] + block(up, masks[level], query=fused[level])
            outs.append(up)
        return outs


# -- the detector --------------------------------------------------------------------------------------------------
class CCNet(PyramidDetector):
    """The CCNet detector: tensors in, `DetectorOutput` out (no losses, no NMS, no seconds)."""

    def __init__(self, cfg: CCNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = CMCCBackbone(cfg)
        self.mtgc = MTGCBlock(cfg)
        self.cls_head, self.reg_head = detection_heads(2 * cfg.embed_dim, cfg, cfg.num_classes)

    def forward(self, audio: Tensor, visual: Tensor, mask: Tensor) -> DetectorOutput:
        """audio (B, T, Ca), visual (B, T, Cv), mask (B, T) bool with T = max_seq_len (`padded_length`)."""
        self.check_inputs(audio, visual, mask)
        mask = mask.bool()
        feats_v, feats_a, masks = self.backbone(audio, visual, mask)
        feats = [torch.cat([v, a], dim=-1) for v, a in zip(feats_v, feats_a, strict=True)]  # (B, T_l, 2D)
        feats = self.mtgc(feats, masks)
        offsets = self.reg_head(feats, masks)
        if not self.cfg.class_aware:  # one pair for every class: (B, T_l, 1, 2) -> (B, T_l, C, 2)
            offsets = [off.expand(-1, -1, self.cfg.num_classes, -1) for off in offsets]
        return DetectorOutput(
            cls_logits=self.cls_head(feats, masks),
            offsets=offsets,
            masks=masks,
            strides=self.cfg.strides,
        )
