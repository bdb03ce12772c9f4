"""avdet: dense audio-visual event detection, from raw video to an event timeline.

The Python API is what `avdet detect` calls:

    import avdet
    det = avdet.load("run/best.ckpt")          # Detector; options: threshold=, all_events=, cache=, device=, ...
    det = avdet.load("unav-unav100")           # or a named pretrained model (`avdet models`), fetched once
    events = det.detect("clip.mp4")            # [Event(label, label_id, start, end, score)], calibrated thresholds
    found = det.detect(["a.mp4", "b.mp4"])     # [Detection(path, video_id, duration, events, error)]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from avdet.version import __version__

__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from pathlib import Path

    from avdet.pipeline.detect import Detector


def load(checkpoint: str | Path, **options: Any) -> Detector:
    """A `Detector` for a trained checkpoint or a named pretrained model (`avdet models` lists them; the first use
    downloads and converts it into $AVDET_HOME/models). Options are `avdet.pipeline.detect.Detector`'s keyword
    arguments. torch is imported here, not by `import avdet`."""
    from avdet.pipeline.detect import Detector
    from avdet.pipeline.models_zoo import resolve_checkpoint

    return Detector(resolve_checkpoint(checkpoint), **options)
