"""Segment-level AVEL: LoCo-AVEL vs. CCLN (full and weak supervision) on generated AVE-style clips, beside the
always-background baseline, plus both models' parameter counts at the paper settings.

    .venv/bin/python benchmarks/compare_ave.py --out runs/compare_ave --videos 120
    .venv/bin/python benchmarks/compare_ave.py --out runs/compare_ave --videos 120 --seeds 3

Steps: make (or reuse) a `make-sample --ave` set in OUT/data (10 s clips, one event class per clip, distractors in
the background segments), extract (or reuse) its `lite` features in OUT/cache, train every variant through
`avdet train`'s pipeline (rows averaged per 1 s segment), pick the best checkpoint by validation accuracy and
score it on the test split with `avdet eval`'s function. Every run has the same data, epochs, batch size and seed;
each model keeps its own optimiser settings (LoCo: AdamW, warm-up + cosine, EMA; CCLN: Adam at a constant rate,
the paper's), except that CCLN's rate is 1e-3 in both settings (the paper's weak 1e-4 is tuned for 200 epochs on
3,339 videos). Finished runs (OUT/runs/<variant>/seed<S>/result.json) are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from compare import Variant, log, mean_std, slug
from flops import count_params

from avdet.errors import AvdetError, DataError
from avdet.models.registry import model_entry
from avdet.pipeline.config import ExperimentConfig, load_config
from avdet.pipeline.evaluate import evaluate_checkpoint
from avdet.pipeline.extract import ExtractOptions, extract_videos
from avdet.pipeline.synth.ave_clips import AveSampleConfig, make_ave_sample
from avdet.pipeline.train import Reporter, train

# CCLN on `lite` rows (no spatial map, so its audio-guided attention has nothing to attend: mean of one location).
CCLN_ON_LITE = (
    "data.source=store",
    "data.extractor=lite",
    "model.visual_dim=304",
    "model.audio_dim=128",
    "train.lr=0.001",
)
VARIANTS = (
    Variant("LoCo-AVEL, full", "tiny_ave"),
    Variant("LoCo-AVEL, weak", "tiny_ave", ("segment_loss.setting=weak",)),
    Variant("CCLN, full", "ccln_ave", CCLN_ON_LITE),
    Variant("CCLN, weak", "ccln_ave_weak", CCLN_ON_LITE),
    Variant(
        "CCLN, full, FEE/WCCL weights 1/1",
        "ccln_ave",
        (*CCLN_ON_LITE, "segment_loss.fee_weight=1", "segment_loss.wccl_weight=1"),
    ),
)
PAPER_CONFIGS = ("loco_ave", "ccln_ave", "ccln_ave_weak")


@dataclass
class RunResult:
    seconds: float
    best_epoch: int
    val_accuracy: float  # percent
    test_accuracy: float  # percent
    background_only: float  # percent, test split


def prepare_data(out: Path, videos: int, classes: int, data_seed: int, workers: int) -> tuple[Path, Path]:
    data_dir, cache = out / "data", out / "cache"
    t0 = time.perf_counter()
    make_ave_sample(data_dir, AveSampleConfig(num_videos=videos, seed=data_seed, num_classes=classes, workers=workers))
    t1 = time.perf_counter()
    results = extract_videos(sorted((data_dir / "videos").glob("*.mp4")), cache, ExtractOptions(), workers=workers)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise DataError(f"{failed[0].path}: feature extraction failed ({failed[0].reason})")
    log(f"data: {videos} clips in {data_dir} ({t1 - t0:.0f} s); features ({time.perf_counter() - t1:.0f} s)")
    return data_dir, cache


def experiment(variant: Variant, data_dir: Path, cache: Path, classes: int, seed: int, extra: list[str]):
    overrides = [
        f"data.annotations={data_dir}",
        f"data.classes={data_dir / 'classes.tsv'}",
        f"data.cache={cache}",
        f"model.num_classes={classes}",
        "train.device=cpu",
        "train.epochs=40",
        "train.batch_size=8",
        f"train.seed={seed}",
        *variant.overrides,
        *extra,
    ]
    return load_config(variant.config, overrides)


def run_one(variant: Variant, cfg: ExperimentConfig, run_dir: Path) -> RunResult:
    result_path = run_dir / "result.json"
    if result_path.is_file():
        log(f"{variant.name}: reusing {result_path}")
        return RunResult(**json.loads(result_path.read_text()))

    def on_epoch(epoch: int, metrics: dict) -> None:
        if "val_accuracy" in metrics:
            loss, acc = metrics["loss_total"], metrics["val_accuracy"]
            log(f"  {variant.name} epoch {epoch + 1}: loss {loss:.3f}, val {acc:.1f} %")

    t0 = time.perf_counter()
    trained = train(cfg, run_dir, overwrite=True, reporter=Reporter(epoch=on_epoch))  # an unfinished run restarts
    seconds = time.perf_counter() - t0
    test = evaluate_checkpoint(run_dir / "best.ckpt", split=cfg.data.test_split)
    result = RunResult(seconds, trained.best_epoch, trained.best_metric, test.report.accuracy, test.background_only)
    result_path.write_text(json.dumps(result.__dict__, indent=1) + "\n")
    log(f"{variant.name}: {seconds:.0f} s, val {result.val_accuracy:.1f} %, test {result.test_accuracy:.1f} %")
    return result


def paper_sizes() -> str:
    lines = ["| Config (paper settings) | Model | Params (M) |", "|---|---|---:|"]
    for name in PAPER_CONFIGS:
        cfg = load_config(name)
        model = model_entry(cfg.model["name"]).model_cls(cfg.model_config())
        lines.append(f"| configs/{name}.yaml | {cfg.model['name']} | {count_params(model) / 1e6:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare_ave"))
    parser.add_argument("--videos", type=int, default=120, help="generated 10 s clips (60/20/20 split)")
    parser.add_argument("--classes", type=int, default=5, help="event classes (+ background)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1234, help="first training seed")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds to average over")
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="only these rows (names as in the table)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="override for every run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        data_dir, cache = prepare_data(args.out, args.videos, args.classes, args.data_seed, args.workers)
        chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
        rows = []
        for variant in chosen:
            runs = []
            for seed in range(args.seed, args.seed + args.seeds):
                cfg = experiment(variant, data_dir, cache, args.classes, seed, args.extra)
                runs.append(run_one(variant, cfg, args.out / "runs" / slug(variant.name) / f"seed{seed}"))
            rows.append((variant, runs))
    except AvdetError as err:
        sys.exit(f"error: {err}")
    floor = rows[0][1][0].background_only
    lines = ["| Model | Train (s) | Val acc. (%) | Test acc. (%) |", "|---|---:|---:|---:|"]
    for variant, runs in rows:
        lines.append(
            f"| {variant.name} | {mean_std([r.seconds for r in runs], digits=0)} | "
            f"{mean_std([r.val_accuracy for r in runs])} | {mean_std([r.test_accuracy for r in runs])} |"
        )
    lines.append(f"| always background | | | {floor:.1f} |")
    print("\n".join(lines))
    print()
    print(paper_sizes())


if __name__ == "__main__":
    main()
