"""VGGish audio embeddings with the public torchvggish checkpoint layout (`features.*`, `embeddings.*`,
`pproc.pca_eigen_vectors`, `pproc.pca_means`).

Front end: `mel.log_mel` (16 kHz, 25 ms / 10 ms, 64 bands 125-7500 Hz, log(mel + 0.01)) cut into 96-frame
examples (0.96 s) every `hop_s`: 0.96 s is VGGish's default, 0.32 s the UnAV-100 recipe (audio rows line up
with the I3D rows). Output: the raw 128-d embedding (after the final ReLU of the torchvggish port), or with
`postprocess=True` the AudioSet PCA + clip to [-2, 2] + 8-bit quantisation (0..255).

The UnAV-100 features were extracted with v-iashin/video_features, whose VGGish wrapper returns the raw
embeddings (its Postprocessor is a pass-through unless called with `post_process=True`), hence the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from avdet.errors import WeightsError
from avdet.extractors import weights
from avdet.extractors.base import AudioInput, Features, grid_times
from avdet.extractors.mel import frame_examples, log_mel

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
EXAMPLE_FRAMES = 96  # 10 ms log-mel frames per example (0.96 s)
NUM_BANDS = 64
EMBEDDING_DIM = 128
MEL_HOP_S = 0.010
MEL_WINDOW_S = 0.025
QUANT_MIN, QUANT_MAX = -2.0, 2.0
WEIGHTS_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"


class Postprocessor(nn.Module):
    """AudioSet PCA (with whitening) + clip + 8-bit quantisation, as parameters named like torchvggish's."""

    def __init__(self) -> None:
        super().__init__()
        self.pca_eigen_vectors = nn.Parameter(torch.zeros(EMBEDDING_DIM, EMBEDDING_DIM), requires_grad=False)
        self.pca_means = nn.Parameter(torch.zeros(EMBEDDING_DIM, 1), requires_grad=False)

    def forward(self, embeddings: Tensor) -> Tensor:
        """(N, 128) raw embeddings -> (N, 128) float values in 0..255."""
        pca = (self.pca_eigen_vectors @ (embeddings.T - self.pca_means)).T  # (128, N) -> (N, 128)
        clipped = pca.clamp(QUANT_MIN, QUANT_MAX)
        return torch.round((clipped - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN)))


def _vgg_features() -> nn.Sequential:
    """The VGG stack; indices match the checkpoint (conv at 0, 3, 6, 8, 11, 13)."""
    layers: list[nn.Module] = []
    channels = 1
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """(N, 1, 96, 64) log-mel examples -> (N, 128) embeddings; `postprocess` applies the PCA/quantisation."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(inplace=True),
        )
        self.pproc = Postprocessor()

    def forward(self, examples: Tensor) -> Tensor:
        x = self.features(examples)  # (N, 512, 6, 4)
        # Flatten in TensorFlow's (H, W, C) order, which the ported fully connected weights expect.
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (N, 512, 6, 4) -> (N, 6, 4, 512) -> (N, 12288)
        return self.embeddings(x)

    def postprocess(self, embeddings: Tensor) -> Tensor:
        return self.pproc(embeddings)


def waveform_to_examples(waveform: Tensor, sample_rate: int = SAMPLE_RATE, hop_s: float = 0.96) -> Tensor:
    """(N, 1, 96, 64) float32 examples every `hop_s` seconds from a mono 16 kHz waveform in [-1, 1]."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"VGGish needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz (ask the decoder to resample)")
    mel = log_mel(waveform, sample_rate, window_s=MEL_WINDOW_S, hop_s=MEL_HOP_S, num_mels=NUM_BANDS)
    hop = int(round(hop_s / MEL_HOP_S))
    return frame_examples(mel, EXAMPLE_FRAMES, hop)[:, None]  # (N, 96, 64) -> (N, 1, 96, 64)


def samples_for_examples(num_examples: int, hop_s: float) -> int:
    """Waveform length (samples) that yields at least `num_examples` examples."""
    mel_frames = EXAMPLE_FRAMES + int(round(hop_s / MEL_HOP_S)) * (num_examples - 1)
    window = int(round(SAMPLE_RATE * MEL_WINDOW_S))
    return window + int(round(SAMPLE_RATE * MEL_HOP_S)) * (mel_frames - 1)


def num_examples(num_samples: int, hop_s: float) -> int:
    """Whole examples in a waveform of `num_samples` samples (what `waveform_to_examples` returns)."""
    window = int(round(SAMPLE_RATE * MEL_WINDOW_S))
    if num_samples < window:
        return 0
    mel_frames = 1 + (num_samples - window) // int(round(SAMPLE_RATE * MEL_HOP_S))
    if mel_frames < EXAMPLE_FRAMES:
        return 0
    return 1 + (mel_frames - EXAMPLE_FRAMES) // int(round(hop_s / MEL_HOP_S))


def num_rows_for_duration(duration: float, hop_s: float) -> int:
    """Rows for `duration` seconds of 16 kHz audio: the reference's whole examples, at least one."""
    return max(1, num_examples(int(round(duration * SAMPLE_RATE)), hop_s))


def load_vggish(
    weights_dir: str | None = None,
    *,
    random_weights: bool = False,
    expected_sha256: dict[str, str] | None = None,
) -> VGGish:
    """VGGish in eval mode with the canonical weights (or seeded random ones for tests and benchmarks)."""
    model = VGGish()
    if random_weights:
        return weights.seeded_model(model)
    sums = expected_sha256 or {}
    net = weights.load_file(WEIGHTS_FILE, weights_dir, expected_sha256=sums.get(WEIGHTS_FILE))
    pca = weights.load_file(PCA_FILE, weights_dir, expected_sha256=sums.get(PCA_FILE))
    return weights.load_checked(model, {**net, **pca_state(pca)}, f"{WEIGHTS_FILE} + {PCA_FILE}")


def pca_state(pca: dict[str, Tensor]) -> dict[str, Tensor]:
    """The PCA file (`pca_eigen_vectors` (128, 128), `pca_means` (128,)) as `pproc.*` parameters."""
    names = ("pca_eigen_vectors", "pca_means")
    if any(n not in pca and f"pproc.{n}" not in pca for n in names):
        raise WeightsError(f"{PCA_FILE}: expected keys {', '.join(names)}, found {', '.join(sorted(pca)) or 'none'}")
    vectors = pca.get("pca_eigen_vectors", pca.get("pproc.pca_eigen_vectors"))
    means = pca.get("pca_means", pca.get("pproc.pca_means"))
    return {
        "pproc.pca_eigen_vectors": vectors.to(torch.float32),
        "pproc.pca_means": means.to(torch.float32).reshape(-1, 1),  # (128,) -> (128, 1)
    }


@dataclass
class VGGishAudio:
    """The audio `Extractor`: row i covers [i*hop, i*hop + 0.96] s.

    The row count follows from the duration, as the reference's framing of a full-length track gives it
    (`num_rows_for_duration`); `num_rows` (duration -> rows) overrides it. A track shorter than that is padded
    with silence, a longer one's extra examples are dropped, so shapes depend on the duration only.
    """

    model: VGGish
    hop_s: float = 0.32
    postprocess: bool = False
    device: str = "cpu"
    batch_size: int = 64
    num_rows: Callable[[float], int] | None = None
    window_s: float = EXAMPLE_FRAMES * MEL_HOP_S
    name: str = "vggish"
    modality: str = "audio"
    dim: int = EMBEDDING_DIM
    step_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.step_s = self.hop_s
        self.model = self.model.to(self.device).eval()

    @torch.inference_mode()
    def embed(self, examples: Tensor) -> Tensor:
        """(N, 1, 96, 64) -> (N, 128) in batches on `device` (postprocessed if asked)."""
        out = []
        for start in range(0, examples.shape[0], self.batch_size):
            batch = examples[start : start + self.batch_size].to(self.device)
            emb = self.model(batch)
            out.append((self.model.postprocess(emb) if self.postprocess else emb).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, EMBEDDING_DIM)

    def __call__(self, decoded: AudioInput) -> Features:
        wave = torch.from_numpy(np.ascontiguousarray(decoded.samples, dtype=np.float32))
        if wave.ndim != 1:
            raise ValueError(f"VGGish expects a mono waveform (N,), got shape {tuple(wave.shape)}")
        if self.num_rows is not None:
            rows = max(1, int(self.num_rows(decoded.duration)))
        else:
            rows = num_rows_for_duration(decoded.duration, self.hop_s)
        # Only the samples the rows use are framed; missing ones are silence.
        needed = samples_for_examples(rows, self.hop_s)
        wave = torch.nn.functional.pad(wave[:needed], (0, max(0, needed - wave.shape[0])))
        examples = waveform_to_examples(wave, decoded.sample_rate, self.hop_s)[:rows]  # (rows, 1, 96, 64)
        values = self.embed(examples).numpy().astype(np.float32)
        return Features(values, grid_times(rows, self.window_s, self.hop_s))
