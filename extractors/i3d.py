"""Inception-I3D (Carreira & Zisserman 2017) with the parameter names of the public `i3d_rgb.pt` /
`i3d_flow.pt` (the kinetics_i3d_pytorch port that v-iashin/video_features uses).

TensorFlow "SAME" padding is reproduced exactly: zeros, split floor/ceil around each dimension, and
max-pooling over zero padding with `ceil_mode`, as in the port the weights were converted for. `forward`
returns the (B, 1024) clip feature: Mixed_5c -> AvgPool3d((2, 7, 7), stride 1) -> mean over the remaining
time steps. Inputs are (B, C, T, 224, 224) in [-1, 1]; C = 3 (RGB) or 2 (flow x, y).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avdet.extractors import weights

FEATURE_DIM = 1024
NUM_CLASSES = 400
WEIGHTS_FILES = {"rgb": "i3d_rgb.pt", "flow": "i3d_flow.pt"}
IN_CHANNELS = {"rgb": 3, "flow": 2}

Triple = tuple[int, int, int]


def same_padding(kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """TF "SAME" padding as `F.pad` wants it: (w_left, w_right, h_top, h_bottom, t_front, t_back)."""
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride), strict=True):  # F.pad lists the last dim first
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3D(nn.Module):
    """Conv3d (+ BatchNorm3d) (+ ReLU) with TF "SAME" padding; submodules named `conv3d`, `batch3d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        activation: bool = True,
        use_bias: bool = False,
        use_bn: bool = True,
    ) -> None:
        super().__init__()
        pads = same_padding(kernel, stride)
        symmetric = len(set(pads)) == 1
        # Symmetric padding goes into the conv; asymmetric (stride 2, odd kernel) is an explicit zero pad.
        self.pad = None if symmetric else pads
        self.conv3d = nn.Conv3d(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=pads[0] if symmetric else 0,
            bias=use_bias,
        )
        self.batch3d = nn.BatchNorm3d(out_channels) if use_bn else None
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = self.conv3d(x)
        if self.batch3d is not None:
            x = self.batch3d(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pooling over TF "SAME" zero padding with ceil_mode, as the converted weights were checked with."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.pads = same_padding(kernel, stride)
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.pad(x, self.pads))


class Mixed(nn.Module):
    """Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1, concatenated on channels."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.branch_0 = Unit3D(in_channels, out[0])
        self.branch_1 = nn.Sequential(Unit3D(in_channels, out[1]), Unit3D(out[1], out[2], (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, out[3]), Unit3D(out[3], out[4], (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, out[5]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


class InceptionI3D(nn.Module):
    """Two-stream I3D backbone (one stream per instance). `forward` -> (B, 1024); `logits` -> (B, 400)."""

    def __init__(self, modality: str = "rgb", num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if modality not in IN_CHANNELS:
            raise ValueError(f"modality must be 'rgb' or 'flow', got {modality!r}")
        self.modality = modality
        self.conv3d_1a_7x7 = Unit3D(IN_CHANNELS[modality], 64, (7, 7, 7), (2, 2, 2))
        self.maxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(64, 64)
        self.conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.maxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = Mixed(192, (64, 96, 128, 16, 32, 32))
        self.mixed_3c = Mixed(256, (128, 128, 192, 32, 96, 64))
        self.maxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.mixed_4b = Mixed(480, (192, 96, 208, 16, 48, 64))
        self.mixed_4c = Mixed(512, (160, 112, 224, 24, 64, 64))
        self.mixed_4d = Mixed(512, (128, 128, 256, 24, 64, 64))
        self.mixed_4e = Mixed(512, (112, 144, 288, 32, 64, 64))
        self.mixed_4f = Mixed(528, (256, 160, 320, 32, 128, 128))
        self.maxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.mixed_5b = Mixed(832, (256, 160, 320, 32, 128, 128))
        self.mixed_5c = Mixed(832, (384, 192, 384, 48, 128, 128))
        self.avg_pool = nn.AvgPool3d((2, 7, 7), (1, 1, 1))
        # The Kinetics classifier: unused for features, kept so the public checkpoints load strictly.
        self.conv3d_0c_1x1 = Unit3D(FEATURE_DIM, num_classes, activation=False, use_bias=True, use_bn=False)

    def trunk(self, x: Tensor) -> Tensor:
        """(B, C, T, 224, 224) -> (B, 1024, T', 1, 1) after the average pool (T' = T/8 - 1)."""
        for layer in (
            self.conv3d_1a_7x7,
            self.maxPool3d_2a_3x3,
            self.conv3d_2b_1x1,
            self.conv3d_2c_3x3,
            self.maxPool3d_3a_3x3,
            self.mixed_3b,
            self.mixed_3c,
            self.maxPool3d_4a_3x3,
            self.mixed_4b,
            self.mixed_4c,
            self.mixed_4d,
            self.mixed_4e,
            self.mixed_4f,
            self.maxPool3d_5a_2x2,
            self.mixed_5b,
            self.mixed_5c,
        ):
            x = layer(x)
        return self.avg_pool(x)

    @staticmethod
    def _features(pooled: Tensor) -> Tensor:
        return pooled.flatten(3).mean(dim=(2, 3))  # (B, 1024, T', 1, 1) -> (B, 1024, T', 1) -> (B, 1024)

    def _logits(self, pooled: Tensor) -> Tensor:
        return self.conv3d_0c_1x1(pooled).flatten(3).mean(dim=(2, 3))  # (B, 400, T', 1, 1) -> (B, 400)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, 224, 224) -> (B, 1024)."""
        return self._features(self.trunk(x))

    def logits(self, x: Tensor) -> Tensor:
        """(B, C, T, 224, 224) -> (B, 400) Kinetics logits (pre-softmax)."""
        return self._logits(self.trunk(x))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both outputs from one pass of the trunk: (B, 1024), (B, 400)."""
        pooled = self.trunk(x)
        return self._features(pooled), self._logits(pooled)


def load_i3d(
    modality: str,
    weights_dir: str | None = None,
    *,
    random_weights: bool = False,
    expected_sha256: str | None = None,
) -> InceptionI3D:
    """One I3D stream in eval mode with its canonical weights (or seeded random ones)."""
    model = InceptionI3D(modality)
    if random_weights:
        return weights.seeded_model(model)
    name = WEIGHTS_FILES[modality]
    return weights.load_checked(model, weights.load_file(name, weights_dir, expected_sha256=expected_sha256), name)
