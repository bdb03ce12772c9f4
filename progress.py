"""Progress where the time goes, for `avdet extract`, `avdet detect` and `Detector.detect(progress=True)`: one line
counting videos and one following the current video in media seconds with an ETA (a long video no longer sits at
0/1), plus a one-time estimate before a run that will be long on CPU. The library only calls back
(`on_media(path, done_s, total_s)`); everything shown is drawn here, on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Compute seconds per media second on CPU, from benchmarks/bench_extractors.py --seconds 60 (README, performance:
# a 60 s clip took about 72 min on 2 cores, RAFT optical flow three quarters of it). Rough by design: it only has
# to say "minutes" or "hours" before the user commits to the run.
CPU_SECONDS_PER_MEDIA_SECOND = {"i3d_vggish": 72.0}


class VideoProgress:
    """Two lines: `label  [bar]  k/N videos  speed  elapsed  ETA` and, while a video is computed,
    `name  [bar]  12.0/60.0 media-s  elapsed  ETA`. Use as a context manager."""

    def __init__(self, label: str, videos: int, console: Console | None = None, disable: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=disable,
        )
        self.total = videos
        self.videos = self.progress.add_task(escape(label), total=videos, count=f"0/{videos} videos", speed="")
        self.current: TaskID | None = None
        self.current_path: str | None = None
        self.done = 0
        self.media_seconds = 0.0
        self.clock = self.progress.get_time()

    def __enter__(self) -> VideoProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    @property
    def console(self) -> Console:
        return self.progress.console

    def on_media(self, path: str | Path, done: float, total: float) -> None:
        """The library's callback: `done` of `total` media seconds of `path` computed so far."""
        path = str(path)
        if self.current is None or path != self.current_path:
            self._drop_current()
            self.current_path = path
            name = escape(Path(path).name)
            self.current = self.progress.add_task(f"  {name}", total=max(total, 1e-9), count="", speed="")
        self.progress.update(self.current, completed=done, count=f"{done:.1f}/{total:.1f} media-s")

    def video_done(self, media_seconds: float = 0.0) -> None:
        """One more video finished (computed, cached or failed)."""
        self._drop_current()
        self.done += 1
        self.media_seconds += media_seconds
        elapsed = max(self.progress.get_time() - self.clock, 1e-9)
        speed = f"{self.media_seconds / elapsed:.1f} media-s/s" if self.media_seconds else ""
        count = f"{self.done}/{self.total} videos"
        self.progress.update(self.videos, completed=self.done, count=count, speed=speed)

    def _drop_current(self) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current, self.current_path = None, None


def cpu_estimate(extractor: str, device: str, paths: list[Path]) -> str | None:
    """One line before a run that is slow on CPU (`i3d_vggish`): media seconds x the rough cost per media second;
    None when there is nothing to warn about. Probes each file's duration (ffprobe, no decoding)."""
    cost = CPU_SECONDS_PER_MEDIA_SECOND.get(extractor)
    if cost is None or not device.startswith("cpu"):
        return None
    from avdet.errors import AvdetError
    from avdet.pipeline.io import media

    seconds = 0.0
    for p in paths:
        try:
            seconds += media.probe(p).duration
        except AvdetError:
            continue  # the run itself reports the file
    if seconds <= 0:
        return None
    return (
        f"estimate: {extractor} on CPU costs about {cost:.0f} s per media second (2-core benchmark); "
        f"{seconds:.1f} media seconds -> about {duration_text(seconds * cost)} for features not yet cached. "
        "CPU is for checking: use a GPU (--device cuda) for real runs."
    )


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `3.2 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
