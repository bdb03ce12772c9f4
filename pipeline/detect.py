"""`avdet detect` and the Python API: video files -> features (computed, or read once from the cache) -> model ->
events in seconds -> the operating point (calibrated per-class thresholds and overlap suppression, or `threshold` /
`all_events`). The CLI calls exactly this, so the library and the command give the same events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch

from avdet.errors import AvdetError, CheckpointError, DataError, StoreWriteError
from avdet.extractors.base import ExtractorSet
from avdet.extractors.registry import EXTRACTORS
from avdet.pipeline.checkpoint import Checkpoint, load_checkpoint
from avdet.pipeline.data.sources import VideoFeatures, to_video_features
from avdet.pipeline.extract import ExtractOptions, extract_one
from avdet.pipeline.inference import video_candidates
from avdet.pipeline.io import media
from avdet.pipeline.io.store import FeatureStore, default_cache_dir
from avdet.pipeline.operating_point import apply_operating_point, operating_point_for
from avdet.pipeline.threads import resolve_device_name
from avdet.pipeline.types import Event, OperatingPoint

if TYPE_CHECKING:
    from avdet.pipeline.live import LiveStream
    from avdet.pipeline.results import DetectionResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    path: str
    video_id: str
    duration: float
    events: list[Event] | None  # shown by the operating point, by descending score; None when the video failed
    error: str | None = None


def extractor_for(ckpt: Checkpoint, options: ExtractOptions) -> ExtractorSet:
    """The extractor set that computes exactly the features the checkpoint was trained on."""
    name = ckpt.extractor.get("name")
    if name not in EXTRACTORS:
        raise CheckpointError(f"{ckpt.path}: trained on features {name!r}, which avdet cannot compute from video")
    extractors = options.build()
    trained = {k: v for k, v in ckpt.extractor.items() if k != "released"}
    if not ckpt.extractor.get("released") and extractors.spec != trained:
        raise CheckpointError(
            f"{ckpt.path}: trained on {name} features with spec {trained}, but this avdet computes {extractors.spec}"
        )
    return extractors


def candidate_events(ckpt: Checkpoint, feats: list[VideoFeatures], device: torch.device) -> dict[str, list[Event]]:
    """Every candidate event of each video, keyed by video id: a dense model's ranked candidates, or a segment
    model's runs of one label (its task turns segment labels into events; imported only for such a model, so the
    dense detection path never loads the training layer)."""
    if ckpt.task == "dense":
        return video_candidates(ckpt.model, feats, ckpt.postprocess, ckpt.classes, device)
    from avdet.pipeline.tasks import task_class

    return task_class(ckpt.task).events(ckpt, feats, device)


class Detector:
    """A loaded checkpoint plus what it needs to turn video files into events: the extractor it was trained on,
    the feature cache and the operating point. Prints nothing unless asked (`detect(..., progress=True)`), so it
    suits notebooks and services.

    threshold: one score threshold for every class instead of the checkpoint's calibrated ones (0: every
    candidate); all_events: every ranked candidate (what mAP evaluation needs). postprocess: PostprocessConfig
    overrides (e.g. {"sigma": 0.5}); cache: the feature store (default $AVDET_CACHE or ~/.cache/avdet/features);
    device: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N".

    `media_progress(path, done_s, total_s)`, when set, follows feature computation within each video in media
    seconds (cached videos call nothing): what `avdet detect` and `progress=True` draw."""

    media_progress: Callable[[str, float, float], None] | None = None

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        cache: str | Path | None = None,
        device: str = "auto",
        threshold: float | None = None,
        all_events: bool = False,
        batch_size: int = 1,
        backend: media.Backend = "ffmpeg",
        weights_dir: str | None = None,
        random_weights: bool = False,
        postprocess: dict | None = None,
        explain_streams: bool = False,
    ) -> None:
        if threshold is not None and not 0 <= threshold <= 1:
            raise DataError(f"threshold {threshold} is not a score in [0, 1]")
        device = resolve_device_name(device)  # "auto" resolved; a missing GPU is one line, not a traceback
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.checkpoint = load_checkpoint(checkpoint, self.device, postprocess=postprocess)
        self.operating_point: OperatingPoint = operating_point_for(
            self.checkpoint.operating_point,
            len(self.checkpoint.classes),
            self.checkpoint.postprocess.output_threshold,
            threshold=threshold,
            all_events=all_events,
            calibratable=self.checkpoint.task == "dense",
        )
        self.store = FeatureStore(cache if cache is not None else default_cache_dir())
        self.options = ExtractOptions(
            extractor=self.checkpoint.extractor["name"],
            backend=backend,
            weights_dir=weights_dir,
            random_weights=random_weights,
            device=device,
            modality=self.checkpoint.modality,  # a unimodal model: only its stream is decoded and computed
        )
        self._extractors: ExtractorSet | None = None
        self.explain_streams = explain_streams  # each event's score with one stream alone (docs/fusion.md)
        if explain_streams:
            from avdet.pipeline.stream_report import can_remove_streams

            why = can_remove_streams(self.checkpoint)
            if why is not None:
                raise DataError(f"{checkpoint}: --explain-streams: {why}")
        self._told_silent = False  # an audio-visual model on a video without sound is told once per detector

    @property
    def extractors(self) -> ExtractorSet:
        if self._extractors is None:  # built on first use: pretrained backbones are slow to load
            self._extractors = extractor_for(self.checkpoint, self.options)
        return self._extractors

    def features(self, path: Path) -> VideoFeatures:
        """Features of one video from the cache (read once), computing them first when missing."""
        follow = None if self.media_progress is None else partial(self.media_progress, str(path))
        res = extract_one(path, self.store, self.extractors, self.options, keep_features=True, on_media=follow)
        if res.status == "failed":
            raise DataError(f"{path}: {res.reason}")
        stored = res.features
        self._warn_if_silent(path)
        log.info("%s: features %s (%d rows, %.1f s)", path, res.status, res.rows, stored.duration)
        feats = to_video_features(res.video_id, stored.visual, stored.audio, stored.duration)
        self.checkpoint.check_compatible(self.checkpoint.classes, (feats.visual.shape[1], feats.audio.shape[1]))
        return feats

    def _warn_if_silent(self, path: Path) -> None:
        """An audio-visual model on a video without an audio track hears silence: its events then rest on the
        picture alone. Said once (the first such video; probing stops after it)."""
        if self._told_silent or self.checkpoint.modality != "audio_visual":
            return
        if not media.probe(path).has_audio:
            self._told_silent = True
            log.warning(
                "%s: no audio track; the audio-visual model %s hears silence there, so its events rest on the "
                "picture alone (said once: other videos without sound are not named)",
                path,
                self.checkpoint.name,
            )

    @overload
    def detect(self, video: str | Path, *, progress: bool = False) -> DetectionResult: ...

    @overload
    def detect(self, video: list[str | Path], *, progress: bool = False) -> list[DetectionResult]: ...

    def detect(
        self, video: str | Path | list[str | Path], *, progress: bool = False
    ) -> DetectionResult | list[DetectionResult]:
        """Events of one video, or of each video of a list, as `DetectionResult`s: `.events` (sorted by start,
        rounded as the JSON), `.video`, `.duration`, `.error`, `to_dict()` / `to_json()` (the JSON `avdet detect`
        writes for the same clip). One video that fails raises an `AvdetError` naming its path; in a list, a
        failing video carries its `.error` and the rest go on. progress: draw videos done and media seconds
        computed (with an ETA) on stderr, e.g. in a notebook."""
        single = isinstance(video, (str, Path))
        paths = [Path(video)] if single else [Path(v) for v in video]
        results = self._results(paths, progress)
        if single:
            (result,) = results
            if result.error is not None:
                raise DataError(f"{result.path}: {result.error}")
            return result
        return results

    def result(self, det: Detection) -> DetectionResult:
        """A `Detection` of `run` as the API's documented result (the JSON's events, model and operating point)."""
        # the API's result type and the JSON writer it shares with the CLI, loaded by the API's first result:
        # `import avdet.pipeline.detect` stays within the detection path's module budget (tests/test_layering.py)
        from avdet.pipeline.results import DetectionResult, as_written

        if det.events is None:
            return DetectionResult(det.path, det.video_id, det.duration, [], self.checkpoint.name, None, det.error)
        record = self.operating_point.record(self.checkpoint.classes)
        return DetectionResult(
            det.path, det.video_id, det.duration, as_written(det.events), self.checkpoint.name, record
        )

    def _results(self, paths: list[Path], progress: bool) -> list[DetectionResult]:
        if not progress:
            return [self.result(d) for d in self.run(paths)]
        from avdet.progress import VideoProgress  # the console layer draws; the library only calls back

        shown = VideoProgress("detect", len(paths))
        self.media_progress = shown.on_media
        try:
            with shown:
                results = []
                for det in self.run(paths):
                    results.append(self.result(det))
                    shown.video_done(det.duration)
        finally:
            self.media_progress = None
        return results

    def stream(self, source: str | Path, **options: Any) -> LiveStream:
        """Events of a live SOURCE (a file played at its speed, "-", a udp/rtp/rtsp/http URL, a device) as they
        become final: `for ev in detector.stream("udp://127.0.0.1:5000"): ...`; `options` are `LiveOptions`
        fields (hop_s, margin_s, retries, ...). See pipeline/live.py."""
        from avdet.pipeline.live import LiveOptions, LiveStream  # only live use loads the live modules

        return LiveStream(self, str(source), LiveOptions(**options))

    def run(self, paths: list[Path], batch_size: int | None = None) -> Iterator[Detection]:
        """Detections per video as they are ready, in input order; a failing video yields a Detection with its
        error and the rest go on. `batch_size` videos share a forward pass (default: the detector's)."""
        batch_size = batch_size or self.batch_size
        media.require_ffmpeg()  # one line for the batch, not one failed video each
        pending: list[tuple[Path, VideoFeatures]] = []

        def flush() -> Iterator[Detection]:
            events = candidate_events(self.checkpoint, [f for _, f in pending], self.device)
            if self.checkpoint.modality != "audio_visual":  # a unimodal model's events say what it heard / saw
                events = {
                    vid: [replace(e, modality=self.checkpoint.modality) for e in evs] for vid, evs in events.items()
                }
            shown_by_id = {
                f.video_id: apply_operating_point(events[f.video_id], self.operating_point) for _, f in pending
            }
            if self.explain_streams:
                from avdet.pipeline.stream_report import explain_streams

                shown_by_id = explain_streams(
                    candidate_events, self.checkpoint, [f for _, f in pending], shown_by_id, self.device
                )
            for p, f in pending:
                shown = shown_by_id[f.video_id]
                log.info("%s: %d of %d candidate events at the operating point", p, len(shown), len(events[f.video_id]))
                yield Detection(str(p), f.video_id, f.duration, shown)
            pending.clear()

        for path in paths:
            try:
                pending.append((path, self.features(path)))
            except AvdetError as err:
                yield from flush() if pending else ()
                if isinstance(err, StoreWriteError):  # the cache's disk is full or read-only: so for every video
                    raise
                reason = str(err).removeprefix(f"{path}: ")  # the caller names the video once
                yield Detection(str(path), media.video_id(path), 0.0, None, reason)
                continue
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


class CombinedDetector:
    """Several detectors on the same videos, one timeline: e.g. an audio-visual, an audio-only and a visual-only
    model, so "dog barking (audio only)" (heard, off screen) shows beside "dog barking (audio-visual)". Every event
    carries the modality of the model that found it; a video fails if any model fails on it."""

    def __init__(self, detectors: list[Detector]) -> None:
        if not detectors:
            raise ValueError("CombinedDetector needs at least one detector")
        self.detectors = detectors
        self.name = "+".join(d.checkpoint.name for d in detectors)
        self.classes = list(dict.fromkeys(c for d in detectors for c in d.checkpoint.classes))

    def operating_point_record(self) -> dict:
        """What detect's files record of the thresholds applied: the one model's record, or one per model."""
        records = {
            f"{d.checkpoint.name} ({d.checkpoint.modality})": d.operating_point.record(d.checkpoint.classes)
            for d in self.detectors
        }
        return next(iter(records.values())) if len(self.detectors) == 1 else records

    def run(self, paths: list[Path], batch_size: int | None = None) -> Iterator[Detection]:
        """Like `Detector.run`: one merged Detection per video, in input order."""
        runs = [d.run(paths, batch_size) for d in self.detectors]
        for found in zip(*runs, strict=True):
            failed = [f for f in found if f.events is None]
            if failed:
                yield failed[0]
                continue
            if len(found) == 1:  # one model: its events as they are
                yield found[0]
                continue
            events = [
                e if e.modality else replace(e, modality=d.checkpoint.modality)
                for d, f in zip(self.detectors, found, strict=True)
                for e in f.events
            ]
            yield replace(found[0], events=sorted(events, key=lambda e: -e.score))
