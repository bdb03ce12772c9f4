"""Media decoding through the system ffmpeg (ffmpeg-python builds argument lists; no shell), decord optional.

Every failure is a `DecodeError(path, reason)` whose reason is one line. A file without an audio stream is normal
(silence); a file without a video stream is not a video.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ffmpeg
import numpy as np

from avdet.errors import AvdetError, DecodeError

log = logging.getLogger(__name__)

# One line for every place that finds ffmpeg missing: what to run on the common systems.
FFMPEG_INSTALL = (
    "install it with `sudo apt-get install ffmpeg` (Debian/Ubuntu), `brew install ffmpeg` (macOS) or "
    "`conda install -c conda-forge ffmpeg`"
)


class FFmpegMissingError(AvdetError):
    """ffmpeg or ffprobe is not on PATH: the whole command stops (one line), no video is marked failed."""


def require_ffmpeg() -> None:
    """Raise `FFmpegMissingError` (one line with the install command) unless ffmpeg and ffprobe are on PATH."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise FFmpegMissingError(f"{' and '.join(missing)} not found on PATH: {FFMPEG_INSTALL}")


Backend = Literal["ffmpeg", "decord"]
ResizeMode = Literal["stretch", "short_side_crop"]
VIDEO_SUFFIXES = {
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".ts",
    ".3gp",
}


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration: float  # seconds
    has_video: bool
    has_audio: bool
    fps: float  # native average frame rate (0 when unknown)
    width: int  # as displayed, i.e. after rotation
    height: int
    rotation: int  # degrees the player rotates the stored frames
    video_codec: str
    num_frames: int  # from the container (0 when it does not say)
    audio_rate: int
    audio_channels: int


def _last_line(text: str, path: str | Path | None = None) -> str:
    """ffmpeg's last stderr line, without the file name it starts with (the message names the file once)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "unknown ffmpeg error"
    if path is not None:
        for prefix in (media_url(path), os.path.abspath(path), str(path)):
            line = line.removeprefix(f"{prefix}: ")
    return line


def check_media_file(path: str | Path) -> None:
    """A regular, non-empty file, checked before anything opens it: opening a named pipe blocks forever, and a
    looping symlink or a device is no video."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DecodeError(path, "no such file") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DecodeError(path, "symbolic link loop") from None
        raise DecodeError(path, f"cannot read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = {stat.S_ISFIFO: "a named pipe", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
        found = next((name for test, name in kind.items() if test(mode)), "a folder" if stat.S_ISDIR(mode) else "")
        raise DecodeError(path, f"not a regular file{f' ({found})' if found else ''}")
    if os.stat(path).st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb"):  # readable by this user (permissions, a file on a vanished mount): one line per file
            pass
    except OSError as err:
        raise DecodeError(path, f"cannot read ({err.strerror or err})") from None


def media_url(path: str | Path) -> str:
    """The path as ffmpeg/ffprobe must get it: `file:` + absolute path, so a name such as `-x.mp4`, `-` or
    `concat:x.mp4` is never read as an option, stdin or a protocol."""
    return "file:" + os.path.abspath(path)


# More decode errors than this in one stream and the file is refused as corrupt (fewer: a warning).
MAX_DECODE_ERRORS = 100


def _rate(text: str | None) -> float:
    if not text or text in {"0/0", "0"}:
        return 0.0
    num, _, den = text.partition("/")
    return float(num) / float(den or 1) if float(den or 1) else 0.0


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(round(-float(side["rotation"]))) % 360
    return int(stream.get("tags", {}).get("rotate", 0)) % 360


# ffprobe's container names of single pictures (`image2`: a .jpg/.png/.bmp file; `<codec>_pipe`: a picture read by
# content, whatever its suffix, e.g. a PNG renamed .mp4): a still image has no time, so it is no video
STILL_IMAGE_CONTAINERS = frozenset({"image2", "image2pipe", "webp_pipe", "png_pipe", "jpeg_pipe"})


def probe(path: str | Path) -> MediaInfo:
    """Streams, duration, frame rate and rotation of a media file."""
    path = Path(path)
    check_media_file(path)
    try:
        meta = ffmpeg.probe(media_url(path))
    except ffmpeg.Error as err:
        raise DecodeError(
            path, f"not readable media ({_last_line(err.stderr.decode(errors='replace'), path)})"
        ) from None
    except FileNotFoundError:
        raise DecodeError(path, f"ffprobe not found: {FFMPEG_INSTALL}") from None
    streams = meta.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise DecodeError(path, "no audio or video stream")
    container = str(meta.get("format", {}).get("format_name", ""))
    if audio is None and (container in STILL_IMAGE_CONTAINERS or container.endswith("_pipe")):
        raise DecodeError(path, f"a still image ({container}), not a video")
    durations = [float(x) for x in (meta.get("format", {}).get("duration"), (video or {}).get("duration")) if x]
    duration = durations[0] if durations else 0.0
    rotation = _rotation(video) if video else 0
    width, height = (int(video.get("width", 0)), int(video.get("height", 0))) if video else (0, 0)
    if rotation in (90, 270):
        width, height = height, width
    return MediaInfo(
        path=str(path),
        duration=duration,
        has_video=video is not None,
        has_audio=audio is not None,
        fps=(_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))) if video else 0.0,
        width=width,
        height=height,
        rotation=rotation,
        video_codec=video.get("codec_name", "") if video else "",
        num_frames=int(video.get("nb_frames", 0) or 0) if video else 0,
        audio_rate=int(audio.get("sample_rate", 0)) if audio else 0,
        audio_channels=int(audio.get("channels", 0)) if audio else 0,
    )


def _is_cover_art(stream: dict) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _scale_filters(stream: ffmpeg.nodes.FilterableStream, size: tuple[int, int], resize: ResizeMode, short: int):
    height, width = size
    if resize == "stretch":
        return stream.filter("scale", width, height, flags="bilinear")
    # Short side to `short` (bilinear), then the centre `size` crop: the I3D recipe.
    scaled = stream.filter(
        "scale",
        f"if(lt(iw,ih),{short},-2)",
        f"if(lt(iw,ih),-2,{short})",
        flags="bilinear",
    )
    return scaled.filter("crop", width, height)


def _run_pipe(
    path: Path, args: list[str], frame_bytes: int, frames_per_chunk: int, problems: list[str] | None = None
) -> Iterator[bytearray]:
    """Run ffmpeg, yield stdout in whole frames; raise DecodeError on a non-zero exit (stderr kept in a file).

    ffmpeg runs at `-loglevel error`, so every stderr line of a successful run is a decode error: they are
    appended to `problems`, and more than MAX_DECODE_ERRORS refuse the file."""
    with tempfile.TemporaryFile() as errfile:
        try:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise DecodeError(path, f"ffmpeg not found: {FFMPEG_INSTALL}") from None
        assert proc.stdout is not None
        try:
            while True:
                # A fresh writable buffer per chunk: numpy/torch views of it need no copy.
                buf = bytearray(frame_bytes * frames_per_chunk)
                view, got = memoryview(buf), 0
                while got < len(buf):
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                whole = got - got % frame_bytes
                if whole:
                    yield buf[:whole] if whole < len(buf) else buf
                if got < len(buf):
                    break
        finally:
            proc.stdout.close()
            code = proc.wait()
        errfile.seek(0)
        stderr = errfile.read().decode(errors="replace")
        if code != 0:
            raise DecodeError(path, f"ffmpeg failed ({_last_line(stderr, path)})")
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().startswith("Last message")]
        if len(lines) > MAX_DECODE_ERRORS:
            raise DecodeError(path, f"corrupt: {len(lines)} decode errors (first: {lines[0][:120]})")
        if problems is not None:
            problems.extend(lines)


def read_frames(
    path: str | Path,
    fps: float,
    size: tuple[int, int],
    *,
    resize: ResizeMode = "stretch",
    short_side: int = 256,
    chunk: int = 64,
    backend: Backend = "ffmpeg",
    problems: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """RGB frames resampled to `fps` and resized to `size` = (height, width), as uint8 chunks (n, H, W, 3).

    Streams: memory holds one chunk, whatever the video's length. decord is used only when asked and able
    (not for rotated videos or codecs it cannot open); it selects the same frames as ffmpeg's fps filter.
    """
    path = Path(path)
    info = probe(path)
    if not info.has_video:
        raise DecodeError(path, "no video stream (audio-only file)")
    if backend == "decord":
        frames = _decord_frames(path, info, fps, size, resize, short_side, chunk)
        if frames is not None:
            yield from frames
            return
    height, width = size
    stream = ffmpeg.input(media_url(path)).video.filter("fps", fps=fps)
    stream = _scale_filters(stream, size, resize, short_side)
    args = (
        ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **{"fps_mode": "passthrough"})
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .compile()
    )
    frame_bytes = height * width * 3
    got = 0
    for buf in _run_pipe(path, args, frame_bytes, chunk, problems):
        arr = np.frombuffer(buf, dtype=np.uint8).reshape(-1, height, width, 3)  # (n, H, W, 3)
        got += len(arr)
        yield arr
    if got == 0:
        raise DecodeError(path, "no decodable video frames")


def _select_like_fps_filter(src_times: np.ndarray, fps: float, end_time: float) -> np.ndarray:
    """Indices of source frames that ffmpeg's fps filter (round=near) emits for output slots 0, 1, ...

    `src_times` are the source frames' start times; the output runs until the end of the last frame.
    """
    slots = np.floor(src_times * fps + 0.5).astype(np.int64)
    end_slot = max(int(math.floor(end_time * fps + 0.5)), 1)
    out = np.searchsorted(slots, np.arange(end_slot), side="right") - 1  # last source frame at or before a slot
    first = int(np.searchsorted(slots, slots[0]))
    return np.where(out < 0, first, out)


def _decord_frames(
    path: Path, info: MediaInfo, fps: float, size: tuple[int, int], resize: ResizeMode, short: int, chunk: int
) -> Iterator[np.ndarray] | None:
    try:
        import decord
    except ImportError:
        log.warning("decord is not installed (pip install 'avdet[decord]'); using ffmpeg")
        return None
    if info.rotation:
        log.info("%s: rotated video; decord does not rotate, using ffmpeg", path)
        return None
    height, width = size
    if resize == "stretch":
        target = (width, height)
    else:
        scale = short / min(info.width, info.height)
        target = (round(info.width * scale), round(info.height * scale))
    try:
        reader = decord.VideoReader(os.path.abspath(path), width=target[0], height=target[1], num_threads=1)
        stamps = reader.get_frame_timestamp(range(len(reader)))  # (N, 2) start, end seconds
    except Exception as err:  # decord raises its own DECORDError or RuntimeError for unknown codecs (AV1)
        log.info("%s: decord cannot open it (%s); using ffmpeg", path, str(err).splitlines()[0][:120])
        return None
    indices = _select_like_fps_filter(stamps[:, 0], fps, float(stamps[-1, 1]))

    def gen() -> Iterator[np.ndarray]:
        for i in range(0, len(indices), chunk):
            batch = reader.get_batch(indices[i : i + chunk].tolist()).asnumpy()  # (n, h, w, 3)
            if resize != "stretch":
                top, left = (batch.shape[1] - height) // 2, (batch.shape[2] - width) // 2
                batch = batch[:, top : top + height, left : left + width]
            yield np.ascontiguousarray(batch)

    return gen()


AUDIO_CHUNK_S = 10.0  # seconds of audio per decoded chunk


def stream_audio(
    path: str | Path,
    sample_rate: int,
    *,
    info: MediaInfo | None = None,
    chunk_s: float = AUDIO_CHUNK_S,
    problems: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """The mono float32 waveform at `sample_rate` as consecutive chunks of about `chunk_s` seconds (memory holds
    one chunk); zeros for the file's duration when it has no audio stream. ffmpeg's decode errors go to
    `problems`.

    The one downmix rule everywhere: the mean of all channels, done here (not by ffmpeg's -ac, whose matrix
    differs from other decoders' by 3 dB), so training and inference hear the same thing.
    """
    path = Path(path)
    info = info or probe(path)
    per_chunk = max(1, int(round(chunk_s * sample_rate)))
    if not info.has_audio:
        total = max(1, int(round(info.duration * sample_rate)))
        for start in range(0, total, per_chunk):
            yield np.zeros(min(per_chunk, total - start), dtype=np.float32)
        return
    channels = max(1, info.audio_channels)
    args = (
        ffmpeg.input(media_url(path))
        .audio.output("pipe:", format="f32le", acodec="pcm_f32le", ar=sample_rate, ac=channels)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .compile()
    )
    got = 0
    for buf in _run_pipe(path, args, 4 * channels, per_chunk, problems):
        interleaved = np.frombuffer(buf, dtype=np.float32).reshape(-1, channels)  # (samples, channels)
        got += len(interleaved)
        yield interleaved.mean(axis=1, dtype=np.float32)
    if not got:
        raise DecodeError(path, "audio stream has no decodable samples")


def load_audio(
    path: str | Path, sample_rate: int, *, info: MediaInfo | None = None, problems: list[str] | None = None
) -> np.ndarray:
    """The whole mono float32 waveform at `sample_rate` (`stream_audio`'s chunks joined)."""
    return np.concatenate(list(stream_audio(path, sample_rate, info=info, problems=problems)))


def expand_videos(inputs: list[str | Path]) -> list[Path]:
    """Files as given; directories expand to their video files (by suffix), sorted, recursively."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES))
        else:
            out.append(p)
    return out


def video_id(path: str | Path) -> str:
    """The id of a video file: its name without the suffix (UnAV-100 ids may start with '-' or '_')."""
    return Path(path).stem
