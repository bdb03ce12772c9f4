"""Speed of the UnAV-100 evaluator on the whole test split (2,167 videos, 100 classes).

    .venv/bin/python benchmarks/bench_eval.py                        # golden predictions + a full-size synthetic set
    .venv/bin/python benchmarks/bench_eval.py --per-video 100 --repeat 5

`golden` scores ../shared/golden/eval_predictions.json (about 6.7 predictions per video). `synthetic` scores what a
detector writes with the reference post-processing: `--per-video` predictions per test video (100 = max_seg_num),
jittered copies of the true events plus random ones, with many equal scores. Loading (JSON + validation) and
scoring are timed separately; the best of `--repeat` runs is printed, wall-clock and CPU seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from avdet.pipeline.data.annotations import load_annotations
from avdet.pipeline.metrics.mean_ap import evaluate, load_predictions, validate_predictions

SHARED = Path(__file__).resolve().parents[2] / "shared"


def synthetic_predictions(annotations: dict, split: str, per_video: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    db = {}
    for vid, video in annotations["database"].items():
        if video["subset"] != split:
            continue
        duration = float(video.get("duration", 60.0))
        truth = video["annotations"]
        rows = []
        for k in range(per_video):
            if truth and k < 3 * len(truth):
                a = truth[k % len(truth)]
                start = min(duration, max(0.0, a["segment"][0] + rng.normal(0, 1.0)))
                end = min(duration, max(start, a["segment"][1] + rng.normal(0, 1.0)))
                label = a["label_id"]
            else:
                start = rng.uniform(0, duration)
                end = min(duration, start + rng.uniform(0.2, 20))
                label = int(rng.integers(100))
            rows.append({"segment": [float(start), float(end)], "label_id": label, "score": round(rng.random(), 3)})
        db[vid] = rows
    return {"database": db}


class Timing:
    """Best wall-clock and CPU seconds over repeats (CPU time is the steadier one on a shared machine)."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu

    def __format__(self, spec: str) -> str:
        return f"{self.wall:6.3f} s (cpu {self.cpu:6.3f} s)"


def best_of(repeat: int, fn) -> tuple[Timing, object]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(min(walls), min(cpus)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=SHARED / "data" / "unav100_annotations.json")
    parser.add_argument("--predictions", type=Path, default=SHARED / "golden" / "eval_predictions.json")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-video", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t_ann, ann = best_of(1, lambda: load_annotations(args.annotations))
    print(f"load annotations {t_ann}")
    if args.predictions.is_file():
        t_load, preds = best_of(args.repeat, lambda: load_predictions(args.predictions, ann))
        t_eval, result = best_of(args.repeat, lambda: evaluate(ann, preds, split=args.split))
        n = sum(len(p) for p in preds.values())
        print(f"golden    {n:7d} predictions  load {t_load}  evaluate {t_eval}", end="")
        print(f"  Avg. mAP {100 * result.average_mAP:.4f} %")
    raw = synthetic_predictions(ann, args.split, args.per_video)
    t_val, preds = best_of(args.repeat, lambda: validate_predictions(raw, ann))
    t_eval, result = best_of(args.repeat, lambda: evaluate(ann, preds, split=args.split))
    n = sum(len(p) for p in preds.values())
    print(f"synthetic {n:7d} predictions  validate {t_val}  evaluate {t_eval}", end="")
    print(f"  Avg. mAP {100 * result.average_mAP:.4f} %")


if __name__ == "__main__":
    main()
