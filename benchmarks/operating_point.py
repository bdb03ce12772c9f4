"""Event-level precision, recall and F1 (tIoU 0.5, the mAP matching rule) of `detect`'s default output on a split.

Runs the Python API (`avdet.load(...).detect`, what `avdet detect` calls) over the split's video files and scores
the events it shows, beside the output of the old default (every candidate scoring >= 0.1, no suppression) and
detections per video against true events per video:

    .venv/bin/python benchmarks/operating_point.py --checkpoint quickstart/run/best.ckpt \
        --videos quickstart/data/videos [--split test] [--json out.json]

Without --checkpoint it first trains configs/tiny on --annotations/--classes/--cache into --run-dir (best.ckpt is
calibrated on the validation split at the end of training).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import avdet
from avdet.pipeline.data.annotations import load_annotations, split_ids
from avdet.pipeline.operating_point import Counts, event_counts
from avdet.pipeline.types import Event

OLD_THRESHOLD = 0.1  # the default before calibration: postprocess.output_threshold, every class, no suppression


def train_tiny(annotations: Path, classes: Path, cache: Path, run_dir: Path) -> Path:
    from avdet.pipeline.config import load_config
    from avdet.pipeline.train import train

    overrides = [f"data.annotations={annotations}", f"data.classes={classes}", f"data.cache={cache}"]
    train(load_config("tiny", overrides), run_dir)
    return run_dir / "best.ckpt"


def detect_split(checkpoint: Path, videos: list[Path], cache: Path | None, **options: object) -> dict[str, list[Event]]:
    det = avdet.load(checkpoint, cache=cache, batch_size=4, **options)
    found = {}
    for d in det.run(videos):
        if d.events is None:
            raise SystemExit(f"detection failed: {d.error}")
        found[d.video_id] = d.events
    return found


def row(name: str, counts: Counts, videos: int) -> dict:
    return {
        "output": name,
        "events_per_video": counts.detections / videos,
        "true_per_video": counts.true_events / videos,
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--videos", type=Path, help="folder of the split's video files [default: beside annotations]")
    parser.add_argument("--annotations", type=Path, help="[default: the checkpoint's]")
    parser.add_argument("--classes", type=Path)
    parser.add_argument("--cache", type=Path, help="feature store [default: the checkpoint's]")
    parser.add_argument("--run-dir", type=Path, default=Path("operating_point_run"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    checkpoint = args.checkpoint
    if checkpoint is None:
        if not (args.annotations and args.classes and args.cache):
            parser.error("without --checkpoint, give --annotations, --classes and --cache to train configs/tiny")
        checkpoint = train_tiny(args.annotations, args.classes, args.cache, args.run_dir)
    from avdet.pipeline.checkpoint import load_checkpoint

    recorded = load_checkpoint(checkpoint).data  # the data paths as recorded, resolved against the run folder
    ann_path = args.annotations or Path(recorded.annotations)
    cache = args.cache or (Path(recorded.cache) if recorded.cache else None)
    annotations = load_annotations(ann_path)
    video_dir = args.videos or ann_path.parent / "videos"
    ids = split_ids(annotations, args.split)
    videos = [next(video_dir.glob(f"{vid}.*")) for vid in ids]

    t0 = time.perf_counter()
    shown = detect_split(checkpoint, videos, cache)
    every = detect_split(checkpoint, videos, cache, all_events=True)
    old = {vid: [e for e in evs if e.score >= OLD_THRESHOLD] for vid, evs in every.items()}
    n = len(videos)
    rows = [
        row("default (calibrated operating point)", event_counts(annotations, shown, args.split), n),
        row(f"before: every candidate >= {OLD_THRESHOLD}", event_counts(annotations, old, args.split), n),
    ]
    print(f"{checkpoint}, split {args.split}, {n} videos, tIoU 0.5 ({time.perf_counter() - t0:.0f} s)")
    print(f"{'output':40s} {'events/video':>12s} {'true/video':>10s} {'P %':>6s} {'R %':>6s} {'F1 %':>6s}")
    for r in rows:
        print(
            f"{r['output']:40s} {r['events_per_video']:12.1f} {r['true_per_video']:10.1f} "
            f"{100 * r['precision']:6.1f} {100 * r['recall']:6.1f} {100 * r['f1']:6.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(checkpoint), "split": args.split, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
