"""`i3d_vggish`: the UnAV-100 feature recipe (v-iashin/video_features I3D + RAFT + VGGish).

Visual rows = concat(I3D-RGB 1024, I3D-flow 1024) over windows of 24 frames every 8 frames at 25 fps; audio
rows = VGGish over 0.96 s examples every 0.32 s. Row i covers [0.32 i, 0.32 i + 0.96] s (centre 0.48 + 0.32 i),
the grid of the released UnAV-100 features. Row counts follow the reference's windowing for the duration, so
shapes equal the released files': visual = the windows the reference's I3D loop runs on round(25 d) frames (a
window runs once 25 frames are there: 24 RGB frames + 1 for the last flow pair), audio = the whole VGGish
examples in round(16000 d) samples. The two can differ by one row (~6 % of durations), as in the released
set; readers crop to the shorter.

Preprocessing as the reference: frames resized so the short side is 256 (bilinear), RAFT (Sintel, 20
iterations) between consecutive frames on the whole frame padded to a multiple of 8, then the centre 224 x 224
crop of RGB and flow; RGB -> 2x/255 - 1; flow clamped to [-20, 20], mapped to round(128 + 255/40 * flow),
then scaled like RGB. Streaming: frames arrive in chunks and only the frames of the window being completed
(25) plus one batch of windows are held, whatever the video's length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avdet.errors import DataError
from avdet.extractors import i3d, raft, vggish
from avdet.extractors.base import ExtractorSet, Features, MediaRequest, VisualInput, grid_times, rechunk
from avdet.extractors.recipes import I3D_VGGISH

log = logging.getLogger(__name__)

VERSION = 1
FPS = I3D_VGGISH.fps  # 25
STACK = I3D_VGGISH.stack  # frames per I3D window: 24
STEP = I3D_VGGISH.step  # frames between windows: 8
SHORT_SIDE = 256
CROP = 224
FLOW_CLAMP = 20.0
WINDOW_S = I3D_VGGISH.window_s  # 0.96
STEP_S = I3D_VGGISH.step_s  # 0.32

FlowFn = Callable[[Tensor, Tensor], Tensor]  # (N, 3, H, W) x2 in 0..255 (H, W multiples of 8) -> (N, 2, H, W)
ClipNet = Callable[[Tensor], Tensor]  # (B, C, STACK, 224, 224) -> (B, 1024)


def num_frames_for(duration: float, fps: float = FPS) -> int:
    """Frames ffmpeg's fps filter produces for `duration` seconds (rounded to the nearest frame)."""
    return max(0, int(round(duration * fps)))


def rows_for_frames(num_frames: int) -> int:
    """Windows the reference loop runs on `num_frames` frames: STACK + 1 frames first, then STEP more each."""
    return 0 if num_frames < STACK + 1 else (num_frames - STACK - 1) // STEP + 1


def unav_num_rows(duration: float) -> int:
    """Visual rows of the UnAV-100 grid for `duration` seconds (at least one: short clips still get a row)."""
    return max(1, rows_for_frames(num_frames_for(duration)))


def unav_audio_rows(duration: float) -> int:
    """Audio rows of the UnAV-100 grid for `duration` seconds (VGGish examples every 0.32 s, at least one)."""
    return vggish.num_rows_for_duration(duration, STEP_S)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resize_short_side(frames: Tensor, short: int = SHORT_SIDE) -> Tensor:
    """(n, 3, H, W) float -> short side `short` (bilinear, antialiased like PIL; long side truncated like the
    reference's int()). Frames already at that size pass through untouched."""
    h, w = frames.shape[-2:]
    if min(h, w) == short:
        return frames
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def center_crop(x: Tensor, size: int = CROP) -> Tensor:
    """Centre `size` x `size` crop of the last two dims (offsets rounded down, as the reference)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"frames of {h}x{w} are smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def rgb_to_unit(x: Tensor) -> Tensor:
    """0..255 -> [-1, 1]."""
    return 2.0 * x / 255.0 - 1.0


def flow_to_unit(flow: Tensor) -> Tensor:
    """Flow in pixels -> the reference's 8-bit image encoding ([-20, 20] -> 0..255, rounded) -> [-1, 1]."""
    quantised = torch.round(128.0 + 255.0 / (2 * FLOW_CLAMP) * flow.clamp(-FLOW_CLAMP, FLOW_CLAMP))
    return rgb_to_unit(quantised)


@dataclass
class TwoStreamI3D:
    """The visual `Extractor`: I3D RGB + I3D flow (RAFT) on the UnAV-100 grid, streamed.

    `flow_fn`, `rgb_net` and `flow_net` are injectable (tests use cheap stand-ins); `build` wires the real
    ones.
    """

    rgb_net: ClipNet
    flow_net: ClipNet
    flow_fn: FlowFn
    device: str = "cpu"
    batch_size: int = 4  # windows per I3D call
    flow_batch: int = 8  # frame pairs per RAFT call (also the decode sub-chunk)
    num_rows: Callable[[float], int] = unav_num_rows
    name: str = "i3d_rgb_flow"
    modality: str = "visual"
    dim: int = 2 * i3d.FEATURE_DIM
    window_s: float = WINDOW_S
    step_s: float = STEP_S

    def _prepare(self, chunk: np.ndarray) -> Tensor:
        """uint8 (n, H, W, 3) -> float (n, 3, H', W') on device with the short side at 256."""
        x = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()  # (n, H, W, 3) -> (n, 3, H, W)
        return resize_short_side(x)

    def _flows(self, frames: Tensor) -> Tensor:
        """Flows frames[i] -> frames[i + 1] as I3D input: (n - 1, 2, 224, 224) in [-1, 1]."""
        if frames.shape[0] < 2:
            return frames.new_zeros((0, 2, CROP, CROP))
        # Like the reference: flow on the padded frame, then the centre crop of the padded flow.
        padded = raft.pad_frames(frames)
        with torch.inference_mode():
            flow = self.flow_fn(padded[:-1], padded[1:])
        return flow_to_unit(center_crop(flow))

    def _run(self, pending: list[tuple[Tensor, Tensor]], out: list[Tensor]) -> None:
        """Run both I3D streams on the pending windows, append (B, 2048) to `out`, empty `pending`."""
        if not pending:
            return
        rgb = torch.stack([w[0] for w in pending]).transpose(1, 2)  # (B, T, 3, h, w) -> (B, 3, T, h, w)
        flow = torch.stack([w[1] for w in pending]).transpose(1, 2)  # (B, T, 2, h, w) -> (B, 2, T, h, w)
        with torch.inference_mode():
            out.append(torch.cat([self.rgb_net(rgb), self.flow_net(flow)], dim=1).float().cpu())
        pending.clear()

    def __call__(self, decoded: VisualInput) -> Features:
        rows = int(self.num_rows(decoded.duration))
        needed = STACK + 1 + STEP * (rows - 1)  # frames the last window needs
        rgb_buf: list[Tensor] = []  # (3, 224, 224) crops of frames first_index, first_index + 1, ...
        flow_buf: list[Tensor] = []  # (2, 224, 224) flow from frame j to j + 1, same indexing
        first_index, seen, window = 0, 0, 0
        last: Tensor | None = None  # the last resized frame (the next pair's first frame)
        pending: list[tuple[Tensor, Tensor]] = []  # windows of one batch: RGB (T, 3, h, w), flow (T, 2, h, w)
        out: list[Tensor] = []

        def absorb(frames: Tensor) -> None:
            nonlocal first_index, seen, window, last
            flow_buf.extend(self._flows(frames if last is None else torch.cat([last, frames])).unbind(0))
            rgb_buf.extend(rgb_to_unit(center_crop(frames)).unbind(0))
            last = frames[-1:]
            seen += frames.shape[0]
            # Window k needs RGB frames 8k..8k+23 and flows 8k..8k+23 (the last one ends at frame 8k+24).
            while window < rows and STEP * window + STACK + 1 <= seen:
                lo = STEP * window - first_index
                pending.append((torch.stack(rgb_buf[lo : lo + STACK]), torch.stack(flow_buf[lo : lo + STACK])))
                window += 1
                drop = STEP * window - first_index  # frames before the next window's start are done
                del rgb_buf[:drop], flow_buf[:drop]
                first_index += drop
                if len(pending) == self.batch_size:
                    self._run(pending, out)

        for piece in rechunk(decoded.chunks, self.flow_batch):
            if seen >= needed:
                continue  # frames past the grid's last window: consumed (the decoder counts them) but unused
            absorb(self._prepare(piece[: needed - seen]))
        if seen == 0:
            raise DataError("the visual input holds no frames")
        if seen < needed:
            # Short or truncated video: the reference would drop the incomplete window; the grid keeps it by
            # repeating the last frame (the flow of a still frame).
            log.debug("padding %d missing frames with the last frame", needed - seen)
            while seen < needed:
                assert last is not None  # seen > 0
                absorb(last.expand(min(self.flow_batch, needed - seen), -1, -1, -1).clone())
        self._run(pending, out)
        values = torch.cat(out).numpy().astype(np.float32)
        return Features(values, grid_times(rows, self.window_s, self.step_s))


def build(
    *,
    weights_dir: str | None = None,
    random_weights: bool = False,
    device: str = "cpu",
    batch_size: int = 4,
    flow_batch: int = 8,
    raft_iterations: int = raft.ITERATIONS,
    vggish_postprocess: bool = False,
) -> ExtractorSet:
    """The `i3d_vggish` set; weights from `weights_dir` (see `extractors.weights`) unless `random_weights`.

    `device` "auto" picks the GPU when one is visible. Memory is bounded by the batch sizes, not the video's
    length: about 25 + `flow_batch` frames and `batch_size` windows are held at a time.
    """
    device = resolve_device(device)
    rgb = i3d.load_i3d("rgb", weights_dir, random_weights=random_weights).to(device)
    flow = i3d.load_i3d("flow", weights_dir, random_weights=random_weights).to(device)
    flow_net = raft.load_raft(weights_dir, random_weights=random_weights).to(device)
    audio_net = vggish.load_vggish(weights_dir, random_weights=random_weights)

    def flow_fn(first: Tensor, second: Tensor) -> Tensor:
        return raft.estimate_flow(flow_net, first, second, raft_iterations)

    visual = TwoStreamI3D(rgb, flow, flow_fn, device=device, batch_size=batch_size, flow_batch=flow_batch)
    audio = vggish.VGGishAudio(
        audio_net, hop_s=STEP_S, postprocess=vggish_postprocess, device=device, num_rows=unav_audio_rows
    )
    # The decoder's short-side mode crops; a 256 x 256 crop keeps the region I3D sees (the centre 224) and
    # gives RAFT a margin around it. The reference runs RAFT on the whole 256-short-side frame.
    media = MediaRequest(fps=FPS, size=(SHORT_SIDE, SHORT_SIDE), resize="short_side_crop", short_side=SHORT_SIDE)
    spec = {
        "name": "i3d_vggish",
        "version": VERSION,
        "window_s": WINDOW_S,
        "step_s": STEP_S,
        "visual_dim": visual.dim,
        "audio_dim": audio.dim,
        "fps": FPS,
        "stack_frames": STACK,
        "step_frames": STEP,
        "short_side": SHORT_SIDE,
        "crop": CROP,
        "frame_size": list(media.size),
        "sample_rate": media.sample_rate,
        "flow": "raft_large",
        "raft_iterations": raft_iterations,
        "vggish_hop_s": STEP_S,
        "vggish_postprocess": vggish_postprocess,
        "weights": sorted([*i3d.WEIGHTS_FILES.values(), raft.WEIGHTS_FILE, vggish.WEIGHTS_FILE, vggish.PCA_FILE]),
        "random_weights": random_weights,
        "rows": "reference",  # visual: I3D loop on round(25 d) frames; audio: whole VGGish examples
    }
    return ExtractorSet("i3d_vggish", visual, audio, media, spec)
