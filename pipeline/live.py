"""Live detection: events from a stream while it plays (`avdet live`, `Detector.stream`).

    SOURCE --ffmpeg, incremental--> frames + samples --lite rows as they complete--> row buffer
      --every hop: the model on the window of its trained length ending at the newest row--> candidates
      --the same decoding, soft-NMS and operating point as `detect`--> events
      --final (end behind the newest row by more than the margin), not emitted before--> one LiveEvent each

Finality and duplicates. A window sees an event again and again as the stream moves on, with slightly different
boundaries and scores. An event is emitted the first time a window shows it (above its class threshold, after the
operating point's same-class suppression) with its end at least `margin_s` behind the newest row, unless an
already emitted event of its class overlaps it by tIoU above the operating point's `overlap_iou` (the suppression
`detect` applies; any overlap for an uncalibrated checkpoint). A candidate that ended more than `max_late_s`
before the previous window's cutoff is not emitted any more: its time has passed. When the stream ends or is
stopped, every remaining shown event is final.

Keeping up (the skip policy). Rows are never dropped: every received frame and sample becomes features and every
row goes through the model. When the model runs slower than the stream, it runs less often: a window is due every
`hop_s`, but waits while more media is already waiting, up to half the trained length; beyond that a window runs
whatever the backlog (so every row is seen by at least two windows before it leaves the buffer), and the lag grows
and is reported. The lag (stream seconds received but not yet through the model) is logged every
`report_every_s` (a warning while it exceeds `hop_s + behind_s`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from avdet.errors import CheckpointError, DataError, DecodeError
from avdet.extractors.lite_live import LiveAudioRows, LiveVisualRows, total_rows
from avdet.models.pyramid import PyramidDetector
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.io.live_media import Backlog, LiveRequest, RetryPolicy, live_media
from avdet.pipeline.io.writers import write_events_file
from avdet.pipeline.operating_point import apply_operating_point, span_tiou
from avdet.pipeline.postprocess import candidates_to_events, decode_video
from avdet.pipeline.threads import torch_threads
from avdet.pipeline.types import Event, TimeGrid

if TYPE_CHECKING:
    from avdet.pipeline.detect import Detector

log = logging.getLogger(__name__)

DEFAULT_DUPLICATE_IOU = 0.0  # no overlap suppression in the operating point ("all" mode): any overlap is the same


@dataclass(frozen=True)
class LiveOptions:
    """hop_s: how often the model runs (rounded to whole rows, at least one); margin_s: how far behind the newest
    row an event's end must lie to be final; max_late_s: see the module docstring; realtime: -re (None: for
    files); input_format / input_options: ffmpeg's -f and input options (e.g. v4l2, {"video_size": "640x480"});
    retries, backoff_s, stall_s: a dropped network stream (see `RetryPolicy`); report_every_s: the lag report;
    behind_s: lag beyond hop_s that counts as falling behind."""

    hop_s: float = 0.64
    margin_s: float = 1.0
    max_late_s: float = 1.0
    realtime: bool | None = None
    input_format: str | None = None
    input_options: dict[str, str] = field(default_factory=dict)
    retries: int = 5
    backoff_s: float = 1.0
    stall_s: float = 10.0
    report_every_s: float = 60.0
    behind_s: float = 2.0

    def __post_init__(self) -> None:
        checks = [
            (self.hop_s > 0, f"hop {self.hop_s} s must be > 0"),
            (self.margin_s >= 0, f"margin {self.margin_s} s must be >= 0"),
            (self.max_late_s >= 0, f"max_late {self.max_late_s} s must be >= 0"),
            (self.retries >= 0, f"retries {self.retries} must be >= 0"),
            (self.backoff_s >= 0, f"backoff {self.backoff_s} s must be >= 0"),
            (self.stall_s > 0, f"stall timeout {self.stall_s} s must be > 0"),
            (self.report_every_s > 0, f"report interval {self.report_every_s} s must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(message)


@dataclass(frozen=True)
class LiveEvent:
    """One emitted event; times in stream seconds (from the first media received). emitted_at: the stream time
    received when it was emitted, so emitted_at - end is its delay."""

    label: str
    label_id: int
    start: float
    end: float
    score: float
    emitted_at: float

    def to_json(self) -> str:
        """One JSON line (times to the millisecond)."""
        d = asdict(self)
        for key in ("start", "end", "emitted_at"):
            d[key] = round(d[key], 3)
        d["score"] = round(d["score"], 4)
        return json.dumps(d)

    def event(self) -> Event:
        return Event(self.label, self.label_id, self.start, self.end, self.score)


@dataclass
class LiveStats:
    """What a live run did. lag: stream seconds received but not yet through the model."""

    stream_s: float = 0.0
    rows: int = 0
    windows: int = 0
    catch_up_windows: int = 0  # windows run while media was waiting (the model fell behind)
    events: int = 0
    lag_s: float = 0.0
    max_lag_s: float = 0.0
    busy_s: float = 0.0  # wall seconds spent on features and the model
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process, its threads and reaped children (ffmpeg)
    stopped: bool = False  # by `stop()` (a signal), not by the stream's end

    @property
    def real_time_factor(self) -> float:
        """Compute seconds per stream second (< 1: keeps up)."""
        return self.busy_s / self.stream_s if self.stream_s else 0.0

    def as_dict(self) -> dict:
        d = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        d["real_time_factor"] = round(self.real_time_factor, 4)
        d["cpu_share"] = round(self.cpu_s / self.wall_s, 4) if self.wall_s else 0.0
        return d


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LiveStream:
    """An iterator of LiveEvents from one SOURCE; `stop()` (thread- and signal-safe) ends it after the events that
    are final by then; `stats` says how it went."""

    def __init__(self, detector: Detector, source: str, options: LiveOptions | None = None) -> None:
        self.detector, self.source = detector, source
        self.options = options or LiveOptions()
        ckpt = detector.checkpoint
        self.model = ckpt.model
        if not isinstance(self.model, PyramidDetector) or ckpt.task != "dense":
            raise CheckpointError(f"{ckpt.path}: live detection needs a dense (event) detector, not a {ckpt.task} one")
        extractors = detector.extractors
        if extractors.name != "lite":
            raise CheckpointError(
                f"{ckpt.path}: trained on {extractors.name} features; live detection computes lite features only"
            )
        self.extractors = extractors
        self.modality = ckpt.modality
        self.step, self.window = extractors.visual.step_s, extractors.visual.window_s
        self.grid = TimeGrid(offset=self.window / 2, step=self.step)  # row i's centre: grid unit i
        self.size, self.align = self.model.cfg.max_seq_len, self.model.cfg.max_stride
        self.hop_rows = max(1, round(self.options.hop_s / self.step))
        self.max_hop_rows = max(self.hop_rows, self.size // 2)
        self.margin_rows = math.ceil(self.options.margin_s / self.step)
        self.stop_event = threading.Event()
        self.stats = LiveStats()
        self.emitted: list[LiveEvent] = []  # the recent ones, for duplicates
        point = detector.operating_point
        self.duplicate_iou = point.overlap_iou if point.overlap_iou is not None else DEFAULT_DUPLICATE_IOU
        # The row buffer: rows [base, base + len) of the stream; older rows leave once no window can need them.
        self.base = 0
        self.visual = np.zeros((0, extractors.visual.dim if self.modality != "audio" else 0), np.float32)
        self.audio = np.zeros((0, extractors.audio.dim if self.modality != "visual" else 0), np.float32)
        self.run_rows = 0  # rows through the model (the last window's end)
        self.cutoff = -math.inf  # the previous window's finality cutoff (stream seconds)

    def stop(self) -> None:
        self.stop_event.set()

    # -- rows ------------------------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.base + len(self.visual)

    def _add(self, visual: np.ndarray, audio: np.ndarray) -> None:
        self.visual = np.concatenate([self.visual, visual])
        self.audio = np.concatenate([self.audio, audio])
        keep = self.size + self.align + self.max_hop_rows  # what the next windows can reach back to
        if len(self.visual) > 2 * keep:
            # Never a row the next window (which ends after run_rows) may start at, however far behind it is.
            needed = max(0, self.run_rows - self.size - self.align)
            drop = min(len(self.visual) - keep, needed - self.base)
            if drop > 0:
                self.visual, self.audio, self.base = self.visual[drop:], self.audio[drop:], self.base + drop

    def row_end(self, rows: int) -> float:
        """Stream seconds of the end of the media behind the first `rows` rows."""
        return (rows - 1) * self.step + self.window if rows else 0.0

    # -- the model -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def window_events(self, end: int) -> list[Event]:
        """The shown events of the window of the trained length ending at row `end` (exclusive): its start on the
        top stride's grid (so points sit where an offline pass puts them), the rows past `end` padding."""
        start = 0 if end <= self.size else -(-(end - self.size) // self.align) * self.align
        lo, hi = start - self.base, end - self.base
        device = self.detector.device

        def cut(x: np.ndarray) -> torch.Tensor:
            part = torch.from_numpy(np.ascontiguousarray(x[lo:hi]))
            return torch.cat([part, part.new_zeros(self.size - len(part), x.shape[1])])[None]  # (1, size, C)

        mask = torch.zeros(1, self.size, dtype=torch.bool)
        mask[0, : hi - lo] = True
        self.model.eval()
        out = self.model(cut(self.audio).to(device), cut(self.visual).to(device), mask.to(device))
        cfg, ckpt = self.detector.checkpoint.postprocess, self.detector.checkpoint
        with torch_threads(1):
            segs, scores, labels = decode_video(out, 0, cfg)
            (events,) = candidates_to_events(
                [(segs + start, scores, labels)], [self.grid], [self.row_end(end)], cfg, ckpt.classes
            )
        return apply_operating_point(events, self.detector.operating_point)

    def _final(self, shown: list[Event], cutoff: float, received: float) -> list[LiveEvent]:
        """The shown events final by `cutoff` and not emitted before, in order of their end."""
        oldest = self.cutoff - self.options.max_late_s
        fresh: list[LiveEvent] = []
        for e in shown:  # by descending score: the stronger of two new overlapping ones wins
            if e.end > cutoff or e.end < oldest:
                continue
            if any(
                k.label_id == e.label_id and span_tiou((k.start, k.end), (e.start, e.end)) > self.duplicate_iou
                for k in (*self.emitted, *fresh)
            ):
                continue
            fresh.append(LiveEvent(e.label, e.label_id, e.start, e.end, e.score, received))
        self.cutoff = max(self.cutoff, cutoff)
        horizon = self.row_end(self.rows) - 2 * (self.size + self.max_hop_rows) * self.step - self.options.max_late_s
        self.emitted = [k for k in self.emitted if k.end >= horizon] + fresh
        self.stats.events += len(fresh)
        return sorted(fresh, key=lambda k: (k.end, k.start))

    def _run(self, end: int, received: float, final: bool = False) -> list[LiveEvent]:
        shown = self.window_events(end)
        self.run_rows = end
        self.stats.windows += 1
        cutoff = self.row_end(end) - (0.0 if final else self.options.margin_s)
        return self._final(shown, cutoff, received)

    # -- the loop --------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[LiveEvent]:
        return self.events()

    def events(self) -> Iterator[LiveEvent]:
        """LiveEvents as they become final; at the stream's end (or `stop()`) the rest. A stream that cannot be
        read raises DecodeError after the events final by then."""
        opts, ext = self.options, self.extractors
        req = LiveRequest(
            fps=ext.media.fps,
            size=ext.media.size,
            sample_rate=ext.media.sample_rate,
            resize=ext.media.resize,
            short_side=ext.media.short_side,
            video=self.modality != "audio",
            audio=self.modality != "visual",
        )
        vrows = LiveVisualRows(ext.visual, req.fps) if req.video else None
        arows = LiveAudioRows(ext.audio, req.sample_rate) if req.audio else None
        media = live_media(
            self.source,
            req,
            stop=self.stop_event,
            realtime=opts.realtime,
            input_format=opts.input_format,
            input_options=opts.input_options,
            retry=RetryPolicy(opts.retries, opts.backoff_s, stall_s=opts.stall_s),
        )
        started, cpu0 = time.monotonic(), _cpu_seconds()
        next_report, window_lag = started + opts.report_every_s, 0.0
        pending_v: list[np.ndarray] = []
        pending_a: list[np.ndarray] = []
        failure: DecodeError | None = None

        def received(backlog: Backlog = Backlog()) -> float:
            """Stream seconds the decoder has delivered: taken so far, plus `backlog` still waiting."""
            got = [vrows.frames / req.fps + backlog.video] if vrows else []
            got += [arows.samples / req.sample_rate + backlog.audio] if arows else []
            return max(got)

        def take_rows() -> None:
            """Move the rows both modalities have into the buffer."""
            nv = sum(map(len, pending_v)) if vrows else None
            na = sum(map(len, pending_a)) if arows else None
            n = min(x for x in (nv, na) if x is not None)
            if not n:
                return
            vis = np.concatenate(pending_v) if vrows else np.zeros((n, 0), np.float32)
            aud = np.concatenate(pending_a) if arows else np.zeros((n, 0), np.float32)
            self._add(vis[:n], aud[:n])
            pending_v[:] = [vis[n:]] if vrows else []
            pending_a[:] = [aud[n:]] if arows else []

        try:
            for kind, data, backlog in media:
                backlog_s = backlog.seconds
                t0 = time.perf_counter()
                with torch_threads(1):  # small per-chunk ops: the feature code runs fastest on one thread
                    if kind == "video" and vrows:
                        pending_v.append(vrows.push(data))
                    elif kind == "audio" and arows:
                        pending_a.append(arows.push(data))
                take_rows()
                due = self.rows - self.run_rows
                fresh: list[LiveEvent] = []
                if due >= self.max_hop_rows or (due >= self.hop_rows and backlog_s < self.step):
                    if backlog_s >= self.step:
                        self.stats.catch_up_windows += 1
                    end = min(self.rows, self.run_rows + self.max_hop_rows) if due > self.max_hop_rows else self.rows
                    fresh = self._run(end, received(backlog))
                self.stats.busy_s += time.perf_counter() - t0
                lag = received(backlog) - self.row_end(self.run_rows)  # row_end(0) = 0: nothing through yet
                self.stats.lag_s, self.stats.max_lag_s = lag, max(self.stats.max_lag_s, lag)
                window_lag = max(window_lag, lag)
                yield from fresh
                if time.monotonic() >= next_report:
                    self._report(window_lag, received())
                    next_report, window_lag = time.monotonic() + opts.report_every_s, 0.0
        except DecodeError as err:  # the events final so far still come out, then the error
            failure = err
        finally:
            media.close()  # ffmpeg ends here too when the consumer stops iterating early
        self.stats.stopped = self.stop_event.is_set()
        # The stream has ended (or was stopped): the rows left, then every shown event is final.
        t0 = time.perf_counter()
        seconds = received()
        n = total_rows(seconds, self.window, self.step) if seconds > 0 else 0
        with torch_threads(1):
            if vrows:
                pending_v.append(vrows.finish(n))
            if arows:
                pending_a.append(arows.finish(n))
        take_rows()
        fresh = []
        while self.rows - self.run_rows > self.max_hop_rows:  # cover every row before the last window
            fresh += self._run(self.run_rows + self.max_hop_rows, seconds)
        if self.rows:
            fresh += self._run(self.rows, seconds, final=True)
        self.stats.busy_s += time.perf_counter() - t0
        self.stats.stream_s, self.stats.rows = seconds, self.rows
        self.stats.wall_s, self.stats.cpu_s = time.monotonic() - started, _cpu_seconds() - cpu0
        self.stats.lag_s = 0.0
        yield from sorted(fresh, key=lambda k: (k.end, k.start))
        if failure is not None:
            raise failure

    def _report(self, lag: float, stream_s: float) -> None:
        """The once-per-interval lag line: a warning while the model falls behind."""
        behind = lag > self.options.hop_s + self.window + self.options.behind_s
        rtf = self.stats.busy_s / stream_s if stream_s else 0.0
        log.log(
            logging.WARNING if behind else logging.INFO,
            "%s: %s at %.1f s of stream: lag %.1f s (max over the last %.0f s), real-time factor %.2f, "
            "%d windows (%d while media waited); no rows dropped",
            self.source,
            "falling behind" if behind else "keeping up",
            stream_s,
            lag,
            self.options.report_every_s,
            rtf,
            self.stats.windows,
            self.stats.catch_up_windows,
        )


def _install_stop(stream: LiveStream) -> Callable[[], None]:
    """SIGINT and SIGTERM stop the stream (what is final is still emitted); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, lambda *_: stream.stop())

    def undo() -> None:
        for sig, handler in before.items():
            signal.signal(sig, handler)

    return undo


def run_live(
    detector: Detector,
    source: str,
    options: LiveOptions | None = None,
    *,
    on_event: Callable[[LiveEvent], None] | None = None,
    out: Path | None = None,
    stats_path: Path | None = None,
) -> LiveStats:
    """`avdet live`: the events of SOURCE to `on_event` as they become final and, with `out`, into an SRT, WebVTT
    or JSON file rewritten atomically after every event (valid whenever it is read). SIGINT / SIGTERM end the
    stream: the events final by then are emitted and written, and the stats returned. A stream that cannot be read
    raises DecodeError after that."""
    stream = LiveStream(detector, source, options)
    if out is not None:  # refuse a bad output path before the stream starts
        _write(out, [], stream, 0.0)
    undo = _install_stop(stream)
    emitted: list[LiveEvent] = []
    try:
        for ev in stream:
            emitted.append(ev)
            if on_event is not None:
                on_event(ev)
            if out is not None:
                _write(out, emitted, stream, ev.emitted_at)
    finally:
        undo()
        if out is not None:
            _write(out, emitted, stream, stream.stats.stream_s)
        if stats_path is not None:
            write_text_atomic(stats_path, json.dumps(stream.stats.as_dict(), indent=2) + "\n")
    return stream.stats


def _write(out: Path, events: list[LiveEvent], stream: LiveStream, duration: float) -> None:
    ckpt = stream.detector.checkpoint
    write_events_file(
        out,
        [replace(e.event()) for e in events],
        video=stream.source,
        duration=max([duration, *(e.end for e in events)]),
        model=ckpt.name,
        operating_point=stream.detector.operating_point.record(ckpt.classes),
    )
