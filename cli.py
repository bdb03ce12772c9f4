"""The `avdet` command line: thin commands that parse, call one pipeline function and print."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from avdet.errors import AvdetError, ConfigError

app = typer.Typer(
    name="avdet",
    help="Find audio-visual events in raw video: features, training, detection and UnAV-100 evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-v, -vv).")] = 0,
) -> None:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])


# -- extract ---------------------------------------------------------------------------------------------------
@app.command()
def extract(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders (searched recursively).")],
    cache: Annotated[
        Path,
        typer.Option(
            help="Feature store folder [default: $AVDET_CACHE or ~/.cache/avdet/features].",
            show_default=False,
        ),
    ] = None,
    extractor: Annotated[str, typer.Option(help="Feature recipe: lite | i3d_vggish | onepeace.")] = "lite",
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Recompute features that are already cached.")] = False,
    backend: Annotated[str, typer.Option(help="Frame decoder: ffmpeg | decord (falls back to ffmpeg).")] = "ffmpeg",
    weights_dir: Annotated[
        Path,
        typer.Option(
            help="Pretrained weights folder [default: $AVDET_WEIGHTS or ~/.cache/avdet/weights].", show_default=False
        ),
    ] = None,
    random_weights: Annotated[bool, typer.Option(help="Random backbone weights (tests and benchmarks only).")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    ray: Annotated[
        str, typer.Option("--ray", help="Run as Ray tasks: --ray (local runtime) or --ray ADDRESS.", show_default=False)
    ] = None,
) -> None:
    """Decode videos, compute features and cache them. Re-running does only what is missing."""
    from avdet.pipeline.extract import ExtractOptions, ExtractResult, extract_videos, extract_videos_ray
    from avdet.pipeline.io import media

    if backend not in ("ffmpeg", "decord"):
        raise fail(f"unknown backend {backend!r}: use ffmpeg or decord")
    paths = media.expand_videos(videos)
    if not paths:
        raise fail("no video files found in " + ", ".join(map(str, videos)))
    from avdet.pipeline.io.store import default_cache_dir

    cache = cache or default_cache_dir()
    options = ExtractOptions(
        extractor=extractor,
        backend=backend,
        overwrite=overwrite,
        weights_dir=str(weights_dir) if weights_dir else None,
        random_weights=random_weights,
        device=device,
    )
    progress = Progress(
        TextColumn("[bold]extract"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("videos"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    media_seconds, failed = [0.0], []
    with progress:
        task = progress.add_task("extract", total=len(paths), speed="")
        clock = progress.get_time()

        def on_result(res: ExtractResult) -> None:
            media_seconds[0] += res.media_seconds
            elapsed = max(progress.get_time() - clock, 1e-9)
            progress.update(task, advance=1, speed=f"{media_seconds[0] / elapsed:.1f} media-s/s")
            if res.status == "failed":
                failed.append(res)
                progress.console.print(f"[red]failed[/] {res.path}: {res.reason}", highlight=False, soft_wrap=True)

        try:
            if ray is not None:
                address = None if ray == RAY_LOCAL else ray
                results = extract_videos_ray(paths, cache, options, address=address, on_result=on_result)
            else:
                results = extract_videos(paths, cache, options, workers=workers, on_result=on_result)
        except AvdetError as err:
            raise fail(str(err)) from None
    _extract_summary(results, progress.get_time() - clock, cache)
    if failed:
        raise typer.Exit(1)


def _extract_summary(results: list, wall: float, cache: Path) -> None:
    table = Table(title=f"extract summary ({cache})", show_edge=False)
    for col in ("status", "videos", "media seconds"):
        table.add_column(col, justify="right" if col != "status" else "left")
    for status, style in (("done", "green"), ("cached", "cyan"), ("failed", "red")):
        rows = [r for r in results if r.status == status]
        table.add_row(f"[{style}]{status}[/]", str(len(rows)), f"{sum(r.media_seconds for r in rows):.1f}")
    console.print(table)
    done_media = sum(r.media_seconds for r in results if r.status == "done")
    if done_media:
        console.print(
            f"extracted {done_media:.1f} s of media in {wall:.1f} s ({done_media / max(wall, 1e-9):.1f}x real time)"
        )


# -- sample data -------------------------------------------------------------------------------------------------
@app.command("make-sample")
def make_sample(
    out_dir: Annotated[Path, typer.Argument(help="Folder for videos/, annotations.json and classes.tsv.")],
    videos: Annotated[int, typer.Option(min=1, help="Number of clips.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
    classes: Annotated[int, typer.Option(min=2, help="Number of event classes.")] = 5,
    min_duration: Annotated[float, typer.Option(help="Shortest clip, seconds.")] = 10.0,
    max_duration: Annotated[float, typer.Option(help="Longest clip, seconds.")] = 20.0,
    ave: Annotated[
        bool, typer.Option(help="Write an AVE-style set instead (10 s clips, Annotations.txt and split files).")
    ] = False,
    features: Annotated[
        bool,
        typer.Option(
            help="With --ave: write synthetic features in the AVE release's HDF5 layout (visual_feature.h5 "
            "(N, 10, 7, 7, 512), audio_feature.h5, labels.h5, orders, weak-setting files) instead of clips."
        ),
    ] = False,
) -> None:
    """Synthesise clips with overlapping audio-visual events (and distractors) plus UnAV-100-style ground truth."""
    from functools import partial

    from avdet.pipeline.synth.ave_clips import AveSampleConfig, make_ave_sample
    from avdet.pipeline.synth.clips import SampleConfig
    from avdet.pipeline.synth.clips import make_sample as make_dense

    if features:
        if not ave:
            raise fail("--features writes the AVE HDF5 layout: use it with --ave")
        from avdet.pipeline.synth.ave_features import write_synthetic_ave

        with console.status("writing AVE-layout features..."):
            write_synthetic_ave(
                out_dir, num_videos=videos, num_classes=classes, num_noisy=max(1, videos // 6), seed=seed
            )
        out.print(f"wrote AVE-layout features of {videos} videos to {out_dir}")
        return
    if ave:
        run = partial(make_ave_sample, cfg=AveSampleConfig(num_videos=videos, seed=seed, num_classes=classes))
    else:
        cfg = SampleConfig(
            num_videos=videos, seed=seed, num_classes=classes, min_duration=min_duration, max_duration=max_duration
        )
        run = partial(make_dense, cfg=cfg)
    with Progress(
        TextColumn("[bold]make-sample"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("sample", total=videos)
        try:
            ann = run(out_dir, progress=lambda done, total: progress.update(task, completed=done, total=total))
        except AvdetError as err:
            raise fail(str(err)) from None
    out.print(f"wrote {videos} clips and {ann}")


# -- train -------------------------------------------------------------------------------------------------------
@app.command()
def train(
    config: Annotated[str, typer.Option("--config", "-c", help="YAML config (a path, or a name in configs/).")],
    set_: Annotated[list[str], typer.Option("--set", help="Override a field: train.lr=0.001 (repeatable).")] = None,
    run_dir: Annotated[Path, typer.Option(help="Where checkpoints, config.yaml and TensorBoard logs go.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from run-dir/last.ckpt.")] = False,
) -> None:
    """Train a model (LoCo, UnAV, CCNet; CCLN or LoCo on AVE segments) from cached or released features."""
    from avdet.pipeline.config import load_config
    from avdet.pipeline.train import Reporter
    from avdet.pipeline.train import train as run_train

    try:
        cfg = load_config(config, set_ or [])
    except AvdetError as err:
        raise fail(str(err)) from None
    run_dir = run_dir or Path("runs") / Path(config).stem
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 shows progress and the summary
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not main_rank,
    )
    task = progress.add_task("train", total=None, info="")

    def on_epoch(epoch: int, metrics: dict) -> None:
        val = "".join(f"  val {_metric_text(k, v)}" for k, v in metrics.items() if k in ("val_mAP", "val_accuracy"))
        progress.console.print(f"epoch {epoch:3d}  loss {metrics.get('loss_total', float('nan')):.4f}{val}")

    reporter = Reporter(
        start=lambda total, first: progress.update(task, total=total, completed=first),
        step=lambda step, losses: progress.update(task, completed=step, info=f"loss {losses['total']:.4f}"),
        epoch=on_epoch,
    )
    try:
        with progress:
            result = run_train(cfg, run_dir, resume=resume, reporter=reporter)
    except AvdetError as err:
        raise fail(str(err)) from None
    if main_rank:
        out.print(
            f"best validation {_metric_text(result.metric, result.best_metric)} (epoch {result.best_epoch}); "
            f"checkpoints in {result.run_dir}"
        )


def _metric_text(name: str, value: float) -> str:
    """A validation metric as printed: mAP is kept as a fraction, segment accuracy in percent."""
    return f"accuracy {value:.2f} %" if name == "val_accuracy" else f"Avg. mAP {100 * value:.2f}"


# -- detect ------------------------------------------------------------------------------------------------------
STDOUT = Path("-")  # --out - : the chosen format on standard output


@app.command()
def detect(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A trained avdet checkpoint.")],
    out_path: Annotated[
        Path, typer.Option("--out", help="Output file (one video), folder (several) or - for standard output.")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="json | srt | vtt (default: from --out's suffix, else json); alone: to standard output."
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="One score threshold for every class instead of the checkpoint's calibrated per-class ones "
            "(0: every candidate).",
        ),
    ] = None,
    all_events: Annotated[
        bool, typer.Option("--all", help="Every ranked candidate (up to 100 per class), e.g. for `avdet eval`.")
    ] = False,
    sigma: Annotated[float, typer.Option(help="Soft-NMS Gaussian sigma.")] = None,
    max_events: Annotated[int, typer.Option(help="Soft-NMS: at most this many candidates per class.")] = None,
    plot: Annotated[Path, typer.Option(help="Also draw the event timeline to this PNG (one video).")] = None,
    cache: Annotated[
        Path, typer.Option(help="Feature store folder [default: $AVDET_CACHE].", show_default=False)
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per forward pass.")] = 1,
    weights_dir: Annotated[Path, typer.Option(help="Pretrained extractor weights folder.", show_default=False)] = None,
    random_weights: Annotated[bool, typer.Option(help="Random extractor weights (tests only).")] = False,
) -> None:
    """Find audio-visual events in videos and write them as JSON, SRT or WebVTT (or print a table).

    By default a dense checkpoint shows the events above its calibrated per-class thresholds (chosen on the
    validation split for the best event-level F1, see `avdet calibrate`), with overlapping same-class events
    suppressed; a checkpoint without them uses postprocess.output_threshold (0.1) for every class. The JSON
    records the thresholds it applied."""
    from avdet.pipeline.detect import Detector
    from avdet.pipeline.io import media
    from avdet.pipeline.io.atomic import is_special
    from avdet.pipeline.io.plots import plot_timeline
    from avdet.pipeline.io.writers import write_events, write_events_file

    if all_events and threshold is not None:
        raise fail("give --threshold or --all, not both")
    paths = media.expand_videos(videos)
    if not paths:
        raise fail("no video files found in " + ", ".join(map(str, videos)))
    try:
        targets = _detect_targets(paths, out_path, fmt, plot)
        detector = Detector(
            checkpoint,
            cache=cache,
            device=device,
            threshold=threshold,
            all_events=all_events,
            batch_size=batch_size,
            weights_dir=str(weights_dir or "") or None,
            random_weights=random_weights,
            postprocess={"sigma": sigma, "max_seg_num": max_events},
        )
    except AvdetError as err:
        raise fail(str(err)) from None
    record = detector.operating_point.record(detector.checkpoint.classes)
    failures = 0
    with console.status("detecting..."):
        for det in detector.run(paths):
            if det.events is None:
                failures += 1
                console.print(f"[red]failed[/] {escape(det.path)}: {escape(str(det.error))}", highlight=False)
                continue
            target = targets.get(det.path)
            try:
                if target is None:
                    _print_events(det.video_id, det.duration, det.events)
                elif target == STDOUT:
                    write_events(
                        sys.stdout,
                        fmt or "json",
                        video=det.video_id,
                        duration=det.duration,
                        model=detector.checkpoint.name,
                        events=det.events,
                        operating_point=record,
                        indent=2 if len(paths) == 1 else None,  # several videos: JSON Lines
                    )
                    sys.stdout.flush()
                else:
                    write_events_file(
                        target,
                        det.events,
                        video=det.video_id,
                        duration=det.duration,
                        model=detector.checkpoint.name,
                        fmt=fmt or ("json" if is_special(target) else None),  # /dev/stdout has no suffix
                        operating_point=record,
                    )
                    console.print(f"{escape(det.path)}: {len(det.events)} events -> {escape(str(target))}")
                if plot is not None:
                    plot_timeline(
                        det.events, det.duration, plot, classes=detector.checkpoint.classes, title=det.video_id
                    )
            except (AvdetError, OSError) as err:
                failures += 1
                console.print(f"[red]failed[/] {escape(det.path)}: {escape(str(err))}", highlight=False)
    if failures:
        raise typer.Exit(1)


def _detect_targets(paths: list[Path], out_path: Path | None, fmt: str | None, plot: Path | None) -> dict[str, Path]:
    """Where each video's events go: one file, files in a folder, standard output (`--out -`, or `--format`
    without `--out`), or nowhere (terminal table)."""
    from avdet.errors import DataError
    from avdet.pipeline.io.atomic import is_special
    from avdet.pipeline.io.writers import output_format

    if fmt is not None and fmt not in ("json", "srt", "vtt"):
        raise DataError(f"--format {fmt}: unknown format (use json, srt or vtt)")
    if plot is not None and len(paths) > 1:
        raise DataError("--plot draws one video's timeline; give one video")
    if out_path is None and fmt is None:
        return {}
    if out_path is None or out_path == STDOUT:
        if len(paths) > 1 and fmt in ("srt", "vtt"):
            raise DataError(f"{fmt} on standard output holds one video; give --out FOLDER for several")
        return {str(p): STDOUT for p in paths}
    if len(paths) == 1 and is_special(out_path):  # /dev/stdout, a fifo: written in place
        return {str(paths[0]): out_path}
    if len(paths) == 1 and (out_path.suffix or not out_path.is_dir()):
        if fmt is None:
            output_format(out_path)  # unknown suffix: fail before any work
        _check_writable(out_path.parent)
        return {str(paths[0]): out_path}
    out_path.mkdir(parents=True, exist_ok=True)
    _check_writable(out_path)
    return {str(p): out_path / f"{media_id(p)}.{fmt or 'json'}" for p in paths}


def media_id(path: Path) -> str:
    from avdet.pipeline.io.media import video_id

    return video_id(path)


def _check_writable(folder: Path) -> None:
    from avdet.errors import DataError

    if not folder.is_dir():
        raise DataError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise DataError(f"{folder}: output folder is not writable")


def _print_events(video: str, duration: float, events: list) -> None:
    table = Table(title=f"{escape(video)} ({duration:.1f} s): {len(events)} events", show_edge=False)
    for col in ("start", "end", "label", "score"):
        table.add_column(col, justify="right" if col != "label" else "left")
    for e in sorted(events, key=lambda e: (e.start, -e.score)):
        table.add_row(f"{e.start:.2f}", f"{e.end:.2f}", escape(e.label), f"{e.score:.3f}")
    out.print(table)


# -- eval --------------------------------------------------------------------------------------------------------
@app.command("eval")
def eval_(
    predictions: Annotated[Path, typer.Option(help="A predictions file in the UnAV-100 results format.")] = None,
    checkpoint: Annotated[Path, typer.Option(help="Run a checkpoint over the split's features, then score.")] = None,
    annotations: Annotated[Path, typer.Option(help="Ground truth [default: the checkpoint's].")] = None,
    split: Annotated[str, typer.Option(help="Subset to score.")] = "test",
    json_out: Annotated[Path, typer.Option("--json", help="Also write the scores as JSON here.")] = None,
    save_predictions: Annotated[Path, typer.Option(help="With --checkpoint: where to write the predictions.")] = None,
    confusion: Annotated[
        Path, typer.Option(help="Segment checkpoints: confusion matrix PNG [default: beside the checkpoint].")
    ] = None,
    cache: Annotated[Path, typer.Option(help="Feature store folder [default: the checkpoint's].")] = None,
    released_root: Annotated[Path, typer.Option(help="Released feature folder [default: the checkpoint's].")] = None,
    ave_root: Annotated[Path, typer.Option(help="AVE HDF5 feature folder [default: the checkpoint's].")] = None,
    cml: Annotated[
        bool, typer.Option(help="Segment checkpoints: cross-modal localization (A2V, V2A) instead of accuracy.")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per forward pass.")] = 16,
) -> None:
    """UnAV-100 mAP at tIoU 0.5 ... 0.9 and Avg. (0.1 ... 0.9), identical to the reference evaluator; for a
    segment-task (AVE) checkpoint, segment accuracy with a per-class table and a confusion matrix."""
    import json

    from avdet.pipeline.io.atomic import write_text_atomic

    if (predictions is None) == (checkpoint is None):
        raise fail("give exactly one of --predictions and --checkpoint")
    try:
        if predictions is not None:
            if annotations is None:
                raise fail("--predictions needs --annotations")
            report = _eval_predictions(predictions, annotations, split)
        else:
            from avdet.pipeline.checkpoint import load_checkpoint
            from avdet.pipeline.evaluate import evaluate_checkpoint, evaluate_cml_checkpoint

            data = {"annotations": annotations, "cache": cache, "released_root": released_root, "ave_root": ave_root}
            ckpt = load_checkpoint(checkpoint, device, data=data)
            if cml:
                _eval_cml(evaluate_cml_checkpoint(ckpt, split=split, device=device), split, json_out)
                return
            report = evaluate_checkpoint(ckpt, split=split, device=device, batch_size=batch_size)
            _save_eval_outputs(report, checkpoint, split, save_predictions, confusion)
        _print_report(report)
        if json_out is not None:
            write_text_atomic(json_out, json.dumps(report.as_dict(), indent=2))
    except AvdetError as err:
        raise fail(str(err)) from None


def _eval_predictions(predictions: Path, annotations: Path, split: str):
    """A predictions file scored against annotations (no model, no torch import)."""
    from avdet.pipeline.data.annotations import load_annotations
    from avdet.pipeline.metrics.mean_ap import MapScores, evaluate, load_predictions

    ann = load_annotations(annotations)
    return MapScores(split, evaluate(ann, load_predictions(predictions, ann), split=split))


def _print_report(report) -> None:
    """Any task's report (`tasks.Report`) as a table."""
    title, columns, rows = report.table()
    table = Table(title=title, show_edge=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 and col == "class" else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


def _save_eval_outputs(report, checkpoint: Path, split: str, predictions: Path | None, confusion: Path | None) -> None:
    for path in report.save_outputs(checkpoint, predictions=predictions, confusion=confusion):
        console.print(f"wrote {escape(str(path))}", highlight=False)


def _eval_cml(result, split: str, json_out: Path | None) -> None:
    """`avdet eval --cml`: cross-modal localization accuracy of a segment checkpoint, beside chance."""
    import json

    from avdet.pipeline.io.atomic import write_text_atomic

    table = Table(title=f"Cross-modal localization (%), split {split}, {result.videos} videos", show_edge=False)
    for col in ("A2V", "V2A", "random window"):
        table.add_column(col, justify="right")
    table.add_row(f"{result.a2v:.2f}", f"{result.v2a:.2f}", f"{result.chance:.2f}")
    out.print(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps({"split": split, **result.__dict__}, indent=2))


# -- calibrate ---------------------------------------------------------------------------------------------------
@app.command()
def calibrate(
    checkpoint: Annotated[Path, typer.Argument(help="A dense-task avdet checkpoint (rewritten in place).")],
    split: Annotated[str, typer.Option(help="Split whose events choose the thresholds.")] = "validation",
    annotations: Annotated[Path, typer.Option(help="Ground truth [default: the checkpoint's].")] = None,
    cache: Annotated[Path, typer.Option(help="Feature store folder [default: the checkpoint's].")] = None,
    released_root: Annotated[Path, typer.Option(help="Released feature folder [default: the checkpoint's].")] = None,
    min_events: Annotated[
        int, typer.Option(min=1, help="Classes with fewer true events in the split get the pooled threshold.")
    ] = 5,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per forward pass.")] = 16,
) -> None:
    """Choose the per-class score thresholds `detect` applies by default: on a split (validation), those of the
    best event-level F1 at tIoU 0.5 (mAP's matching rule), and the same-class overlap suppression; stored in the
    checkpoint. `avdet train` does this for best.ckpt at the end of a dense run."""
    from avdet.pipeline.calibrate import calibrate_checkpoint

    data = {"annotations": annotations, "cache": cache, "released_root": released_root}
    try:
        point, classes = calibrate_checkpoint(
            checkpoint, split, device=device, batch_size=batch_size, data=data, min_events=min_events
        )
    except AvdetError as err:
        raise fail(str(err)) from None
    _print_operating_point(point, classes, checkpoint)


def _print_operating_point(point, classes: list[str], checkpoint: Path) -> None:
    val = point.validation or {}
    table = Table(title=f"Operating point chosen on {escape(str(point.split))}", show_edge=False)
    table.add_column("class")
    table.add_column("threshold", justify="right")
    for k, (name, t) in enumerate(zip(classes, point.thresholds, strict=True)):
        note = " (pooled: few events)" if k in point.fallback else ""
        table.add_row(escape(name), f"{t:.3f}{note}")
    out.print(table)
    overlap = "any overlap" if point.overlap_iou == 0 else f"tIoU > {point.overlap_iou}"
    out.print(
        f"event-level at tIoU {point.tiou}: precision {100 * val.get('precision', 0):.1f} %, recall "
        f"{100 * val.get('recall', 0):.1f} %, F1 {100 * val.get('f1', 0):.1f} %; same-class events suppressed at "
        f"{overlap}",
        highlight=False,
    )
    console.print(f"stored in {escape(str(checkpoint))}", highlight=False)


# -- plot --------------------------------------------------------------------------------------------------------
@app.command()
def plot(
    events_json: Annotated[Path, typer.Argument(help="An events.json written by `avdet detect`.")],
    out_png: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("timeline.png"),
    annotations: Annotated[Path, typer.Option(help="Draw this video's ground truth under the events.")] = None,
) -> None:
    """Draw an event timeline: one lane per class, events as bars, ground truth under them."""
    from avdet.pipeline.io.plots import plot_events_file

    try:
        plot_events_file(events_json, out_png, annotations=annotations)
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(f"timeline written to {out_png}")


# -- weights / convert -------------------------------------------------------------------------------------------
@app.command()
def weights(
    weights_dir: Annotated[
        Path, typer.Option(help="Weights folder [default: $AVDET_WEIGHTS or ~/.cache/avdet/weights].")
    ] = None,
    download: Annotated[bool, typer.Option(help="Fetch missing files from their canonical locations.")] = False,
    extractor: Annotated[str, typer.Option(help="Only the files this extractor set needs (e.g. i3d_vggish).")] = None,
) -> None:
    """List the pretrained weight files avdet knows, where they go and whether they are present and intact."""
    from avdet.extractors.weights import download_weights, files_for, weights_report

    try:
        names = files_for(extractor) if extractor else None
        if download:
            download_weights(names, weights_dir)
        rows = [r for r in weights_report(weights_dir) if names is None or r["name"] in names]
    except AvdetError as err:
        raise fail(str(err)) from None
    table = Table(
        title=f"pretrained weights in {Path(rows[0]['file']).parent if rows else weights_dir}", show_edge=False
    )
    for col in ("file", "status", "used by", "get it from"):
        table.add_column(col)
    missing = 0
    for r in rows:
        if not r["present"]:
            status, missing = "[red]missing[/]", missing + 1
        elif r["sha_ok"] is False:
            status, missing = "[red]corrupt[/]", missing + 1
        else:
            status = "[green]ok[/]" if r["sha_ok"] else "[green]present[/] (no checksum)"
        table.add_row(r["name"], status, r["used_by"], r["url"])
    out.print(table)
    if missing and download:
        raise typer.Exit(1)


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="A released reference checkpoint (UnAV or CCNet repository).")],
    dst: Annotated[Path, typer.Argument(help="The avdet checkpoint to write.")],
    model: Annotated[str, typer.Option(help="unav | ccnet")] = "unav",
    classes: Annotated[Path, typer.Option(help="Class list TSV (label_id, label), e.g. unav100_classes.tsv.")] = None,
    extractor: Annotated[str, typer.Option(help="Features the checkpoint was trained on.")] = "i3d_vggish",
    config: Annotated[
        Path, typer.Option(help="The reference YAML the checkpoint was trained with (its model section).")
    ] = None,
) -> None:
    """Turn an officially released UnAV / CCNet checkpoint into an avdet checkpoint (documented key mapping)."""
    import yaml

    from avdet.pipeline.convert import convert_checkpoint
    from avdet.pipeline.data.annotations import read_classes

    try:
        if classes is None:
            raise ConfigError("--classes is required: the reference checkpoints do not store class names")
        names = read_classes({"database": {}}, classes)
        model_config = None
        if config is not None:
            try:
                model_config = (yaml.safe_load(config.read_text()) or {}).get("model")
            except (OSError, yaml.YAMLError) as err:
                raise ConfigError(f"{config}: cannot read the reference config ({err})") from None
        released = {"name": extractor, "released": True}
        convert_checkpoint(src, dst, model, names, released, model_config=model_config)
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(f"wrote {dst}")


RAY_LOCAL = "local"


def _ray_argv(argv: list[str]) -> list[str]:
    """`--ray` may stand alone (start a local runtime): give it the value `local` unless an address follows."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg != "--ray":
            continue
        nxt = out[i + 1] if i + 1 < len(out) else None
        is_address = nxt is not None and (nxt in ("auto", RAY_LOCAL) or (":" in nxt and not Path(nxt).exists()))
        if not is_address:
            out.insert(i + 1, RAY_LOCAL)
        break
    return out


def main() -> None:
    try:
        app(args=_ray_argv(sys.argv[1:]), prog_name="avdet")
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
