"""`vgg19_vggish`: the AVE feature recipe (Tian et al. 2018), one row per 1 s segment.

Visual rows: VGG-19 (ImageNet) pool5 maps (7 x 7 x 512) of 16 uniformly sampled frames of each segment (frames
decoded at 16 fps, stretched to 224 x 224, ImageNet mean/std normalisation), averaged over the 16 frames and
flattened channel-last, (7, 7, 512) -> 25088, the order of the released `visual_feature.h5` rows. Audio rows: one
VGGish embedding (0.96 s example at the start of each segment, `extractors.vggish`).

Weights: torchvision's VGG-19 ImageNet checkpoint (`vgg19-dcbb9e9d.pth`, IMAGENET1K_V1) in the weights directory;
only its `features.*` tensors are used. The released AVE features came from the Keras VGG-19 with Caffe-style
preprocessing, so features computed here are close to, not bit-identical with, the released ones: train and test
a model on features from one source.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avdet.errors import DataError
from avdet.extractors import vggish, weights
from avdet.extractors.base import ExtractorSet, Features, MediaRequest, VisualInput, grid_times, rechunk

log = logging.getLogger(__name__)

VERSION = 1
SEGMENT_S = 1.0
FRAMES_PER_SEGMENT = 16
FPS = FRAMES_PER_SEGMENT / SEGMENT_S  # decode at 16 fps: 16 uniformly spaced frames per segment
SIZE = 224
MAP_HW = 7
CHANNELS = 512
DIM = MAP_HW * MAP_HW * CHANNELS  # 25088
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
# VGG-19 ("E") convolution widths; "M" = 2x2 max-pool. Module indices then match torchvision's `features.N`.
VGG19_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip

FrameNet = Callable[[Tensor], Tensor]  # (N, 3, 224, 224) normalised -> (N, 512, 7, 7)


class VGG19Features(nn.Module):
    """VGG-19's convolutional part up to and including pool5 (torchvision's `features`)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def load_vgg19(
    weights_dir: str | None = None, *, random_weights: bool = False, expected_sha256: str | None = None
) -> VGG19Features:
    """VGG-19 features in eval mode with the torchvision ImageNet weights (or seeded random ones for tests)."""
    model = VGG19Features()
    if random_weights:
        return weights.seeded_model(model)
    state = weights.load_file(WEIGHTS_FILE, weights_dir, expected_sha256=expected_sha256)
    state = {k: v for k, v in state.items() if k.startswith("features.")}  # the classifier is not used
    return weights.load_checked(model, state, WEIGHTS_FILE)


def segment_rows(duration: float) -> int:
    """1 s segments of a clip: the duration rounded to whole seconds (AVE's 10 s clips decode to 9.98-10.02 s),
    at least one."""
    return max(1, int(math.floor(duration / SEGMENT_S + 0.5)))


def imagenet_normalise(frames: Tensor) -> Tensor:
    """(n, 3, H, W) in 0..255 -> ImageNet-normalised floats."""
    mean = frames.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = frames.new_tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    return (frames - mean) / std


@dataclass
class VGG19Segments:
    """The visual `Extractor`: per segment the mean pool5 map of its frames, flattened channel-last."""

    net: FrameNet
    device: str = "cpu"
    batch_size: int = 32  # frames per VGG-19 call
    num_rows: Callable[[float], int] = segment_rows
    frames_per_segment: int = FRAMES_PER_SEGMENT
    name: str = "vgg19_pool5"
    modality: str = "visual"
    dim: int = DIM
    window_s: float = SEGMENT_S
    step_s: float = SEGMENT_S

    def _prepare(self, frames: np.ndarray) -> Tensor:
        """uint8 (n, H, W, 3) -> normalised (n, 3, 224, 224) on device (stretched if the decoder did not)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()  # (n, H, W, 3) -> (n, 3, H, W)
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
        return imagenet_normalise(x)

    def __call__(self, decoded: VisualInput) -> Features:
        rows = int(self.num_rows(decoded.duration))
        needed = rows * self.frames_per_segment
        sums = torch.zeros(rows, MAP_HW, MAP_HW, CHANNELS, dtype=torch.float64)
        counts = torch.zeros(rows, dtype=torch.int64)
        seen = 0
        last: Tensor | None = None  # pool5 map of the last frame, (7, 7, 512)
        for piece in rechunk(decoded.chunks, self.batch_size):
            if seen >= needed:
                continue  # frames past the last segment: consumed, unused
            piece = piece[: needed - seen]
            with torch.inference_mode():
                maps = self.net(self._prepare(piece)).float().cpu()  # (n, 512, 7, 7)
            if maps.shape[1:] != (CHANNELS, MAP_HW, MAP_HW):
                raise ValueError(f"frame network returned {tuple(maps.shape[1:])}, expected (512, 7, 7)")
            maps = maps.permute(0, 2, 3, 1)  # (n, 512, 7, 7) -> (n, 7, 7, 512), the release's layout
            segment = (seen + torch.arange(maps.shape[0])) // self.frames_per_segment
            sums.index_add_(0, segment, maps.double())
            counts += torch.bincount(segment, minlength=rows)
            seen += maps.shape[0]
            last = maps[-1]
        if last is None:
            raise DataError("the visual input holds no frames")
        if seen < needed:
            # Short or truncated video: the missing frames count as repeats of the last one.
            log.debug("padding %d missing frames with the last frame", needed - seen)
            missing = self.frames_per_segment - counts
            sums += missing.view(-1, 1, 1, 1).double() * last.double()
            counts += missing
        values = (sums / counts.view(-1, 1, 1, 1)).reshape(rows, DIM)  # (T, 7, 7, 512) -> (T, 25088)
        return Features(values.numpy().astype(np.float32), grid_times(rows, self.window_s, self.step_s))


def build(
    *,
    weights_dir: str | None = None,
    random_weights: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    vggish_postprocess: bool = False,
) -> ExtractorSet:
    """The `vgg19_vggish` set; weights from `weights_dir` (see `extractors.weights`) unless `random_weights`."""
    vgg19 = load_vgg19(weights_dir, random_weights=random_weights).to(device)
    audio_net = vggish.load_vggish(weights_dir, random_weights=random_weights)
    visual = VGG19Segments(vgg19, device=device, batch_size=batch_size)
    audio = vggish.VGGishAudio(
        audio_net, hop_s=SEGMENT_S, postprocess=vggish_postprocess, device=device, num_rows=segment_rows
    )
    media = MediaRequest(fps=FPS, size=(SIZE, SIZE), resize="stretch")
    spec = {
        "name": "vgg19_vggish",
        "version": VERSION,
        "window_s": SEGMENT_S,
        "step_s": SEGMENT_S,
        "visual_dim": visual.dim,
        "audio_dim": audio.dim,
        "visual_map": [MAP_HW, MAP_HW, CHANNELS],
        "fps": FPS,
        "frames_per_segment": FRAMES_PER_SEGMENT,
        "frame_size": list(media.size),
        "resize": media.resize,
        "normalisation": "imagenet",
        "sample_rate": media.sample_rate,
        "vggish_hop_s": SEGMENT_S,
        "vggish_postprocess": vggish_postprocess,
        "weights": sorted([WEIGHTS_FILE, vggish.WEIGHTS_FILE, vggish.PCA_FILE]),
        "random_weights": random_weights,
    }
    return ExtractorSet("vgg19_vggish", visual, audio, media, spec)
