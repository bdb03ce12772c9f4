"""LoCo vs. UnAV vs. CCNet (and LoCo's ablations) on generated data, under one training budget, against a per-row floor.

    .venv/bin/python benchmarks/compare.py --out runs/compare
    .venv/bin/python benchmarks/compare.py --out runs/compare --ablations --seeds 3
    .venv/bin/python benchmarks/compare.py --out runs/compare --seed 1235 --seeds 1 --only CCNet  # one run of a row

Defaults: 140 clips of 8 classes (49 train / 21 validation / 70 test), audio-only and visual-only distractors and
mismatched pairs (one class seen while another is heard) in half of the clips.

Steps: make (or reuse) a `make-sample` set in OUT/data, extract (or reuse) its `lite` features in OUT/cache, train
every model with the tiny configs (configs/tiny.yaml, tiny_unav.yaml, tiny_ccnet.yaml: same data, epochs, batch,
LR schedule and seed), evaluate each run's best checkpoint (by validation Avg. mAP) on the test split, and print one
markdown table: parameters, forward FLOPs at T = max_seq_len, training wall time, validation Avg., test mAP@0.5:0.9
and Avg. The first row is the floor: a two-layer MLP on every feature row alone (benchmarks/row_mlp.py), no temporal
model; a detector that does not beat it is broken. Finished runs (OUT/runs/<model>/seed<S>/result.json) are reused,
so an interrupted comparison picks up where it stopped. Every row is the mean ± standard deviation over train seeds
seed, seed + 1, ... (`--seeds`, default 3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from flops import count_flops, count_params

from avdet.errors import AvdetError, DataError
from avdet.models.registry import model_entry
from avdet.pipeline.config import ExperimentConfig, load_config
from avdet.pipeline.evaluate import evaluate_checkpoint
from avdet.pipeline.extract import ExtractOptions, extract_videos
from avdet.pipeline.synth.clips import ANNOTATION_FILES, SampleConfig, make_sample
from avdet.pipeline.train import Reporter, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from row_mlp import run_row_mlp  # noqa: E402  (a sibling script)


@dataclass(frozen=True)
class Variant:
    name: str  # row label
    config: str  # a config name in configs/
    overrides: tuple[str, ...] = ()  # `--set` style overrides on top of the config
    ground_truth: str = "audio_visual"  # what it trains and is scored on: audio_visual | audio | visual
    scores: str | None = None  # evaluate the runs of this row (no training) against `ground_truth` instead


FLOOR = Variant("Per-row MLP (floor)", "")  # no config: benchmarks/row_mlp.py on both modalities' rows
MODELS = (
    Variant("LoCo", "tiny"),
    Variant("UnAV", "tiny_unav"),
    Variant("CCNet", "tiny_ccnet"),
)
# The paper's ablations of LoCo's two components: LAC's attention window and LCF's target.
ABLATIONS = (
    Variant("LoCo, global attention", "tiny", ("model.attention=global",)),
    Variant("LoCo, fixed windows", "tiny", ("model.attention=fixed",)),
    Variant("LoCo, no LCF", "tiny", ("model.lcf=none",)),
    # tiny.yaml's LCF target is the diagonal one and it has no fusion block; the paper's choices are rows here
    Variant("LoCo, learnable-Gaussian LCF", "tiny", ("model.lcf=adaptive_gaussian",)),
    Variant("LoCo, fixed-Gaussian LCF", "tiny", ("model.lcf=fixed_gaussian",)),
    Variant("LoCo, softened LCF", "tiny", ("model.lcf=softened",)),
    Variant("LoCo, fusion block", "tiny", ("model.decoder_layers=1",)),
    Variant("LoCo as in the paper", "tiny", ("model.decoder_layers=1", "model.lcf=adaptive_gaussian")),
    # not an ablation: the regression loss the LoCo paper names (GIoU) instead of UnAV's DIoU that LoCo builds on
    Variant("LoCo, GIoU regression", "tiny", ("loss.reg_loss=giou",)),
)


# Unimodal detection (`model.modality`), each on its own ground truth (every audible / visible stretch that
# make-sample placed), and the cross-scores: what the audio-visual model finds of the audible or visible ground
# truth (it is trained to skip off-screen sounds and silent sights), and what an audio-only model scores on the
# audio-visual task.
UNIMODAL = (
    Variant("LoCo, audio only (audio GT)", "tiny", ("model.modality=audio", "model.lcf=none"), "audio"),
    Variant("LoCo, visual only (visual GT)", "tiny", ("model.modality=visual", "model.lcf=none"), "visual"),
    Variant("LoCo (audio-visual) on audio GT", "tiny", ground_truth="audio", scores="LoCo"),
    Variant("LoCo (audio-visual) on visual GT", "tiny", ground_truth="visual", scores="LoCo"),
    Variant(
        "LoCo, audio only on audio-visual GT",
        "tiny",
        ("model.modality=audio", "model.lcf=none"),
        scores="LoCo, audio only (audio GT)",
    ),
)


# Fusion against its own streams (docs/fusion.md, issue 25): every row trains and is scored on the audio-visual
# ground truth, so the one-stream rows are the floors the audio-visual model must beat; run with --visual-info /
# --audio-info to make one stream weak or useless.
FUSION = (
    Variant("LoCo, no LCF", "tiny", ("model.lcf=none",)),  # also an ablation; listed once when both are asked for
    Variant("LoCo, audio stream only", "tiny", ("model.modality=audio", "model.lcf=none")),
    Variant("LoCo, visual stream only", "tiny", ("model.modality=visual", "model.lcf=none")),
    Variant("LoCo, modality dropout", "tiny", ("model.modality_dropout=0.5",)),
    Variant("LoCo, modality dropout + gates", "tiny", ("model.modality_dropout=0.5", "model.stream_gate=true")),
    Variant(
        "LoCo, stream pyramids + modality dropout", "tiny", ("model.stream_pyramid=true", "model.modality_dropout=0.3")
    ),
    Variant(
        "LoCo, modality dropout + gates, LCF kept out of audio",
        "tiny",
        ("model.modality_dropout=0.5", "model.stream_gate=true", "model.lcf_stop_grad=audio"),
    ),
)


SHOWN_TIOU = 0.5  # table columns from this tIoU up (UnAV-100 reports 0.5:0.9 and Avg. over 0.1:0.9)


@dataclass
class RunResult:
    seconds: float  # training wall time
    best_epoch: int
    val_avg: float  # best validation Avg. mAP (fraction)
    test_map: list[float]  # test mAP per tIoU threshold (fractions)
    test_avg: float
    tious: list[float]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def prepare_data(out: Path, sample: SampleConfig) -> tuple[Path, Path, Path]:
    """Generate the clips (re-running renders only missing ones) and extract lite features (cached ones skipped)."""
    data_dir, cache = out / "data", out / "cache"
    t0, videos, workers = time.perf_counter(), sample.num_videos, sample.workers
    ann = make_sample(data_dir, sample)
    t1 = time.perf_counter()
    paths = sorted((data_dir / "videos").glob("*.mp4"))
    results = extract_videos(paths, cache, ExtractOptions(extractor="lite"), workers=workers)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise DataError(f"{failed[0].path}: feature extraction failed ({failed[0].reason})")
    done = sum(r.status == "done" for r in results)
    log(
        f"data: {videos} clips in {data_dir} ({t1 - t0:.0f} s); features: {done} extracted, "
        f"{len(results) - done} cached ({time.perf_counter() - t1:.0f} s)"
    )
    return ann, data_dir / "classes.tsv", cache


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def experiment(
    variant: Variant, ann: Path, classes: Path, cache: Path, seed: int, extra: list[str]
) -> ExperimentConfig:
    overrides = [
        f"data.annotations={ann}",
        f"data.classes={classes}",
        f"data.cache={cache}",
        f"train.seed={seed}",
        "train.device=cpu",
        *variant.overrides,
        *extra,
    ]
    return load_config(variant.config, overrides)


def model_size(cfg: ExperimentConfig) -> tuple[int, int]:
    """(parameters, forward FLOPs of one video at T = max_seq_len)."""
    mcfg = cfg.model_config()
    model = model_entry(cfg.model["name"]).model_cls(mcfg)
    return count_params(model), count_flops(model, mcfg.max_seq_len)


def run_floor(ann: Path, classes: Path, cache: Path, seed: int, run_dir: Path) -> RunResult:
    """The per-row MLP on both modalities' rows (validation result as `val_avg`, no checkpoint selection)."""
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return RunResult(**json.loads(result_path.read_text()))
    t0 = time.perf_counter()
    val, test = run_row_mlp(ann, classes, cache, "both", seed)
    result = RunResult(
        seconds=time.perf_counter() - t0,
        best_epoch=-1,
        val_avg=float(val.average_mAP),
        test_map=[float(x) for x in test.mAP],
        test_avg=float(test.average_mAP),
        tious=[float(t) for t in test.tiou_thresholds],
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result.__dict__, indent=1) + "\n")
    log(f"{FLOOR.name}: val Avg. {100 * result.val_avg:.1f}, test Avg. {100 * result.test_avg:.1f}")
    return result


def run_one(variant: Variant, cfg: ExperimentConfig, run_dir: Path) -> RunResult:
    """Train (unless a finished result exists) and score the best checkpoint on the test split."""
    result_path = run_dir / "result.json"
    if result_path.is_file():
        log(f"{variant.name}: reusing {result_path}")
        return RunResult(**json.loads(result_path.read_text()))
    epochs = cfg.train.warmup_epochs + cfg.train.epochs

    def on_epoch(epoch: int, metrics: dict) -> None:
        val = f", val Avg. {100 * metrics['val_mAP']:.1f}" if "val_mAP" in metrics else ""
        log(f"  {variant.name} epoch {epoch + 1}/{epochs}: loss {metrics.get('loss_total', float('nan')):.3f}{val}")

    t0 = time.perf_counter()
    trained = train(cfg, run_dir, overwrite=True, reporter=Reporter(epoch=on_epoch))  # an unfinished run restarts
    seconds = time.perf_counter() - t0
    best = run_dir / "best.ckpt"
    if not best.is_file():
        raise DataError(f"{run_dir}: training wrote no best checkpoint (no validation epoch?)")
    test = evaluate_checkpoint(best, split=cfg.data.test_split, device="cpu").result
    result = RunResult(
        seconds=seconds,
        best_epoch=trained.best_epoch,
        val_avg=float(trained.best_metric),
        test_map=[float(x) for x in test.mAP],
        test_avg=float(test.average_mAP),
        tious=[float(t) for t in test.tiou_thresholds],
    )
    result_path.write_text(json.dumps(result.__dict__, indent=1) + "\n")
    log(
        f"{variant.name}: {seconds:.0f} s, best epoch {trained.best_epoch + 1}, "
        f"val Avg. {100 * result.val_avg:.1f}, test Avg. {100 * result.test_avg:.1f}"
    )
    return result


def score_runs(variant: Variant, base_dir: Path, annotations: Path, run_dir: Path, split: str) -> RunResult:
    """Another row's best checkpoint scored against `annotations` (no training; `seconds` 0)."""
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return RunResult(**json.loads(result_path.read_text()))
    best = base_dir / "best.ckpt"
    if not best.is_file():
        raise DataError(f"{best}: {variant.scores!r} has no run to score (list it before {variant.name!r})")
    test = evaluate_checkpoint(best, split=split, device="cpu", data={"annotations": annotations}).result
    base = RunResult(**json.loads((base_dir / "result.json").read_text()))
    result = RunResult(
        0.0, base.best_epoch, base.val_avg, [float(x) for x in test.mAP], float(test.average_mAP), base.tious
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result.__dict__, indent=1) + "\n")
    log(f"{variant.name}: test Avg. {100 * result.test_avg:.1f}")
    return result


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = scale * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def result_tious(rows: list[tuple[Variant, int, int, list[RunResult]]]) -> str:
    tious = rows[0][3][0].tious
    return f"{tious[0]:.1f}:{tious[-1]:.1f}"


def table(rows: list[tuple[Variant, int, int, list[RunResult]]]) -> str:
    tious = rows[0][3][0].tious
    shown = [i for i, t in enumerate(tious) if t >= SHOWN_TIOU - 1e-9]  # the papers' columns; Avg. is over all
    head = ["Model", "Params (M)", "GFLOPs", "Train (s)", "Val Avg.", *(f"mAP@{tious[i]:.1f}" for i in shown), "Avg."]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for variant, params, flops, runs in rows:
        cells = [
            variant.name,
            f"{params / 1e6:.2f}" if params else "–",
            f"{flops / 1e9:.3f}" if flops else "–",
            mean_std([r.seconds for r in runs], digits=0),
            mean_std([r.val_avg for r in runs], 100),
            *(mean_std([r.test_map[i] for r in runs], 100) for i in shown),
            mean_std([r.test_avg for r in runs], 100),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="data, features, runs and results")
    # 49 / 21 / 70 clips: the training budget of an 80-clip 60/20/20 set, with a test split four times as large so
    # that the test means rank the models rather than the 16 clips they happen to be scored on.
    parser.add_argument("--videos", type=int, default=140, help="generated clips")
    parser.add_argument(
        "--split", type=float, nargs=3, default=(0.35, 0.15, 0.5), metavar=("TRAIN", "VAL", "TEST"), help="shares"
    )
    parser.add_argument("--classes", type=int, default=8, help="event classes of the generated set")
    parser.add_argument("--object-scale", type=float, default=1.0, help="make-sample's object size factor")
    parser.add_argument("--busy-background", action="store_true", help="make-sample's colourful backgrounds")
    parser.add_argument(
        "--mismatched", type=float, default=0.5, help="make-sample's chance per clip of a mismatched pair"
    )
    parser.add_argument(
        "--visual-info", default="full", help="make-sample's visual informativeness: full, weak, unrelated, ..."
    )
    parser.add_argument("--audio-info", default="full", help="make-sample's audio informativeness: full, weak, ...")
    parser.add_argument("--data-seed", type=int, default=0, help="make-sample seed")
    parser.add_argument("--seed", type=int, default=1234, help="first training seed (the configs' default)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds to average over")
    parser.add_argument(
        "--ablations", action="store_true", help="also the paper's ablations of LoCo (attention, LCF targets)"
    )
    parser.add_argument(
        "--unimodal", action="store_true", help="also audio-only / visual-only models and the cross-modality scores"
    )
    parser.add_argument(
        "--fusion", action="store_true", help="also the one-stream floors and the safe-fusion variants (docs/fusion.md)"
    )
    parser.add_argument("--only", nargs="+", metavar="MODEL", help="only these rows (names as in the table)")
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="override for every run, e.g. train.epochs=10"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for clip generation and extraction")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for training (1: robust on a loaded, shared machine)"
    )
    args = parser.parse_args()
    # On a shared 2-core machine, 2 intra-op threads contending with other jobs were 8x slower than 1 for these
    # tiny models (synchronisation stalls); every model gets the same setting, so the timings stay comparable.
    torch.set_num_threads(args.threads)
    if args.seeds < 1 or args.videos < 10:
        parser.error("--seeds must be >= 1 and --videos >= 10 (every split needs clips)")

    variants = [
        FLOOR,
        *MODELS,
        *(ABLATIONS if args.ablations else ()),
        *(UNIMODAL if args.unimodal else ()),
        *(FUSION if args.fusion else ()),
    ]
    unique: dict[str, Variant] = {}
    for variant in variants:  # each row once, in its first place (no LCF is an ablation and a fusion row)
        unique.setdefault(variant.name, variant)
    variants = list(unique.values())
    if args.only:
        wanted = {n.lower() for n in args.only}
        variants = [v for v in variants if v.name.lower() in wanted]
        if not variants:
            names = ", ".join(dict.fromkeys(v.name for v in (FLOOR, *MODELS, *ABLATIONS, *UNIMODAL, *FUSION)))
            parser.error(f"--only matched no model (names: {names})")
    load_start = os.getloadavg()
    try:
        sample = SampleConfig(
            num_videos=args.videos,
            seed=args.data_seed,
            num_classes=args.classes,
            object_scale=args.object_scale,
            busy_background=args.busy_background,
            mismatched=args.mismatched,
            visual_info=args.visual_info,
            audio_info=args.audio_info,
            split=tuple(args.split),
            workers=args.workers,
        )
        ann, classes, cache = prepare_data(args.out, sample)
        extra = [f"model.num_classes={args.classes}", *args.extra]
        rows = []
        for variant in variants:
            runs = []
            for k in range(args.seeds):
                seed = args.seed + k
                run_dir = args.out / "runs" / slug(variant.name) / f"seed{seed}"
                truth = ann.parent / ANNOTATION_FILES[variant.ground_truth]
                if variant is FLOOR:
                    runs.append(run_floor(ann, classes, cache, seed, run_dir))
                    continue
                cfg = experiment(variant, truth, classes, cache, seed, extra)
                if variant.scores is not None:
                    base_dir = args.out / "runs" / slug(variant.scores) / f"seed{seed}"
                    runs.append(score_runs(variant, base_dir, truth, run_dir, cfg.data.test_split))
                    continue
                runs.append(run_one(variant, cfg, run_dir))
            params, flops = (0, 0) if variant is FLOOR else model_size(cfg)
            rows.append((variant, params, flops, runs))
    except AvdetError as err:
        sys.exit(f"error: {err}")

    cfg0 = experiment(MODELS[0], ann, classes, cache, args.seed, extra)  # the shared budget, as run
    load = os.getloadavg()
    text = (
        f"{args.videos} generated clips of {args.classes} classes (data seed {args.data_seed}, object scale "
        f"{args.object_scale:g}{', busy backgrounds' if args.busy_background else ''}, mismatched pairs in "
        f"{args.mismatched:.0%} of the clips; visual {args.visual_info}, audio {args.audio_info}; "
        f"split {'/'.join(f'{x:g}' for x in args.split)}), lite features; "
        f"{cfg0.train.warmup_epochs} + {cfg0.train.epochs} epochs, batch {cfg0.train.batch_size}, "
        f"{args.seeds} training seed(s) from {args.seed}; test split, mAP in % (Avg. over tIoU {result_tious(rows)}); "
        f"FLOPs at T = "
        f"{cfg0.model_config().max_seq_len}; CPU, {torch.get_num_threads()} torch threads, "
        f"load average {load_start[0]:.2f} at the start, {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) at the "
        f"end\n\n{table(rows)}\n"
    )
    print(text)
    (args.out / "compare.md").write_text(text)


if __name__ == "__main__":
    main()
