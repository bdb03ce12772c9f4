"""Scale-out throughput on this machine: extraction (local workers, Ray), DDP training, batched detection.

    .venv/bin/python benchmarks/bench_scale.py [--videos 16] [--epochs 3] [--work DIR] [--parts extract ray ...]

Generates a sample dataset (make-sample, 6-10 s clips) and prints a Markdown table:
- extraction of the `lite` recipe in media seconds per wall second: 1 and 2 local worker processes, and Ray tasks on
  a local 2-CPU runtime on 127.0.0.1 (timed from submission, after `ray.init`; worker start-up included);
- training steps/s of configs/tiny.yaml (global batch 4) for 1 process and 2 DDP (gloo) processes on CPU;
  timed on rank 0 from the end of the first step to the last (no validation);
- detection throughput (videos/s, features cached) one video per forward pass vs batches of 8.

Training and detection processes use one torch thread (`--threads`), so the rows compare processes, not thread
pools fighting over a shared machine; extraction workers take the default thread policy of `avdet extract`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

PARTS = ("extract", "ray", "train", "detect")


def extraction(videos: list[Path], work: Path, workers: tuple[int, ...] = (1, 2), ray: bool = True) -> dict[str, float]:
    """Media seconds per wall second for 1 and 2 local workers and for Ray (fresh cache each). Local workers take
    the threads `avdet extract --workers N` gives them by default (`pipeline.threads`, named in the row)."""
    from avdet.pipeline.extract import ExtractOptions, extract_videos, extract_videos_ray
    from avdet.pipeline.threads import decide_threads

    rows: dict[str, float] = {}
    for n in workers:
        threads = decide_threads(n)  # what extract_videos decides just below (the load may move in between)
        start = time.perf_counter()
        res = extract_videos(videos, work / f"cache_w{n}", ExtractOptions(), workers=n)
        name = f"extract, {n} local worker{'s' * (n > 1)} x {threads} thread{'s' * (threads > 1)}"
        rows[name] = _media_rate(res, time.perf_counter() - start)
    if not ray:
        return rows
    try:
        import ray
    except ImportError:
        print("ray is not installed: skipping the Ray row (pip install 'avdet[dist]')")
        return rows
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        start = time.perf_counter()
        res = extract_videos_ray(videos, work / "cache_ray", ExtractOptions())
        rows["extract, Ray (2 CPUs)"] = _media_rate(res, time.perf_counter() - start)
    finally:
        ray.shutdown()
    return rows


def _media_rate(results: list, wall: float) -> float:
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"extraction failed: {failed[0].path}: {failed[0].reason}")
    return sum(r.media_seconds for r in results) / wall


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, overrides: list[str], run_dir: str, threads: int) -> None:
    """One training process; rank 0 writes the times of its steps to run_dir/steps.json."""
    if world > 1:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            GLOO_SOCKET_IFNAME="lo",
        )
    torch.set_num_threads(threads)
    from avdet.pipeline.config import load_config
    from avdet.pipeline.train import Reporter, train

    stamps: list[float] = []
    train(
        load_config("tiny", overrides),
        Path(run_dir),
        overwrite=True,
        reporter=Reporter(step=lambda s, _: stamps.append(time.time())),
    )
    if rank == 0:
        Path(run_dir, "steps.json").write_text(json.dumps(stamps))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def training(sample: Path, cache: Path, epochs: int, work: Path, threads: int) -> dict[str, float]:
    """Steps/s of the tiny config with 1 and 2 processes (global batch 4 either way)."""
    overrides = [
        f"data.annotations={sample / 'annotations.json'}",
        f"data.classes={sample / 'classes.tsv'}",
        f"data.cache={cache}",
        "train.device=cpu",
        f"train.epochs={epochs}",
        "train.warmup_epochs=1",
        f"train.eval_start={epochs}",  # one validation, after the last timed step (1 warm-up + epochs - 1)
    ]
    ctx = multiprocessing.get_context("spawn")
    rows = {}
    for world in (1, 2):
        run_dir = work / f"run_{world}"
        port = _free_port()
        procs = [
            ctx.Process(target=_rank_main, args=(r, world, port, overrides, str(run_dir), threads))
            for r in range(world)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"training with {world} process(es) failed: exit codes {[p.exitcode for p in procs]}")
        stamps = json.loads((run_dir / "steps.json").read_text())
        rows[f"train tiny, {world} process{'es' * (world > 1)} (steps/s)"] = (len(stamps) - 1) / (
            stamps[-1] - stamps[0]
        )
    return rows


def detection(videos: list[Path], checkpoint: Path, cache: Path, batch: int = 8) -> dict[str, float]:
    """Videos/s of `Detector.detect` with cached features: one at a time vs batches."""
    from avdet.pipeline.detect import Detector

    det = Detector(checkpoint, cache=cache)
    list(det.run(videos, batch_size=batch))  # warm-up: features cached, model paths compiled
    rows = {}
    for size in (1, batch):
        start = time.perf_counter()
        out = list(det.run(videos, batch_size=size))
        wall = time.perf_counter() - start
        assert all(d.error is None for d in out), [d.error for d in out if d.error]
        rows[f"detect, batch {size} (videos/s)"] = len(videos) / wall
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from avdet.pipeline.synth.clips import SampleConfig, make_sample

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        sample = work / "sample"
        make_sample(sample, SampleConfig(num_videos=args.videos, seed=11, min_duration=6.0, max_duration=10.0))
        videos = sorted((sample / "videos").glob("*.mp4"))
        rows: dict[str, float] = {}
        if {"extract", "ray"} & set(args.parts):
            local = (1, 2) if "extract" in args.parts else ()
            rows |= extraction(videos, work, workers=local, ray="ray" in args.parts)
        cache = work / "cache_w1"
        if {"train", "detect"} & set(args.parts):  # both read the 1-worker cache; detection reads train's checkpoint
            if "extract" not in args.parts:
                extraction(videos, work, workers=(1,), ray=False)
            rows |= training(sample, cache, args.epochs, work, args.threads)
        if "detect" in args.parts:
            rows |= detection(videos, work / "run_1" / "last.ckpt", cache)
        load = os.getloadavg()
        print(f"\nmachine: {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s) per process")
        print(f"load average at the end: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")
        print(f"data: {len(videos)} generated clips of 6-10 s\n")
        print("| measurement | value |\n|---|---|")
        for name, value in rows.items():
            unit = "" if name.endswith(")") else " media-s/s"
            print(f"| {name} | {value:.2f}{unit} |")


if __name__ == "__main__":
    main()
