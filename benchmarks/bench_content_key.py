"""What a content-exact cache key costs: SHA-256 of every byte of a video against decoding the same video.

    python benchmarks/bench_content_key.py                # a generated 60 s 640x360 H.264 clip
    python benchmarks/bench_content_key.py VIDEO [VIDEO]  # your own videos

For each video: the seconds to hash it (`fingerprint`, read from the page cache: the file was just read), a remembered
key (`FeatureStore.content_key` of an unchanged file: one stat, three 64 KiB reads, one index lookup), ffmpeg
decoding every frame with one thread (`-f null`), and `extract` of lite features (decode + features, one torch
thread). Each timing is the best of `--repeat` runs, so other load on the machine inflates it least.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_clip(path: Path, seconds: int) -> Path:
    subprocess.run(
        ["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         f"testsrc2=size=640x360:rate=25:duration={seconds}", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-c:v", "libx264", "-preset", "veryfast",
         "-b:v", "2M", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    from avdet.pipeline.extract import ExtractOptions, compute_features
    from avdet.pipeline.io.store import FeatureStore, fingerprint

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="avdet-bench-key-"))
    videos = args.videos or [make_clip(work / "clip60.mp4", 60)]
    store = FeatureStore(work / "cache")
    extractors = ExtractOptions().build()
    load = os.getloadavg()[0]
    print(f"| video | MB | hash s (MB/s) | remembered key ms | ffmpeg decode s | lite extract s | hash / decode | "
          f"hash / extract |\n|{' --- |' * 8}")  # fmt: skip
    for video in videos:
        mb = video.stat().st_size / 1e6
        fingerprint(video)  # into the page cache, as extract finds a file it is about to decode
        hashed = best_of(lambda v=video: fingerprint(v), args.repeat)
        st = video.stat()
        time.sleep(max(0.0, max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 + 2.5 - time.time()))  # past the racy window
        store.content_key(video)
        remembered = best_of(lambda v=video: store.content_key(v), args.repeat)
        decode = best_of(
            lambda v=video: subprocess.run(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", str(v), "-f", "null", "-"],
                check=True,
            ),
            args.repeat,
        )
        extract = best_of(lambda v=video: compute_features(v, extractors), max(1, args.repeat - 1))
        print(
            f"| {video.name} | {mb:.1f} | {hashed:.3f} ({mb / hashed:.0f}) | {1000 * remembered:.2f} | {decode:.2f} | "
            f"{extract:.2f} | {100 * hashed / decode:.1f} % | {100 * hashed / extract:.2f} % |"
        )
    print(f"(load average {load:.1f} on {os.cpu_count()} cores when started)")


if __name__ == "__main__":
    main()
