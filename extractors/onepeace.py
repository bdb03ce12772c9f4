"""`onepeace`: the ONE-PEACE feature layout of UniAV / CCNet / LoCo's best UnAV-100 numbers.

avdet does not compute ONE-PEACE features itself: the encoders (a ~4B-parameter model, the visual one
fine-tuned on Kinetics-400) need the ONE-PEACE checkpoints and their fairseq-based code, which avdet does
not vendor. The released features are read in place by `avdet.pipeline.io.released` (layout "onepeace"); these
constants describe their grid.
"""

from __future__ import annotations

from avdet.errors import WeightsError
from avdet.extractors.base import ExtractorSet

# The layout's numbers (16 fps, 16-frame windows every 4 frames: 1.0 s windows every 0.25 s, row i centred at
# 0.5 + 0.25 i; 1536-d rows) are in `avdet.extractors.recipes`, where the released-feature reader finds them.

REQUIREMENTS = (
    "the onepeace extractor needs the ONE-PEACE model (https://github.com/OFA-Sys/ONE-PEACE: its "
    "fairseq-based code and checkpoints, the video encoder fine-tuned on Kinetics-400, the audio encoder at "
    "16 kHz), which avdet does not ship; extract <id>_one_peace_video_finetune.npy and "
    "<id>_one_peace_audio.npy with that code "
    "(16 fps, 16-frame windows every 4 frames; 1 s audio windows every 0.25 s) or download UniAV's released "
    "UnAV-100 features (https://github.com/ttgeng233/UniAV), then read them with the released-features "
    "reader (avdet.pipeline.io.released, layout 'onepeace')"
)


def build(*, weights_dir: str | None = None, random_weights: bool = False, device: str = "cpu") -> ExtractorSet:
    """Always raises `WeightsError` saying what ONE-PEACE extraction needs and where to get it."""
    del weights_dir, random_weights, device
    raise WeightsError(REQUIREMENTS)
