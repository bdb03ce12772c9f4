"""Incremental decoding of a live SOURCE for `avdet live`: one ffmpeg process writes raw RGB frames to one pipe and
mono-able float32 samples to another while the stream plays; reader threads hand them over as they arrive.

SOURCE is anything ffmpeg reads as a stream: a file (played at its own speed with -re by default), `-` (standard
input), a network URL (udp, rtp, rtsp, rtmp, http(s), tcp, srt) or a capture device (`input_format`, e.g. v4l2).
A network stream that ends, fails or stalls is retried with a doubling back-off, a bounded number of times, and
every drop and return is logged; files and pipes end at their end.

The frames go through the same filters as `media.read_frames` (fps, then scale) and the samples through the same
resampling as `media.stream_audio`, so a file decoded live gives the offline frames and samples. One difference:
the downmix. Offline reads the probed channel count and averages all channels; a stream cannot be probed before it
plays, so ffmpeg delivers two channels and they are averaged (exact for mono and stereo sources).
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from avdet.errors import DecodeError
from avdet.pipeline.io.media import _last_line, media_url

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("udp", "rtp", "rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "srt", "mms", "hls")
STEREO = 2  # channels ffmpeg delivers; averaged here (see the module docstring)
READ_BYTES = 1 << 16  # one os.read: whatever the pipe holds, up to this
NETWORK_PROBE_US = 500_000  # how much of a network stream ffmpeg analyses before decoding (its default: 5 s)
START_GRACE_S = 2.0  # a reconnection's first data may take this much longer than the stall timeout
POLL_S = 0.05  # how often the consumer looks at the stop flag and the stall clock
IDLE = np.zeros(0, np.float32)  # the data of an ("idle", ...) item: POLL_S passed without any


@dataclass(frozen=True)
class LiveRequest:
    """What the extractors need from the decoder: frames at `fps` resized to `size` (height, width), samples at
    `sample_rate`; `video` / `audio` False for a unimodal model (that stream is not decoded)."""

    fps: float
    size: tuple[int, int]
    sample_rate: int
    resize: str = "stretch"
    short_side: int = 256
    video: bool = True
    audio: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    """A dropped network stream: `retries` attempts (0: none), waiting `backoff_s`, then twice as long each time up
    to `backoff_max_s`; a stream that has delivered and then delivers nothing for `stall_s` seconds counts as
    dropped (before the first data it is awaited: a broadcast that has not begun). The count starts again once
    data flows."""

    retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    stall_s: float = 10.0

    def wait(self, attempt: int) -> float:
        """Seconds before retry `attempt` (1-based)."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))


def is_network(source: str) -> bool:
    """A URL of a protocol that can drop and come back (files, pipes and devices end at their end)."""
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in NETWORK_SCHEMES


def input_args(source: str, realtime: bool | None, input_format: str | None, options: dict[str, str]) -> list[str]:
    """ffmpeg's input arguments for SOURCE: `-` is standard input, a URL or device goes as given, anything else is
    a file (named `file:` + absolute path, so no name is read as an option or protocol; -re unless realtime is
    False). The file must exist: a one-line DecodeError otherwise."""
    args: list[str] = []
    if source == "-":
        url = "pipe:0"
    elif "://" in source or input_format is not None:
        url = source
    else:
        if not Path(source).exists():
            raise DecodeError(source, "no such file (a live source is a file, -, a URL or a device with --format)")
        url = media_url(source)
        if realtime is None:
            realtime = True
    if realtime:
        args.append("-re")
    if input_format is not None:
        args += ["-f", input_format]
    if is_network(source):  # ffmpeg probes 5 s of a stream before its first frame by default: a 5 s delay
        options = {"analyzeduration": str(NETWORK_PROBE_US), **options}
    for key, value in options.items():
        args += [f"-{key}", str(value)]
    return [*args, "-i", url]


def _video_filter(req: LiveRequest) -> str:
    """The filter chain of `media.read_frames` (fps, then scale bilinear; crop after a short-side scale)."""
    height, width = req.size
    if req.resize == "stretch":
        scale = f"scale={width}:{height}:flags=bilinear"
    else:
        short = req.short_side
        scale = (
            f"scale=if(lt(iw\\,ih)\\,{short}\\,-2):if(lt(iw\\,ih)\\,-2\\,{short}):flags=bilinear,crop={width}:{height}"
        )
    return f"fps=fps={req.fps},{scale}"


def ffmpeg_args(inputs: list[str], req: LiveRequest, video_fd: int | None, audio_fd: int | None) -> list[str]:
    """One ffmpeg decoding the input into raw RGB frames on `video_fd` and f32le samples on `audio_fd`."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *inputs]
    if video_fd is not None:
        args += ["-map", "0:v:0", "-vf", _video_filter(req), "-f", "rawvideo", "-pix_fmt", "rgb24"]
        args += ["-fps_mode", "passthrough", f"pipe:{video_fd}"]
    if audio_fd is not None:
        args += ["-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-ar", str(req.sample_rate)]
        args += ["-ac", str(STEREO), f"pipe:{audio_fd}"]
    return args


class Backlog(NamedTuple):
    """Stream seconds decoded and waiting for the consumer, per kind."""

    video: float = 0.0
    audio: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.video, self.audio)


class _Decoder:
    """One ffmpeg run: reader threads put ("video", frames (n, H, W, 3) uint8) / ("audio", samples (n,) float32) /
    ("eof", kind) on `items` as the pipes deliver them."""

    def __init__(self, inputs: list[str], req: LiveRequest, with_audio: bool) -> None:
        self.items: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.req = req
        self.last_data = time.monotonic()
        self.queued = {"video": 0, "audio": 0}  # frames / samples put on `items`, not yet taken
        fds: dict[str, tuple[int, int]] = {}
        if req.video:
            fds["video"] = os.pipe()
        if req.audio and with_audio:
            fds["audio"] = os.pipe()
        write_ends = {kind: w for kind, (_, w) in fds.items()}
        args = ffmpeg_args(inputs, req, write_ends.get("video"), write_ends.get("audio"))
        stdin = None if inputs[-1] == "pipe:0" else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=tuple(write_ends.values()),
                start_new_session=True,  # a terminal's Ctrl-C reaches avdet only; it ends ffmpeg after the final events
            )
        except FileNotFoundError:
            for r, w in fds.values():
                os.close(r)
                os.close(w)
            raise DecodeError(inputs[-1], "ffmpeg not found: install ffmpeg (apt-get install ffmpeg)") from None
        for w in write_ends.values():
            os.close(w)  # the child holds them; EOF reaches the readers when it exits
        frame_bytes = req.size[0] * req.size[1] * 3
        self.threads = [threading.Thread(target=self._stderr, daemon=True)]
        self.stderr_lines: list[str] = []
        for kind, (r, _) in fds.items():
            unit = frame_bytes if kind == "video" else 4 * STEREO
            self.threads.append(threading.Thread(target=self._read, args=(kind, r, unit, req.size), daemon=True))
        self.open = set(fds)
        for t in self.threads:
            t.start()

    def _stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode(errors="replace").rstrip())

    def _read(self, kind: str, fd: int, unit: int, size: tuple[int, int]) -> None:
        """Whole frames (or sample pairs) as soon as they are complete: no waiting for a chunk to fill."""
        pending = b""
        try:
            while chunk := os.read(fd, READ_BYTES):
                data = pending + chunk
                whole = len(data) - len(data) % unit
                pending = data[whole:]
                if not whole:
                    continue
                self.last_data = time.monotonic()
                if kind == "video":
                    item = np.frombuffer(data[:whole], np.uint8).reshape(-1, *size, 3)  # (n, H, W, 3)
                else:
                    pairs = np.frombuffer(data[:whole], np.float32).reshape(-1, STEREO)  # (n, channels)
                    item = pairs.mean(axis=1, dtype=np.float32)
                with self.lock:
                    self.queued[kind] += len(item)
                self.items.put((kind, item))
        finally:
            os.close(fd)
            self.items.put(("eof", kind))

    def stop(self) -> None:
        """End ffmpeg (terminate, then kill) and its readers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.threads:
            t.join(timeout=2)

    def take(self, kind: str, data: np.ndarray) -> Backlog:
        """Mark an item taken; the stream seconds of each kind still waiting on the queue after it."""
        with self.lock:
            self.queued[kind] -= len(data)
            return Backlog(self.queued["video"] / self.req.fps, self.queued["audio"] / self.req.sample_rate)

    def unmatched(self, spec: str) -> bool:
        """ffmpeg refused to start because the input has no stream `spec` (e.g. "0:a:0": no audio)."""
        return any(spec in line and "matches no streams" in line for line in self.stderr_lines)

    def failure(self) -> str | None:
        """ffmpeg's last error line when it failed, else None."""
        code = self.proc.wait()
        for t in self.threads[:1]:
            t.join(timeout=2)
        if code == 0:
            return None
        return _last_line("\n".join(self.stderr_lines)) if self.stderr_lines else f"ffmpeg exited with status {code}"


class Aligner:
    """Keeps the two streams on one clock across reconnections: after a drop, the one that received less is
    padded (silence, or the last frame repeated) up to the other, so rows of both modalities stay aligned."""

    def __init__(self, req: LiveRequest) -> None:
        self.req = req
        self.frames = 0
        self.samples = 0
        self.last_frame: np.ndarray | None = None

    def count(self, kind: str, data: np.ndarray) -> None:
        if kind == "video":
            self.frames += len(data)
            self.last_frame = data[-1]
        else:
            self.samples += len(data)

    def seconds(self) -> float:
        """Media seconds received (the stream that got further)."""
        return max(self.frames / self.req.fps, self.samples / self.req.sample_rate)

    def padding(self) -> list[tuple[str, np.ndarray]]:
        """What brings the shorter stream level with the longer one."""
        out: list[tuple[str, np.ndarray]] = []
        target = self.seconds()
        if self.req.audio and (missing := int(round(target * self.req.sample_rate)) - self.samples) > 0:
            out.append(("audio", np.zeros(missing, np.float32)))
        if self.req.video and (missing := int(round(target * self.req.fps)) - self.frames) > 0:
            frame = self.last_frame if self.last_frame is not None else np.zeros((*self.req.size, 3), np.uint8)
            out.append(("video", np.repeat(frame[None], missing, axis=0)))
        for kind, data in out:
            self.count(kind, data)
        return out


def live_media(
    source: str,
    req: LiveRequest,
    *,
    stop: threading.Event,
    realtime: bool | None = None,
    input_format: str | None = None,
    input_options: dict[str, str] | None = None,
    retry: RetryPolicy | None = None,
) -> Iterator[tuple[str, np.ndarray, Backlog]]:
    """("video", frames (n, H, W, 3) uint8) and ("audio", mono samples (n,) float32) as the stream delivers them,
    and ("idle", empty, Backlog()) after every POLL_S without any; each with the stream seconds already decoded
    and waiting behind it (the consumer's backlog),
    until it ends or `stop` is set (then what has arrived is still yielded). A source without an audio stream gets
    silence in step with its frames (as offline). A network stream that fails, ends or stalls is retried per
    `retry`; a DecodeError when it cannot be read (a file or pipe that fails, retries exhausted)."""
    retry = retry or RetryPolicy()
    inputs = input_args(source, realtime, input_format, input_options or {})
    network = is_network(source)
    align = Aligner(req)
    with_audio = req.audio
    attempt = 0
    flowed = False  # data has arrived at some point
    while True:
        dec = _Decoder(inputs, req, with_audio)
        got_data = stalled = False
        try:
            while dec.open and not stop.is_set():
                try:
                    kind, data = dec.items.get(timeout=POLL_S)
                except queue.Empty:
                    yield "idle", IDLE, Backlog()  # nothing new: the consumer's clock (lag reports) still runs
                    if stop.is_set():
                        break
                    # A stall is a drop once the stream has delivered (before that: waiting for a broadcast).
                    # A new connection gets START_GRACE_S more for ffmpeg's start and probe.
                    silent = time.monotonic() - dec.last_data
                    if network and flowed and silent > retry.stall_s + (0.0 if got_data else START_GRACE_S):
                        stalled = True
                        break
                    continue
                if kind == "eof":
                    dec.open.discard(data)
                    continue
                if not got_data and attempt:
                    log.warning("%s: stream back after %d retries", source, attempt)
                got_data, flowed, attempt = True, True, 0
                align.count(kind, data)
                yield kind, data, dec.take(kind, data)
                if kind == "video" and not with_audio and req.audio:  # no audio stream: silence in step
                    yield from ((k, d, Backlog()) for k, d in align.padding())
        finally:
            dec.stop()
        while not dec.items.empty():  # what arrived before the stop or the stall
            kind, data = dec.items.get()
            if kind != "eof":
                align.count(kind, data)
                yield kind, data, dec.take(kind, data)
        if stop.is_set():
            return
        reason = f"no data for {retry.stall_s:.1f} s" if stalled else dec.failure()
        if with_audio and dec.unmatched("0:a:0"):
            log.info("%s: no audio stream; silence in its place", source)
            with_audio = False
            continue
        if dec.unmatched("0:v:0"):
            raise DecodeError(source, "no video stream (audio-only source)")
        if not network:
            if reason:
                raise DecodeError(source, f"ffmpeg failed ({reason})")
            if not align.frames and not align.samples:
                raise DecodeError(source, "no decodable audio or video")
            return
        yield from ((k, d, Backlog()) for k, d in align.padding())
        attempt += 1
        if attempt > retry.retries:
            raise DecodeError(source, f"stream lost ({reason or 'ended'}); gave up after {retry.retries} retries")
        wait = retry.wait(attempt)
        log.warning(
            "%s: stream dropped (%s); retry %d of %d in %.1f s", source, reason or "ended", attempt, retry.retries, wait
        )
        if stop.wait(wait):
            return
