"""The `avdet` command line: thin commands that parse, call one pipeline function and print."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
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
from typer.core import TyperGroup

from avdet.cli_help import HELP_OPTIONS, hide_flag_types, polish, with_dash_hint
from avdet.console import (
    STDOUT,
    configure_output,
    console,
    json_argv,
    json_text,
    out,
    print_error,
    print_report,
    visible,
    write_json,
)
from avdet.errors import AvdetError
from avdet.progress import VideoProgress, cpu_estimate
from avdet.version import __version__

# Fixed choices, listed in --help and checked by the parser. `onepeace` is not among the extractors: avdet reads
# the released ONE-PEACE features but cannot compute them (see extractors/onepeace.py).
Extractor = Literal["lite", "i3d_vggish", "vgg19_vggish"]
Backend = Literal["ffmpeg", "decord"]
OutputFormat = Literal["json", "srt", "vtt"]
ReferenceModel = Literal["unav", "ccnet"]
ReleasedFeatures = Literal["i3d_vggish", "onepeace"]  # the released UnAV-100 feature sets (`convert`)


def _parse_device(value: str) -> str:
    """auto | cpu | cuda | cuda:N, checked; `auto` is resolved where a model runs (`_resolve_device`), so parsing
    never imports torch (`eval --predictions` does without it)."""
    if value == "auto":
        return value
    kind, _, index = value.partition(":")
    if (kind == "cpu" and not index) or (kind == "cuda" and (not index or index.isdigit())):
        return value
    raise typer.BadParameter(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")


def _resolve_device(value: str) -> str:
    """`auto` -> the first GPU when there is one, else the CPU; a CUDA device that is not there: one line."""
    from avdet.pipeline.threads import resolve_device_name

    try:
        return resolve_device_name(value)
    except AvdetError as err:
        raise fail(str(err)) from None


def _threads_option() -> Any:
    return typer.Option(min=1, help="torch threads per process.", show_default="the idle cores / processes")


def _device_option() -> Any:
    return typer.Option(
        parser=_parse_device, metavar="[auto|cpu|cuda|cuda:N]", help="Where to compute (auto: a GPU if there is one)."
    )


def _set_log_level(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> None:
    """-v/-vv/-q after a subcommand's name (the root's own -v/-q are read in `_root`)."""
    if ctx.resilient_parsing or not value:
        return
    level = logging.ERROR if param.name == "quiet" else [logging.INFO, logging.DEBUG][min(value, 2) - 1]
    logging.getLogger().setLevel(level)


def _verbosity_template(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            expose_value=False,
            callback=_set_log_level,
            help="More log output (-v, -vv).",
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", expose_value=False, callback=_set_log_level, help="Only errors in the log.")
    ] = False,
) -> None:
    """Never run: Typer builds the -v/-q options from this signature (with its help formatting)."""


def _verbosity_options() -> list[Any]:
    holder = typer.Typer()
    holder.command()(_verbosity_template)
    return [p for p in typer.main.get_command(holder).params if p.name in ("verbose", "quiet")]


class AvdetGroup(TyperGroup):
    """The avdet command group: every subcommand also takes -v/-vv/-q after its name (as pip and torchrun do)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        prefix = f"{self.name} " if self.name and self.name != "avdet" else ""
        polish(self, prefix.strip())
        for name, command in self.commands.items():
            if not isinstance(command, TyperGroup):  # a sub-group (cache) gives its own commands the options
                command.params.extend(_verbosity_options())
                polish(command, prefix + name)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        hide_flag_types(params)  # the root's --install-completion is added after __init__
        return params

    def invoke(self, ctx: Any) -> Any:
        """A subcommand's `No such option: -clip.mp4` gets a hint about `--`."""
        return with_dash_hint(super().invoke, ctx)


app = typer.Typer(
    name="avdet",
    cls=AvdetGroup,
    help="Find audio-visual events in raw video: features, training, detection and UnAV-100 evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def _show_version(value: bool) -> None:
    if value:
        out.print(f"avdet {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-v, -vv).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors in the log.")] = False,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit.")
    ] = False,
) -> None:
    configure_output(verbose, quiet)


CACHE_DEFAULT = "$AVDET_CACHE or ~/.cache/avdet/features"
WEIGHTS_DEFAULT = "$AVDET_WEIGHTS or ~/.cache/avdet/weights"
FROM_CHECKPOINT = "from the checkpoint"


# -- extract ---------------------------------------------------------------------------------------------------
@app.command()
def extract(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders (searched recursively).")],
    cache: Annotated[Path, typer.Option(help="Feature store folder.", show_default=CACHE_DEFAULT)] = None,
    extractor: Annotated[
        Extractor, typer.Option(help="Feature recipe (ONE-PEACE features: read the released ones).")
    ] = "lite",
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Recompute features that are already cached.")] = False,
    backend: Annotated[Backend, typer.Option(help="Frame decoder (decord falls back to ffmpeg).")] = "ffmpeg",
    weights_dir: Annotated[Path, typer.Option(help="Pretrained weights folder.", show_default=WEIGHTS_DEFAULT)] = None,
    random_weights: Annotated[bool, typer.Option(help="Random backbone weights (tests and benchmarks only).")] = False,
    device: Annotated[str, _device_option()] = "auto",
    ray: Annotated[
        str,
        typer.Option("--ray", help="Run as Ray tasks: --ray (local runtime) or --ray ADDRESS.", show_default="off"),
    ] = None,
    threads: Annotated[int, _threads_option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
) -> None:
    """Decode videos, compute features and cache them. Re-running does only what is missing."""
    from avdet.pipeline.extract import ExtractOptions, ExtractResult, extract_videos, extract_videos_ray
    from avdet.pipeline.io import media

    paths = media.expand_videos(videos)
    if not paths:
        raise fail("no video files found in " + ", ".join(map(str, videos)))
    media.require_ffmpeg()  # before any progress bar: one line, not one failed video each
    from avdet.pipeline.io.store import default_cache_dir

    cache = cache or default_cache_dir()
    options = ExtractOptions(
        extractor=extractor,
        backend=backend,
        overwrite=overwrite,
        weights_dir=str(weights_dir) if weights_dir else None,
        random_weights=random_weights,
        device=_resolve_device(device),
    )
    estimate = cpu_estimate(extractor, options.device, paths)
    if estimate:
        console.print(escape(estimate), highlight=False, soft_wrap=True)
    failed = []
    shown = VideoProgress("extract", len(paths), console=console)
    with shown:

        def on_result(res: ExtractResult) -> None:
            shown.video_done(res.media_seconds)
            if res.status == "failed":
                failed.append(res)
                shown.console.print(
                    f"[red]failed[/] {escape(visible(res.path))}: {escape(visible(res.reason or ''))}",
                    highlight=False,
                    soft_wrap=True,
                )
            elif res.reason:  # done, with a warning (e.g. decode errors)
                shown.console.print(
                    f"[yellow]warning[/] {escape(visible(res.path))}: {escape(visible(res.reason))}",
                    highlight=False,
                    soft_wrap=True,
                )

        try:
            if ray is not None:
                address = None if ray == RAY_LOCAL else ray
                results = extract_videos_ray(paths, cache, options, address=address, on_result=on_result)
            else:
                results = extract_videos(
                    paths,
                    cache,
                    options,
                    workers=workers,
                    threads=threads,
                    on_result=on_result,
                    on_media=shown.on_media,  # within each video (one process: workers cannot call back)
                )
        except AvdetError as err:
            raise fail(str(err)) from None
    _extract_summary(results, shown.progress.get_time() - shown.clock, cache)
    if as_json:
        out.print_json(json_text(_extract_json(results, cache)))
    if failed:
        raise typer.Exit(1)


def _extract_summary(results: list, wall: float, cache: Path) -> None:
    table = Table(title=f"extract summary ({escape(str(cache))})", show_edge=False)
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


def _extract_json(results: list, cache: Path) -> dict:
    """`extract --json`: counts and media seconds per status, and each failure with its reason."""
    summary = {"cache": str(cache), "videos": len(results)}
    for status in ("done", "cached", "failed"):
        rows = [r for r in results if r.status == status]
        summary[status] = {"videos": len(rows), "media_seconds": sum(r.media_seconds for r in rows)}
    summary["failures"] = [{"path": r.path, "reason": r.reason} for r in results if r.status == "failed"]
    return summary


# -- sample data -------------------------------------------------------------------------------------------------
@app.command("make-sample")
def make_sample(
    out_dir: Annotated[Path, typer.Argument(help="Folder for videos/, annotations.json and classes.tsv.")],
    videos: Annotated[int, typer.Option(min=1, help="Number of clips.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
    classes: Annotated[int, typer.Option(min=2, help="Number of event classes.")] = 5,
    min_duration: Annotated[float, typer.Option(help="Shortest clip, seconds.")] = 10.0,
    max_duration: Annotated[float, typer.Option(help="Longest clip, seconds.")] = 20.0,
    object_scale: Annotated[
        float, typer.Option(help="Object size factor (1: 12-18 % of the short side; 0.3: small objects).")
    ] = 1.0,
    busy_background: Annotated[
        bool, typer.Option(help="Colourful high-contrast backgrounds instead of grey textured ones.")
    ] = False,
    mismatched: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Chance per clip of a mismatched pair: one class's object seen while another class is heard "
            "(not an event).",
        ),
    ] = 0.0,
    visual_info: Annotated[
        str,
        typer.Option(
            help="How much the picture tells: full, weak (half the objects at random classes/times), unrelated, "
            "crowded (every class all the time) or static (one frame); the ground truth stays the plan's."
        ),
    ] = "full",
    audio_info: Annotated[
        str, typer.Option(help="How much the sound tells: full, weak, unrelated, crowded or silent.")
    ] = "full",
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
    overwrite: Annotated[
        bool, typer.Option(help="Replace annotation, class and clip files in OUT_DIR that make-sample did not make.")
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
        out.print(f"wrote AVE-layout features of {videos} videos to {escape(str(out_dir))}")
        return
    if ave:
        run = partial(
            make_ave_sample,
            cfg=AveSampleConfig(num_videos=videos, seed=seed, num_classes=classes),
            overwrite=overwrite,
        )
    else:
        cfg = SampleConfig(
            num_videos=videos,
            seed=seed,
            num_classes=classes,
            min_duration=min_duration,
            max_duration=max_duration,
            object_scale=object_scale,
            busy_background=busy_background,
            mismatched=mismatched,
            visual_info=visual_info,
            audio_info=audio_info,
        )
        run = partial(make_dense, cfg=cfg, overwrite=overwrite)
    from avdet.pipeline.io.media import require_ffmpeg

    require_ffmpeg()  # before the progress bar: one line
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
    out.print(f"wrote {videos} clips and {escape(str(ann))}")


# -- train -------------------------------------------------------------------------------------------------------
@app.command()
def train(
    config: Annotated[str, typer.Option("--config", "-c", help="YAML config (a path, or a name in configs/).")],
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a field: train.lr=0.001 (repeatable).", show_default="none")
    ] = None,
    run_dir: Annotated[
        Path,
        typer.Option(help="Where checkpoints, config.yaml and TensorBoard logs go.", show_default="runs/<config name>"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from run-dir/last.ckpt (with the run's config).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in run-dir.")] = False,
    threads: Annotated[int, _threads_option()] = None,
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
    _apply_threads(threads, workers=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # DDP ranks share this node
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
            result = run_train(cfg, run_dir, resume=resume, overwrite=overwrite, reporter=reporter)
    except AvdetError as err:
        raise fail(str(err)) from None
    if main_rank:
        if result.operating_point is not None:
            _print_trained_operating_point(result.operating_point, result.classes, result.run_dir / "best.ckpt")
        out.print(
            f"best validation {_metric_text(result.metric, result.best_metric)} (epoch {result.best_epoch}); "
            f"checkpoints in {escape(str(result.run_dir))} (per-epoch metrics: metrics.jsonl, curves.png)"
        )
        _print_stream_report(result.run_dir)


def _print_stream_report(run_dir: Path) -> None:
    """An audio-visual LoCo trained with modality dropout: each stream's validation floor against chance and
    whether fusion beats the better one (pipeline/stream_report.py); other models: nothing."""
    from avdet.pipeline.checkpoint import load_checkpoint
    from avdet.pipeline.stream_report import can_remove_streams, stream_report, write_stream_report

    best = run_dir / "best.ckpt"
    try:
        if not best.is_file() or can_remove_streams(load_checkpoint(best, "cpu")) is not None:
            return
        report = stream_report(best)
        write_stream_report(run_dir, report)
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(escape(report.text()))


def _print_trained_operating_point(point, classes: list[str], checkpoint: Path) -> None:
    """What calibration chose at the end of `train`: the table for a few classes, its range for many."""
    if len(classes) <= 20:
        _print_operating_point(point, classes, checkpoint)
        return
    val = point.validation or {}
    out.print(
        f"operating point chosen on {escape(str(point.split))}: per-class thresholds {min(point.thresholds):.3f}-"
        f"{max(point.thresholds):.3f} ({len(point.fallback)} pooled), validation F1 {100 * val.get('f1', 0):.1f} %; "
        f"`avdet calibrate {escape(str(checkpoint))}` prints the table",
        highlight=False,
    )


def _metric_text(name: str, value: float) -> str:
    """A validation metric as printed: mAP is kept as a fraction, segment accuracy in percent."""
    return f"accuracy {value:.2f} %" if name == "val_accuracy" else f"Avg. mAP {100 * value:.2f}"


def _apply_threads(threads: int | None, workers: int = 1) -> None:
    """torch's intra-op threads for this process (`pipeline.threads`: --threads, else the idle cores' share)."""
    from avdet.pipeline.threads import apply_threads

    apply_threads(workers, threads)


# -- detect ------------------------------------------------------------------------------------------------------


@app.command()
def detect(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders.")],
    checkpoint: Annotated[
        list[Path],
        typer.Option(
            "--checkpoint",
            help="A trained avdet checkpoint; repeat it to put several models on one timeline (e.g. audio-visual, "
            "audio-only and visual-only: each event then says which modality found it).",
            show_default="none",
        ),
    ] = None,
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            help="A named pretrained model (see `avdet models`): downloaded and converted once into "
            "$AVDET_HOME/models; repeatable, and combinable with --checkpoint.",
            show_default="none",
        ),
    ] = None,
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output file (one video), folder (several) or - for standard output.",
            show_default="a table on stdout",
        ),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", help="Output format; alone: to standard output.", show_default="from --out's suffix"),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="One score threshold for every class instead of the checkpoint's calibrated per-class ones "
            "(0: every candidate).",
            show_default=FROM_CHECKPOINT,
        ),
    ] = None,
    all_events: Annotated[
        bool, typer.Option("--all", help="Every ranked candidate (up to 100 per class), e.g. for `avdet eval`.")
    ] = False,
    sigma: Annotated[float, typer.Option(help="Soft-NMS Gaussian sigma.", show_default=FROM_CHECKPOINT)] = None,
    max_events: Annotated[
        int, typer.Option(help="Soft-NMS: at most this many candidates per class.", show_default=FROM_CHECKPOINT)
    ] = None,
    plot: Annotated[
        Path, typer.Option(help="Also draw the event timeline to this PNG (one video).", show_default="no plot")
    ] = None,
    report_path: Annotated[
        Path,
        typer.Option(
            "--report",
            help="Also write an interactive HTML report: a file (one video) or a folder (index.html and a page per "
            "video); `avdet report` adds ground truth.",
            show_default="none",
        ),
    ] = None,
    cache: Annotated[Path, typer.Option(help="Feature store folder.", show_default=CACHE_DEFAULT)] = None,
    device: Annotated[str, _device_option()] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per forward pass.")] = 1,
    weights_dir: Annotated[
        Path, typer.Option(help="Pretrained extractor weights folder.", show_default=WEIGHTS_DEFAULT)
    ] = None,
    random_weights: Annotated[bool, typer.Option(help="Random extractor weights (tests only).")] = False,
    threads: Annotated[int, _threads_option()] = None,
    explain_streams: Annotated[
        bool,
        typer.Option(
            help="Add each event's score with the audio alone and the visual alone, and which stream drove it, "
            "to the JSON (a LoCo trained with model.modality_dropout > 0; see docs/fusion.md)."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files that avdet did not write.")] = False,
) -> None:
    """Find audio-visual events in videos and write them as JSON, SRT or WebVTT (or print a table).

    By default a dense checkpoint shows the events above its calibrated per-class thresholds (chosen on the
    validation split for the best event-level F1, see `avdet calibrate`), with overlapping same-class events
    suppressed; a checkpoint without them uses postprocess.output_threshold (0.1) for every class. The JSON
    records the thresholds it applied."""
    from avdet.pipeline.detect import CombinedDetector, Detector
    from avdet.pipeline.io import media
    from avdet.pipeline.outputs import plan_outputs, write_detection

    if all_events and threshold is not None:
        raise fail("give --threshold or --all, not both")
    if not checkpoint and not model:
        raise fail("give --checkpoint (a trained checkpoint) or --model (a pretrained model: see `avdet models`)")
    paths = media.expand_videos(videos)
    if not paths:
        raise fail("no video files found in " + ", ".join(map(str, videos)))
    media.require_ffmpeg()  # before any progress bar: one line, not one failed video each
    _apply_threads(threads)
    try:
        targets = plan_outputs(paths, out_path, fmt, plot, checkpoints=checkpoint or [], overwrite=overwrite)
        if report_path is not None:
            from avdet.pipeline.report import check_report_target

            check_report_target(report_path, len(paths))
        checkpoint = [*(checkpoint or []), *_model_checkpoints(model or [])]
        detectors = [
            Detector(
                ckpt,
                cache=cache,
                device=_resolve_device(device),
                threshold=threshold,
                all_events=all_events,
                batch_size=batch_size,
                weights_dir=str(weights_dir or "") or None,
                random_weights=random_weights,
                postprocess={"sigma": sigma, "max_seg_num": max_events},
                explain_streams=explain_streams,
            )
            for ckpt in checkpoint
        ]
    except AvdetError as err:
        raise fail(str(err)) from None
    combined = CombinedDetector(detectors)
    record = combined.operating_point_record()
    failures = 0
    pages: list = []  # what --report shows, per video
    for estimate in dict.fromkeys(
        cpu_estimate(d.checkpoint.extractor.get("name", ""), str(d.device), paths) for d in detectors
    ):
        if estimate:  # once per extractor, before the long part
            console.print(escape(estimate), highlight=False, soft_wrap=True)
    shown = VideoProgress("detect", len(paths), console=console)
    for d in detectors:
        d.media_progress = shown.on_media  # feature computation within each video, in media seconds
    with shown:
        for det in combined.run(paths, batch_size):
            shown.video_done(det.duration)
            if det.events is None:
                failures += 1
                console.print(
                    f"[red]failed[/] {escape(visible(det.path))}: {escape(visible(str(det.error)))}",
                    highlight=False,
                    soft_wrap=True,
                )
                continue
            target = targets.get(det.path)
            try:
                if target is None:
                    _print_events(det.video_id, det.duration, det.events)
                else:
                    write_detection(
                        target,
                        det.events,
                        video=det.video_id,
                        duration=det.duration,
                        model=combined.name,
                        fmt=fmt,
                        operating_point=record,
                        several=len(paths) > 1,
                    )
                    if target != STDOUT:
                        console.print(
                            f"{escape(visible(det.path))}: {len(det.events)} events -> {escape(visible(str(target)))}",
                            highlight=False,
                            soft_wrap=True,
                        )
                if plot is not None:
                    from avdet.pipeline.io.plots import plot_timeline  # matplotlib only when asked

                    plot_timeline(det.events, det.duration, plot, classes=combined.classes, title=det.video_id)
                pages.append((det.video_id, det.duration, det.events, Path(det.path)))
            except BrokenPipeError:
                raise  # the reader of --out - is gone: stop at once (click exits 1 quietly), no line per video
            except (AvdetError, OSError) as err:
                failures += 1
                console.print(
                    f"[red]failed[/] {escape(visible(det.path))}: {escape(visible(str(err)))}",
                    highlight=False,
                    soft_wrap=True,
                )
    if report_path is not None and pages:
        failures += not _write_detect_report(report_path, pages, combined.name, record, checkpoint)
    if failures:
        raise typer.Exit(1)


@app.command()
def live(
    source: Annotated[
        str,
        typer.Argument(
            help="A file (played at its own speed), - (standard input), a udp/rtp/rtsp/http URL or a device."
        ),
    ],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A trained dense avdet checkpoint (lite features).")],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Also keep the events in this .json/.srt/.vtt file, valid after every event.",
            show_default="stdout only",
        ),
    ] = None,
    hop: Annotated[float, typer.Option(min=0.01, help="Run the model every this many seconds of stream.")] = 0.64,
    margin: Annotated[
        float, typer.Option(min=0.0, help="An event is final once its end lies this many seconds behind the stream.")
    ] = 1.0,
    threshold: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="One score threshold for every class.", show_default=FROM_CHECKPOINT),
    ] = None,
    realtime: Annotated[
        bool, typer.Option(help="Read a file at its own speed (-re); --no-realtime: as fast as it decodes.")
    ] = True,
    input_format: Annotated[
        str, typer.Option("--format", help="ffmpeg input format (e.g. v4l2, alsa, mpegts).", show_default="probed")
    ] = None,
    retries: Annotated[int, typer.Option(min=0, help="Reconnections of a dropped network stream.")] = 5,
    backoff: Annotated[float, typer.Option(min=0.0, help="Seconds before the first retry (doubling).")] = 1.0,
    stall: Annotated[float, typer.Option(min=0.1, help="Seconds without data that count as a drop.")] = 10.0,
    report_every: Annotated[float, typer.Option(min=0.1, help="Seconds between lag reports.")] = 60.0,
    stats: Annotated[
        Path, typer.Option(help="Write the run's statistics (JSON) here at the end.", show_default="not written")
    ] = None,
    device: Annotated[str, _device_option()] = "cpu",
    threads: Annotated[int, _threads_option()] = None,
) -> None:
    """Detect events in a stream while it plays: one JSON line per event on stdout as soon as it is final
    ({label, label_id, start, end, score, emitted_at}; seconds of stream). SIGINT / SIGTERM stop it; the events
    final by then are printed and written, and it exits 0. See docs/live.md."""
    from avdet.pipeline.detect import Detector
    from avdet.pipeline.live import LiveOptions, run_live

    _apply_threads(threads)
    if logging.getLogger().level <= logging.WARNING:  # the lag report, once per --report-every
        logging.getLogger("avdet.pipeline.live").setLevel(logging.INFO)
    try:
        detector = Detector(checkpoint, device=_resolve_device(device), threshold=threshold)
        options = LiveOptions(
            hop_s=hop,
            margin_s=margin,
            realtime=None if realtime else False,
            input_format=input_format,
            retries=retries,
            backoff_s=backoff,
            stall_s=stall,
            report_every_s=report_every,
        )
        result = run_live(
            detector,
            source,
            options,
            on_event=lambda ev: print(ev.to_json(), flush=True),
            out=out_path,
            stats_path=stats,
        )
    except AvdetError as err:
        raise fail(str(err)) from None
    console.print(
        f"{escape(source)}: {result.events} events in {result.stream_s:.1f} s of stream"
        f"{' (stopped)' if result.stopped else ''}; real-time factor {result.real_time_factor:.2f}, "
        f"max lag {result.max_lag_s:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


def _model_checkpoints(names: list[str]) -> list[Path]:
    """`--model NAME`: the converted checkpoint of each named model, fetched and converted on first use."""
    from avdet.pipeline.models_zoo import model_checkpoint

    return [model_checkpoint(name, progress=not _quiet()) for name in names]


def _write_detect_report(path: Path, pages: list, model: str, record: dict, checkpoints: list[Path]) -> bool:
    """`detect --report`: the detected videos' pages (no ground truth); False when it could not be written."""
    from avdet.pipeline.report import Meta, VideoReport, write_report

    reports = [VideoReport(vid, dur, evs, None, media, model, record) for vid, dur, evs, media in pages]
    try:
        written = write_report(path, reports, Meta(_command_line(), ", ".join(map(str, checkpoints))))
    except AvdetError as err:
        console.print(f"[red]failed[/] report: {escape(str(err))}", highlight=False, soft_wrap=True)
        return False
    console.print(f"report written to {escape(str(written))}", highlight=False, soft_wrap=True)
    return True


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
    predictions: Annotated[
        Path, typer.Option(help="A predictions file in the UnAV-100 results format.", show_default="none")
    ] = None,
    checkpoint: Annotated[
        Path, typer.Option(help="Run a checkpoint over the split's features, then score.", show_default="none")
    ] = None,
    annotations: Annotated[Path, typer.Option(help="Ground truth.", show_default="the checkpoint's")] = None,
    split: Annotated[str, typer.Option(help="Subset to score.")] = "test",
    json_out: Annotated[
        Path,
        typer.Option(
            "--json",
            help="Also give the scores as JSON: to stdout (--json alone, or --json -) or to a file (--json FILE).",
            show_default="off",
        ),
    ] = None,
    save_predictions: Annotated[
        Path,
        typer.Option(help="With --checkpoint: where to write the predictions.", show_default="beside the checkpoint"),
    ] = None,
    confusion: Annotated[
        Path, typer.Option(help="Segment checkpoints: confusion matrix PNG.", show_default="beside the checkpoint")
    ] = None,
    cache: Annotated[Path, typer.Option(help="Feature store folder.", show_default="the checkpoint's")] = None,
    released_root: Annotated[
        Path, typer.Option(help="Released feature folder.", show_default="the checkpoint's")
    ] = None,
    ave_root: Annotated[Path, typer.Option(help="AVE HDF5 feature folder.", show_default="the checkpoint's")] = None,
    cml: Annotated[
        bool, typer.Option(help="Segment checkpoints: cross-modal localization (A2V, V2A) instead of accuracy.")
    ] = False,
    report_dir: Annotated[
        Path,
        typer.Option(
            "--report",
            help="With a dense --checkpoint: an HTML report of the split in this folder (index.html, a page per "
            "video with its events at the operating point over the video and the ground truth).",
            show_default="none",
        ),
    ] = None,
    device: Annotated[str, _device_option()] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per forward pass.")] = 16,
    threads: Annotated[int, _threads_option()] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing prediction and picture files that avdet did not write.")
    ] = False,
) -> None:
    """UnAV-100 mAP at tIoU 0.5 ... 0.9 and Avg. (0.1 ... 0.9), identical to the reference evaluator; for a
    segment-task (AVE) checkpoint, segment accuracy with a per-class table and a confusion matrix."""
    if (predictions is None) == (checkpoint is None):
        raise fail("give exactly one of --predictions and --checkpoint", 2)
    if report_dir is not None and checkpoint is None:
        raise fail("--report needs --checkpoint (the pages show its events over the videos)", 2)
    from avdet.pipeline.io.guard import check_eval_paths

    try:
        if predictions is not None and annotations is None:
            raise fail("--predictions needs --annotations", 2)
        check_eval_paths(
            predictions=predictions,
            checkpoint=checkpoint,
            annotations=annotations,
            outputs={"--save-predictions": save_predictions, "--confusion": confusion, "--json": json_out},
            overwrite=overwrite,
        )
        if predictions is not None:
            from avdet.pipeline.metrics.mean_ap import evaluate_files

            report = evaluate_files(predictions, annotations, split)
        else:
            from avdet.pipeline.checkpoint import load_checkpoint
            from avdet.pipeline.evaluate import evaluate_checkpoint, evaluate_cml_checkpoint

            _apply_threads(threads)
            data = {"annotations": annotations, "cache": cache, "released_root": released_root, "ave_root": ave_root}
            device = _resolve_device(device)
            ckpt = load_checkpoint(checkpoint, device, data=data)
            if report_dir is not None and (cml or ckpt.task != "dense"):
                raise fail("--report shows a dense checkpoint's events; this is a segment-task evaluation")
            if cml:
                _eval_cml(evaluate_cml_checkpoint(ckpt, split=split, device=device), split, json_out)
                return
            report = evaluate_checkpoint(ckpt, split=split, device=device, batch_size=batch_size)
            _save_eval_outputs(report, checkpoint, save_predictions, confusion)
            if report_dir is not None:
                _write_split_report(ckpt, report.events, split, report_dir, checkpoint)
        print_report(report, to_stdout=json_out != STDOUT)
        write_json(json_out, report.as_dict())
    except AvdetError as err:
        raise fail(str(err)) from None


def _write_split_report(ckpt, events: dict, split: str, folder: Path, checkpoint: Path) -> None:
    from avdet.pipeline.report import Meta, write_split_report

    index = write_split_report(ckpt, events, split, folder, Meta(_command_line(), str(checkpoint)))
    console.print(f"report written to {escape(str(index))}", highlight=False, soft_wrap=True)


def _save_eval_outputs(report, checkpoint: Path, predictions: Path | None, confusion: Path | None) -> None:
    for path in report.save_outputs(checkpoint, predictions=predictions, confusion=confusion):
        console.print(f"wrote {escape(str(path))}", highlight=False)


def _eval_cml(result, split: str, json_out: Path | None) -> None:
    """`avdet eval --cml`: cross-modal localization accuracy of a segment checkpoint, beside chance."""
    table = Table(title=f"Cross-modal localization (%), split {split}, {result.videos} videos", show_edge=False)
    for col in ("A2V", "V2A", "random window"):
        table.add_column(col, justify="right")
    table.add_row(f"{result.a2v:.2f}", f"{result.v2a:.2f}", f"{result.chance:.2f}")
    (out if json_out != STDOUT else console).print(table)
    write_json(json_out, {"split": split, **result.__dict__})


# -- calibrate ---------------------------------------------------------------------------------------------------
@app.command()
def calibrate(
    positional: Annotated[
        Path, typer.Argument(metavar="[CHECKPOINT]", help="Deprecated: give --checkpoint.", hidden=True)
    ] = None,
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", help="A dense-task avdet checkpoint (rewritten in place).", show_default="none"),
    ] = None,
    split: Annotated[str, typer.Option(help="Split whose events choose the thresholds.")] = "validation",
    annotations: Annotated[Path, typer.Option(help="Ground truth.", show_default="the checkpoint's")] = None,
    cache: Annotated[Path, typer.Option(help="Feature store folder.", show_default="the checkpoint's")] = None,
    released_root: Annotated[
        Path, typer.Option(help="Released feature folder.", show_default="the checkpoint's")
    ] = None,
    min_events: Annotated[
        int, typer.Option(min=1, help="Classes with fewer true events in the split get the pooled threshold.")
    ] = 5,
    device: Annotated[str, _device_option()] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per forward pass.")] = 16,
    threads: Annotated[int, _threads_option()] = None,
) -> None:
    """Choose the per-class score thresholds `detect` applies by default: on a split (validation), those of the
    best event-level F1 at tIoU 0.5 (mAP's matching rule), and the same-class overlap suppression; stored in the
    checkpoint. `avdet train` does this for best.ckpt at the end of a dense run."""
    from avdet.pipeline.calibrate import calibrate_checkpoint

    checkpoint = _checkpoint_given(checkpoint, positional, "calibrate")
    data = {"annotations": annotations, "cache": cache, "released_root": released_root}
    _apply_threads(threads)
    try:
        point, classes = calibrate_checkpoint(
            checkpoint, split, device=_resolve_device(device), batch_size=batch_size, data=data, min_events=min_events
        )
    except AvdetError as err:
        raise fail(str(err)) from None
    _print_operating_point(point, classes, checkpoint)


def _checkpoint_given(option: Path | None, positional: Path | None, command: str) -> Path:
    """`--checkpoint CKPT` as detect and eval take it; the old positional still works for one release, with a
    warning. Neither or both: a usage error (exit 2)."""
    if option is not None and positional is not None:
        raise fail(f"give the checkpoint once: --checkpoint {option} or {positional}", 2)
    if positional is not None:
        console.print(
            f"[yellow]warning:[/] `avdet {command} CHECKPOINT` is deprecated and goes in the next release: "
            f"give --checkpoint {escape(str(positional))}",
            highlight=False,
            soft_wrap=True,
        )
        return positional
    if option is None:
        raise fail(f"{command} needs --checkpoint CHECKPOINT", 2)
    return option


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
    annotations: Annotated[
        Path, typer.Option(help="Draw this video's ground truth under the events.", show_default="none")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing PNG that avdet did not draw.")] = False,
) -> None:
    """Draw an event timeline: one lane per class, events as bars, ground truth under them."""
    from avdet.pipeline.io.guard import refuse_foreign, refuse_inputs
    from avdet.pipeline.io.plots import plot_events_file

    try:
        refuse_inputs([("--out", out_png)], [("events file", events_json), ("annotations", annotations)])
        refuse_foreign([out_png], overwrite)
        database = None
        if annotations is not None:
            from avdet.pipeline.data.annotations import load_annotations

            database = load_annotations(annotations)["database"]
        plot_events_file(events_json, out_png, database, annotations or "annotations")
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(f"timeline written to {escape(str(out_png))}")


# -- report ------------------------------------------------------------------------------------------------------
def _command_line() -> str:
    """The command as typed (program name shortened to avdet), shown on report pages."""
    import shlex

    return shlex.join(["avdet", *sys.argv[1:]])


@app.command()
def report(
    events: Annotated[Path, typer.Argument(help="An events JSON written by `avdet detect`, or a folder of them.")],
    out_path: Annotated[
        Path, typer.Option("--out", help="HTML file (one video) or folder (index.html and a page per video).")
    ] = Path("report.html"),
    video: Annotated[
        Path,
        typer.Option(
            help="The video file, or a folder holding <video id>.mp4 (.webm, .mkv, ...).", show_default="none"
        ),
    ] = None,
    annotations: Annotated[
        Path,
        typer.Option(help="Ground truth: lanes, tIoU and precision / recall / F1 at tIoU 0.5.", show_default="none"),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="Checkpoint name shown on the pages.", show_default="none")] = "",
) -> None:
    """Write an interactive HTML report: the video, its events on a timeline (ground truth under them), a score
    slider, class filters; a folder of events gives an index page with a row per video."""
    from avdet.pipeline.report import Meta, report_from_files

    try:
        path, pages = report_from_files(
            events, out_path, videos=video, annotations=annotations, meta=Meta(_command_line(), checkpoint)
        )
    except AvdetError as err:
        raise fail(str(err)) from None
    for page in pages:
        if page.video_path is None and video is not None:
            console.print(f"[yellow]no video[/] for {escape(page.video_id)} in {escape(str(video))}", highlight=False)
    out.print(f"report written to {escape(str(path))}", highlight=False, soft_wrap=True)


# -- weights / convert -------------------------------------------------------------------------------------------
def _quiet() -> bool:
    """`-q`: no progress bars either."""
    return logging.getLogger().level >= logging.ERROR


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON to stdout.")] = False,
) -> None:
    """List the named pretrained detectors `detect --model NAME` and `avdet.load(NAME)` accept: features, classes,
    published test mAP, where the file comes from, its checksum and license, and whether it is here already.

    The index is built in, or the JSON file / URL in $AVDET_MODEL_INDEX; models go to $AVDET_HOME/models
    (default ~/.cache/avdet/models)."""
    from avdet.pipeline.models_zoo import model_rows, models_dir

    try:
        rows = model_rows()
    except AvdetError as err:
        raise fail(str(err)) from None
    if as_json:
        out.print_json(json_text(rows))
        return
    table = Table(title=f"pretrained models (kept in {escape(str(models_dir()))})", show_edge=False)
    for col in ("name", "detector", "features", "classes", "test mAP", "size", "sha256", "license", "source", "here"):
        table.add_column(col, justify="right" if col in ("classes", "test mAP", "size") else "left")
    for r in rows:
        table.add_row(
            escape(r["name"]),
            escape(r["detector"]),
            escape(r["features"]),
            str(r["classes"]),
            "-" if r["published_map"] is None else f"{r['published_map']:.1f}",
            "?" if r["size"] is None else f"{r['size'] / 1e6:.0f} MB",
            "pinned" if r["pinned"] else "[yellow]unpinned[/]",
            escape(r["license"]),
            escape(r["url"]),
            "[green]yes[/]" if r["downloaded"] else "no",
        )
    out.print(table)


@app.command()
def weights(
    weights_dir: Annotated[Path, typer.Option(help="Weights folder.", show_default=WEIGHTS_DEFAULT)] = None,
    download: Annotated[bool, typer.Option(help="Fetch missing files from their canonical locations.")] = False,
    extractor: Annotated[
        Extractor, typer.Option(help="Only the files this extractor set needs.", show_default="all")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON to stdout.")] = False,
) -> None:
    """List the pretrained weight files avdet knows, where they go and whether they are present and intact."""
    from avdet.extractors.weights import files_for, weights_report
    from avdet.pipeline.weights import download_weights

    try:
        names = files_for(extractor) if extractor else None
        if download:
            download_weights(names, weights_dir, progress=not _quiet())
        rows = [r for r in weights_report(weights_dir) if names is None or r["name"] in names]
    except AvdetError as err:
        raise fail(str(err)) from None
    if as_json:
        out.print_json(json_text(rows))
    table = Table(
        title=f"pretrained weights in {escape(str(Path(rows[0]['file']).parent if rows else weights_dir))}",
        show_edge=False,
    )
    for col in ("file", "status", "sha256", "used by", "get it from"):
        table.add_column(col)
    missing = 0
    for r in rows:
        if not r["present"]:
            status, missing = "[red]missing[/]", missing + 1
        elif r["sha_ok"] is False:
            status, missing = "[red]corrupt[/]", missing + 1
        else:
            status = "[green]ok[/]" if r["sha_ok"] else "[green]present[/] (no checksum)"
        pinned = {"sha256": "pinned", "prefix": "prefix pinned"}.get(r["pinned"], "[yellow]unpinned[/]")
        table.add_row(escape(r["name"]), status, pinned, escape(r["used_by"]), escape(r["url"]))
    (console if as_json else out).print(table)
    if missing and download:
        raise typer.Exit(1)


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="A released reference checkpoint (UnAV or CCNet repository).")],
    dst: Annotated[Path, typer.Argument(help="The avdet checkpoint to write.")],
    model: Annotated[ReferenceModel, typer.Option(help="The reference repository the checkpoint comes from.")] = "unav",
    classes: Annotated[
        Path,
        typer.Option(
            help="Class list TSV (label_id, label), e.g. unav100_classes.tsv (required).", show_default="none"
        ),
    ] = None,
    extractor: Annotated[ReleasedFeatures, typer.Option(help="Features the checkpoint was trained on.")] = "i3d_vggish",
    config: Annotated[
        Path,
        typer.Option(
            help="The reference YAML the checkpoint was trained with (its model section).", show_default="the defaults"
        ),
    ] = None,
) -> None:
    """Turn an officially released UnAV / CCNet checkpoint into an avdet checkpoint (documented key mapping)."""
    from avdet.pipeline.convert import convert_release
    from avdet.pipeline.io.guard import refuse_inputs

    try:
        refuse_inputs([("DST", dst)], [("checkpoint", src), ("class list", classes), ("config", config)])
        convert_release(src, dst, model, classes, extractor, config)
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(f"wrote {escape(str(dst))}")


@app.command()
def export(
    dst: Annotated[Path, typer.Argument(metavar="DST", help="The .safetensors file to write.")],
    legacy_dst: Annotated[Path, typer.Argument(help="Deprecated form `export CHECKPOINT DST`.", hidden=True)] = None,
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="An avdet checkpoint (best.ckpt).", show_default="none")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace DST if it exists.")] = False,
    force: Annotated[bool, typer.Option("--force", hidden=True, help="The old name of --overwrite.")] = False,
) -> None:
    """Share a model without pickle: its weights and metadata (classes, config, extractor, post-processing) as
    safetensors, without the training state and the trainer's data paths. `detect` and `eval` load the file."""
    from avdet.pipeline.checkpoint import export_safetensors
    from avdet.pipeline.io.guard import refuse_inputs

    if legacy_dst is not None:  # `export CKPT DST`: the first word was the checkpoint
        checkpoint = _checkpoint_given(checkpoint, dst, "export")
        dst = legacy_dst
    checkpoint = _checkpoint_given(checkpoint, None, "export")
    try:
        refuse_inputs([("DST", dst)], [("checkpoint", checkpoint)])  # even with --overwrite
        if dst.exists() and not (overwrite or force):
            raise fail(f"{dst}: already exists (use --overwrite to replace it)")
        export_safetensors(checkpoint, dst)
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(f"wrote {escape(str(dst))}", highlight=False)


# -- data ---------------------------------------------------------------------------------------------------------
data_app = typer.Typer(
    cls=AvdetGroup, no_args_is_help=True, help="Get public datasets: annotations and released features to train on."
)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="The dataset: unav100 (UnAV-100 from Hugging Face).")],
    data_dir: Annotated[
        Path, typer.Option("--dir", help="Where to put it.", show_default="$AVDET_HOME/data/NAME")
    ] = None,
    revision: Annotated[
        str, typer.Option(help="Branch, tag or commit of the dataset repository.", show_default="main")
    ] = None,
) -> None:
    """Download a dataset's annotations and released features (resumable: run it again after a cut) into a layout
    `avdet train` reads in place, and print the `avdet train` line for it. Needs `pip install 'avdet[data]'`."""
    from avdet.pipeline.data_fetch import fetch_dataset

    try:
        fetched = fetch_dataset(name, data_dir, revision=revision, progress=not _quiet())
    except AvdetError as err:
        raise fail(str(err)) from None
    out.print(f"annotations: {escape(fetched.annotations)}", highlight=False, soft_wrap=True)
    for layout, folder in fetched.features.items():
        out.print(
            f"{layout} features: {escape(folder)} ({fetched.videos[layout]} videos)", highlight=False, soft_wrap=True
        )
    out.print(f"train on it with:\n  {escape(fetched.train_command())}", highlight=False, soft_wrap=True)


# -- cache -------------------------------------------------------------------------------------------------------
cache_app = typer.Typer(
    cls=AvdetGroup,
    no_args_is_help=True,
    help="Inspect and tidy the feature store: list, failed, verify, prune.",
    context_settings=HELP_OPTIONS,
)
app.add_typer(cache_app, name="cache")
CacheOption = Annotated[Path, typer.Option("--cache", help="Feature store folder.", show_default=CACHE_DEFAULT)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


def _store_root(cache: Path | None) -> Path:
    from avdet.pipeline.io.store import default_cache_dir

    return cache or default_cache_dir()


@cache_app.command("list")
def cache_list(cache: CacheOption = None, as_json: JsonFlag = False) -> None:
    """One row per extractor recipe: videos done and failed, files and size on disk."""
    from avdet.pipeline.cache import as_json as to_json
    from avdet.pipeline.cache import cache_summary

    root = _store_root(cache)
    try:
        rows = cache_summary(root)
    except AvdetError as err:
        raise fail(str(err)) from None
    if as_json:
        out.print_json(to_json(rows))
        return
    table = Table(title=f"feature store {escape(str(root))}", show_edge=False)
    for col in ("recipe", "extractor", "done", "failed", "files", "MB", "media hours"):
        table.add_column(col, justify="left" if col in ("recipe", "extractor") else "right")
    for r in rows:
        table.add_row(
            r.extractor,
            escape(r.name),
            str(r.done),
            str(r.failed),
            str(r.files),
            f"{r.bytes / 1e6:.1f}",
            f"{r.media_seconds / 3600:.2f}",
        )
    out.print(table)


@cache_app.command("failed")
def cache_failed(
    cache: CacheOption = None,
    extractor: Annotated[
        str, typer.Option(help="Only this extractor (name or recipe hash).", show_default="all")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Videos whose extraction failed, with the reason."""
    from avdet.pipeline.cache import as_json as to_json
    from avdet.pipeline.cache import cache_entries

    try:
        rows = cache_entries(_store_root(cache), status="failed", extractor=extractor)
    except AvdetError as err:
        raise fail(str(err)) from None
    if as_json:
        out.print_json(to_json(rows))
        return
    table = Table(title=f"{len(rows)} failed", show_edge=False)
    for col in ("video", "extractor", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r.path), escape(f"{r.name} ({r.extractor})"), escape(r.reason or ""))
    out.print(table)


@cache_app.command("verify")
def cache_verify(
    cache: CacheOption = None,
    fix: Annotated[bool, typer.Option(help="Forget missing and corrupt entries so `extract` redoes them.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Read back every feature file the index lists as done; exit 1 if any is missing or corrupt (unless fixed)."""
    from avdet.pipeline.cache import as_json as to_json
    from avdet.pipeline.cache import verify_cache

    try:
        report = verify_cache(_store_root(cache), fix=fix)
    except AvdetError as err:
        raise fail(str(err)) from None
    if as_json:
        out.print_json(to_json(report))
    else:
        for kind, items in (("missing", report.missing), ("corrupt", report.corrupt)):
            for item in items:
                console.print(f"[red]{kind}[/] {escape(item['video_id'])}: {escape(item['file'])}", highlight=False)
        fixed = f", {report.fixed} forgotten (run `avdet extract` again)" if report.fixed else ""
        out.print(
            f"{report.checked} checked: {report.ok} ok, {len(report.missing)} missing, {len(report.corrupt)} corrupt"
            f"{fixed}",
            highlight=False,
        )
    if not report.healthy and not fix:
        raise typer.Exit(1)


@cache_app.command("prune")
def cache_prune(
    cache: CacheOption = None,
    extractor: Annotated[
        Extractor, typer.Option(help="Remove every recipe of this extractor but today's.", show_default="none")
    ] = None,
    recipe: Annotated[
        list[str], typer.Option(help="Remove this recipe (hash or prefix; repeatable).", show_default="none")
    ] = None,
    failed: Annotated[bool, typer.Option(help="Forget failure records (the next extract retries).")] = False,
    weights_dir: Annotated[
        Path, typer.Option(help="Weights folder (with --extractor).", show_default=WEIGHTS_DEFAULT)
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would be removed.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove stale extractor recipes (features of a changed extractor config) and failure records."""
    from avdet.pipeline.cache import as_json as to_json
    from avdet.pipeline.cache import prune_cache

    if extractor is None and not recipe and not failed:
        raise fail("nothing to prune: give --extractor, --recipe or --failed")
    try:
        stale_of = None
        if extractor is not None:
            from avdet.pipeline.extract import ExtractOptions
            from avdet.pipeline.io.store import spec_hash

            options = ExtractOptions(extractor=extractor, weights_dir=str(weights_dir) if weights_dir else None)
            stale_of = (extractor, spec_hash(options.build().spec))
        report = prune_cache(
            _store_root(cache), recipes=recipe or [], stale_of=stale_of, failed=failed, dry_run=dry_run
        )
    except AvdetError as err:
        raise fail(str(err)) from None
    if as_json:
        out.print_json(to_json(report))
        return
    verb = "would remove" if dry_run else "removed"
    for r in report.recipes:
        out.print(f"{verb} {r['extractor']} ({escape(r['name'])}): {r['files']} files, {r['bytes'] / 1e6:.1f} MB")
    out.print(f"{verb} {report.failed_forgotten} failure records", highlight=False)


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
        app(args=json_argv(_ray_argv(sys.argv[1:])), prog_name="avdet")
    except AvdetError as err:  # one a command did not catch (ffmpeg missing, a full disk mid-way): one line
        print_error(str(err))
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
