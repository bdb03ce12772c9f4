"""The time grids of the published feature recipes, torch-free: the extractors that compute them and the reader of
the released feature folders (`pipeline.io.released`) take their numbers from here, so reading released features
never loads a network."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Frames per second the visual stream is sampled at, frames per window, and frames between windows."""

    fps: float
    stack: int
    step: int

    @property
    def window_s(self) -> float:
        return self.stack / self.fps

    @property
    def step_s(self) -> float:
        return self.step / self.fps


I3D_VGGISH = Recipe(fps=25.0, stack=24, step=8)  # UnAV-100's I3D-VGGish: 0.96 s windows every 0.32 s
ONEPEACE = Recipe(fps=16.0, stack=16, step=4)  # UniAV's ONE-PEACE: 1.0 s windows every 0.25 s (audio alike)
ONEPEACE_DIM = 1536  # both modalities
ONEPEACE_VISUAL_SUFFIX = "_one_peace_video_finetune.npy"
ONEPEACE_AUDIO_SUFFIX = "_one_peace_audio.npy"
