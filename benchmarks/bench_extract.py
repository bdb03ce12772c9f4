"""Extraction speed of the `lite` recipe on a generated 60 s 640x360 clip, against decoding alone.

    .venv/bin/python benchmarks/bench_extract.py [--seconds 60] [--backend ffmpeg|decord]

Prints media seconds per wall second (x real time) for: decoding frames as `lite` asks (12.5 fps, 64x64), decoding
at the I3D request (25 fps, 224x224) for comparison, decoding audio, and the whole `lite` extraction.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from avdet.extractors.registry import build_extractor_set
from avdet.pipeline.extract import compute_features
from avdet.pipeline.io import media


def make_clip(path: Path, seconds: float) -> None:
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=640x360:rate=30:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=44100:duration={seconds}",
            "-ac",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--backend", default="ffmpeg", choices=["ffmpeg", "decord"])
    args = parser.parse_args()
    lite = build_extractor_set("lite")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.seconds)
        req = lite.media
        rows = {
            f"decode frames only ({req.fps:g} fps, {req.size[1]}x{req.size[0]})": lambda: sum(
                len(c) for c in media.read_frames(clip, req.fps, req.size, backend=args.backend)
            ),
            "decode frames only (25 fps, 224x224, the I3D request)": lambda: sum(
                len(c) for c in media.read_frames(clip, 25.0, (224, 224), backend=args.backend)
            ),
            "decode audio only (16 kHz mono)": lambda: media.load_audio(clip, 16000),
            "lite extraction (decode + features, both modalities)": lambda: compute_features(clip, lite, args.backend),
        }
        print(f"clip: {args.seconds:g} s, 640x360 h264 30 fps + AAC stereo; torch threads {torch.get_num_threads()}")
        for name, fn in rows.items():
            wall = timed(fn)
            print(f"{name:58s} {wall:6.2f} s  {args.seconds / wall:7.1f}x real time")


if __name__ == "__main__":
    main()
