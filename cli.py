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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from avdet.errors import AvdetError

app = typer.Typer(
    name="avdet",
    help="Find audio-visual events in raw video: features, training, detection and UnAV-100 evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def default_cache() -> Path:
    return Path(os.environ.get("AVDET_CACHE", Path.home() / ".cache" / "avdet" / "features"))


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
        typer.Option(help="Pretrained weights folder [default: $AVDET_WEIGHTS_DIR].", show_default=False),
    ] = None,
    random_weights: Annotated[bool, typer.Option(help="Random backbone weights (tests and benchmarks only).")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
) -> None:
    """Decode videos, compute features and cache them. Re-running does only what is missing."""
    from avdet.pipeline import media
    from avdet.pipeline.extract import ExtractOptions, ExtractResult, extract_videos

    if backend not in ("ffmpeg", "decord"):
        raise fail(f"unknown backend {backend!r}: use ffmpeg or decord")
    paths = media.expand_videos(videos)
    if not paths:
        raise fail("no video files found in " + ", ".join(map(str, videos)))
    cache = cache or default_cache()
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
) -> None:
    """Synthesise clips with overlapping audio-visual events (and distractors) plus UnAV-100-style ground truth."""
    from avdet.pipeline.sample import SampleConfig
    from avdet.pipeline.sample import make_sample as run

    cfg = SampleConfig(
        num_videos=videos,
        seed=seed,
        num_classes=classes,
        min_duration=min_duration,
        max_duration=max_duration,
    )
    with Progress(
        TextColumn("[bold]make-sample"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("sample", total=videos)
        try:
            ann = run(out_dir, cfg, progress=lambda done, total: progress.update(task, completed=done, total=total))
        except AvdetError as err:
            raise fail(str(err)) from None
    out.print(f"wrote {videos} clips and {ann}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
