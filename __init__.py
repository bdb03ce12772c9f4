"""avdet: dense audio-visual event detection, from raw video to an event timeline.

The Python API is what `avdet detect` calls, with the same events and the same JSON:

    import avdet
    det = avdet.load("run/best.ckpt")              # a Detector; device="auto" (a GPU when there is one)
    det = avdet.load("unav-unav100")               # or a named pretrained model (`avdet models`), fetched once
    result = det.detect("clip.mp4")                # a DetectionResult (an AvdetError naming the file if it fails)
    for e in result.events:                        # sorted by start, times in seconds rounded to the millisecond
        print(e.label, e.start, e.end, e.score)
    result.to_dict()                               # == the events.json `avdet detect clip.mp4 --out x.json` writes
    result.to_json()                               # the same as text
    results = det.detect(["a.mp4", "b.mp4"], progress=True)  # one DetectionResult each; a failed one has .error

`Event.to_dict()` gives one event as the JSON holds it. torch is imported by `load`, not by `import avdet`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from avdet.version import __version__

__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from pathlib import Path

    from avdet.pipeline.detect import Detector


def load(
    checkpoint: str | Path,
    *,
    device: str = "auto",
    threshold: float | None = None,
    all_events: bool = False,
    cache: str | Path | None = None,
    batch_size: int = 1,
    weights_dir: str | Path | None = None,
    postprocess: dict | None = None,
    random_weights: bool = False,
) -> Detector:
    """A `Detector` for a trained avdet checkpoint (`.ckpt` or an exported `.safetensors`) or a named pretrained
    model (`avdet models` lists them; the first use downloads and converts it into $AVDET_HOME/models).

    device: "auto" (a GPU when there is one, as the CLI), "cpu", "cuda" or "cuda:N".
    threshold: one score threshold for every class instead of the checkpoint's calibrated per-class ones
        (0: every candidate); all_events: every ranked candidate (up to 100 per class), for `avdet eval`.
    cache: the feature store (default $AVDET_CACHE or ~/.cache/avdet/features); features are computed once.
    batch_size: videos per forward pass; weights_dir: pretrained extractor weights (default $AVDET_WEIGHTS or
        ~/.cache/avdet/weights); postprocess: soft-NMS overrides, e.g. {"sigma": 0.5, "max_seg_num": 50};
    random_weights: random extractor weights (tests only).

    Then `Detector.detect(video_or_list, progress=False)` returns `DetectionResult`s
    (`avdet.pipeline.results.DetectionResult`). A missing or unreadable checkpoint raises an `AvdetError`
    (`avdet.errors`) naming the file."""
    from avdet.pipeline.detect import Detector
    from avdet.pipeline.models_zoo import resolve_checkpoint

    return Detector(
        resolve_checkpoint(checkpoint),
        cache=cache,
        device=device,
        threshold=threshold,
        all_events=all_events,
        batch_size=batch_size,
        weights_dir=str(weights_dir) if weights_dir is not None else None,
        random_weights=random_weights,
        postprocess=postprocess,
    )
