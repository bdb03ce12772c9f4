"""Feature extraction of a long video: peak memory and time of the audio and visual halves of `lite`.

    .venv/bin/python benchmarks/bench_long_extract.py [--minutes 180] [--clip FILE] [--parts visual ...]

Generates a long low-resolution clip with ffmpeg's lavfi sources (128x72 at 8 fps, a 16 kHz tone; about 1 minute
for 3 hours) in a temp dir, or at `--clip FILE` (kept, and reused when it exists: rerun without regenerating), then
runs each part in its own process under `/usr/bin/time` (peak resident memory):

    audio, whole track:  media.load_audio + one extractor call (what extraction did before streaming)
    audio, streamed:     media.stream_audio + extract.streamed_audio_features (what `compute_features` does now)
    visual:              the lite visual extractor over media.read_frames (streamed frames and state)
    both:                extract.compute_features, what `avdet extract` runs on a video (visual, then audio)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = {
    "audio, whole track": (
        "s = media.load_audio(p, r.sample_rate, info=i); f = x.audio(AudioInput(s, r.sample_rate, i.duration))"
    ),
    "audio, streamed": (
        "f = streamed_audio_features(media.stream_audio(p, r.sample_rate, info=i), x.audio, r.sample_rate, i.duration)"
    ),
    "visual": "f = x.visual(VisualInput(media.read_frames(p, r.fps, r.size, resize=r.resize), r.fps, i.duration))",
    "both": "f = compute_features(p, x)",
}
SETUP = (
    "import sys, torch; torch.set_num_threads(1)\n"
    "from avdet.extractors.base import AudioInput, VisualInput\n"
    "from avdet.pipeline.extract import ExtractOptions, compute_features, streamed_audio_features\n"
    "from avdet.pipeline.io import media\n"
    "x = ExtractOptions().build(); r = x.media; p = sys.argv[1]; i = media.probe(p)\n"
)


def make_long_clip(path: Path, minutes: float) -> None:
    src_v = "testsrc=size=128x72:rate=8"
    src_a = "sine=frequency=440:sample_rate=16000"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src_v, "-f", "lavfi", "-i", src_a]
    cmd += ["-t", str(minutes * 60), "-c:v", "libx264", "-preset", "ultrafast", "-g", "240"]
    cmd += ["-c:a", "aac", "-b:a", "32k", "-ac", "1", str(path)]
    subprocess.run(cmd, check=True)


def clip_minutes(clip: Path) -> float:
    """The clip's duration in minutes (a reused clip may not be `--minutes` long)."""
    cmd = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(clip)]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout) / 60


def measure(code: str, clip: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process running SETUP + code on the clip."""
    t0 = time.perf_counter()
    res = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-c", SETUP + code, str(clip)], capture_output=True, text=True
    )
    if res.returncode != 0:
        return float("nan"), float("nan")  # e.g. killed for memory
    return time.perf_counter() - t0, int(re.findall(r"^(\d+)$", res.stderr, re.M)[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=180)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--clip", type=Path, help="the clip to use: made there (and kept) unless it exists")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avdet-long-extract-") as tmp:
        clip = args.clip or Path(tmp) / "long.mp4"
        if not clip.exists():
            make_long_clip(clip, args.minutes)
        print(f"lite extraction of a {clip_minutes(clip):.0f}-minute clip ({clip}), one process per part, 1 thread")
        for name in args.parts:
            wall, peak = measure(PARTS[name], clip)
            load = os.getloadavg()[0]
            print(f"  {name:20s} {wall:8.1f} s  peak RSS {peak:7.0f} MB  [load {load:.1f} on {os.cpu_count()} CPUs]")


if __name__ == "__main__":
    main()
