"""Detection of long videos from cached features, as whole `avdet detect` processes: time and peak memory.

    .venv/bin/python benchmarks/bench_long_detect.py [--config tiny] [--minutes 20 60 180] [--threads 1]

For each length it stores random lite-shaped features (0.32 s rows) in a throwaway feature store under a small
stand-in video file, writes a random-weight checkpoint of the config, and runs `python -m avdet detect` on the file
(a cache hit: nothing is decoded), timing the whole process and reading its peak resident memory (`/usr/bin/time`).
The ratio of the longest to the shortest run shows whether detection is linear in video length (windows of the
trained length: time ~ length, memory flat). No reference exists for this row (the references run one global
forward per video and cannot take hours). Run it with another avdet on PYTHONPATH to measure that one.
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

import numpy as np
import torch

from avdet.extractors.base import Features, grid_times
from avdet.models.registry import model_entry
from avdet.pipeline.checkpoint import save_checkpoint
from avdet.pipeline.config import load_config, to_dict
from avdet.pipeline.extract import ExtractOptions
from avdet.pipeline.io.store import FeatureStore, StoredFeatures, fingerprint

STEP, WINDOW = 0.32, 0.96


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def write_checkpoint(path: Path, config: str, spec: dict) -> None:
    cfg = load_config(config)
    mcfg = cfg.model_config()
    torch.manual_seed(0)
    model = model_entry(cfg.model["name"]).model_cls(mcfg)
    meta = {
        "task": "dense",
        "model": {"name": cfg.model["name"], "config": to_dict(mcfg)},
        "classes": [f"class{i}" for i in range(mcfg.num_classes)],
        "extractor": spec,
        "postprocess": to_dict(cfg.postprocess),
        "data": {},
    }
    save_checkpoint(path, {**meta, "epoch": 0, "metrics": {}, "state_dict": model.state_dict()})


def cached_video(folder: Path, store: FeatureStore, spec: dict, minutes: float) -> Path:
    """A stand-in file whose features (random, lite dims) are already in the store."""
    path = folder / f"long_{minutes:g}min.mp4"
    path.write_bytes(f"stand-in for {minutes} minutes of video".encode())
    rows = int((minutes * 60 - WINDOW) / STEP) + 1
    gen = np.random.default_rng(int(minutes))
    times = grid_times(rows, WINDOW, STEP)
    stored = StoredFeatures(
        visual=Features(gen.standard_normal((rows, spec["visual_dim"])).astype(np.float32), times),
        audio=Features(gen.standard_normal((rows, spec["audio_dim"])).astype(np.float32), times),
        duration=minutes * 60,
    )
    store.save(fingerprint(path), store.register_spec(spec), stored)
    return path


def run_detect(video: Path, ckpt: Path, cache: Path, out: Path, threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one whole `avdet detect` process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's default threads; older avdets lack --threads
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "avdet", "detect", str(video)]
    cmd += ["--checkpoint", str(ckpt), "--cache", str(cache), "--out", str(out)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"avdet detect failed on {video.name}: {res.stderr.strip().splitlines()[-1:]}")
    peak_kb = int(re.findall(r"^(\d+)$", res.stderr, re.M)[-1])
    return wall, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--minutes", type=float, nargs="+", default=[20, 60, 180])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="runs per length (minimum time, maximum memory)")
    args = parser.parse_args()
    spec = ExtractOptions().build().spec
    with tempfile.TemporaryDirectory(prefix="avdet-long-") as tmp:
        folder = Path(tmp)
        cache = folder / "cache"
        store = FeatureStore(cache)
        ckpt = folder / "model.ckpt"
        write_checkpoint(ckpt, args.config, spec)
        videos = {m: cached_video(folder, store, spec, m) for m in args.minutes}
        print(f"avdet detect, {args.config} (random weights), cached lite-shaped features, {args.threads} thread(s)")
        results = {}
        for m, video in videos.items():
            runs = [run_detect(video, ckpt, cache, folder / f"{m:g}.json", args.threads) for _ in range(args.repeats)]
            wall, peak = min(r[0] for r in runs), max(r[1] for r in runs)
            results[m] = wall
            rows = int((m * 60 - WINDOW) / STEP) + 1
            print(f"  {m:6g} min ({rows:6d} rows): {wall:7.2f} s whole process, peak RSS {peak:7.0f} MB", end="")
            print(f"  [{load_average()}]")
        first = min(results)
        for m in sorted(results)[1:]:
            ratio = results[m] / results[first]
            print(f"  {m:g} min / {first:g} min: {ratio:.2f}x the time for {m / first:g}x the length")


if __name__ == "__main__":
    main()
