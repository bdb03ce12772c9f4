"""What every `avdet` command's help and usage errors share, applied once to the built click commands (so the
command functions in `cli.py` stay as they are): `-h` as `--help`, an example at the end of each help, flags shown
without a `<bool>` type, and a hint about `--` when a file name starting with `-` is taken for an option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer import _click as click  # Typer carries its own click: its commands, contexts and errors are these
from typer._click.exceptions import NoSuchOption

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

# One runnable line per command (the quickstart's files), shown under "Example" in its --help.
EXAMPLES: dict[str, list[str]] = {
    "extract": ["avdet extract videos/ --extractor lite --workers 2"],
    "make-sample": ["avdet make-sample data/sample --videos 60"],
    "train": ["avdet train --config tiny --set data.annotations=data/sample/annotations.json"],
    "detect": [
        "avdet detect clip.mp4 --checkpoint runs/tiny/best.ckpt --out events.json",
        "avdet detect videos/ --checkpoint best.ckpt --out events/ --format srt",
    ],
    "eval": [
        "avdet eval --predictions preds.json --annotations annotations.json --json scores.json",
        "avdet eval --checkpoint runs/tiny/best.ckpt --split test",
    ],
    "calibrate": ["avdet calibrate --checkpoint runs/tiny/best.ckpt --split validation"],
    "plot": ["avdet plot events.json --out timeline.png --annotations annotations.json"],
    "weights": ["avdet weights --extractor i3d_vggish --download"],
    "convert": [
        "avdet convert unav_release.pth unav100.ckpt --model unav --classes unav100_classes.tsv",
    ],
    "export": ["avdet export --checkpoint runs/tiny/best.ckpt model.safetensors"],
    "cache list": ["avdet cache list --json"],
    "cache failed": ["avdet cache failed --extractor lite"],
    "cache verify": ["avdet cache verify --fix"],
    "cache prune": ["avdet cache prune --extractor lite --dry-run"],
    "models": ["avdet models --json"],
    "data fetch": ["avdet data fetch unav100 --dir data/unav100"],
    "report": ["avdet report events.json --video clip.mp4 --annotations annotations.json --out report.html"],
    "live": ["avdet live udp://127.0.0.1:5000 --checkpoint runs/tiny/best.ckpt --out live.srt"],
}


def examples_epilog(lines: list[str]) -> str:
    """The epilog Typer prints after the options: one paragraph per example (Rich markup escaped)."""
    from rich.markup import escape

    return "\n\n".join(f"Example: {escape(line)}" for line in lines)


def polish(command: click.Command, path: str) -> None:
    """Give a command its example (leaf commands) and drop the `<bool>` type Typer prints for on/off flags."""
    if path in EXAMPLES and not command.epilog:
        command.epilog = examples_epilog(EXAMPLES[path])
    hide_flag_types(command.params)
    hide_help_type(command)


def hide_flag_types(params: list[Any]) -> None:
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # Typer shows the metavar in place of `<bool>`; empty shows nothing


def hide_help_type(command: click.Command) -> None:
    """The help option (made by click on first use, per command) is a flag too: wrap its maker."""
    make = command.get_help_option

    def get_help_option(ctx: click.Context) -> Any:
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option  # type: ignore[method-assign]


def looks_like_a_file(name: str) -> bool:
    """A `-word` that click took for an option but that names a file, or looks like one (`-clip.mp4`)."""
    return Path(name).exists() or "." in name.lstrip("-") or "/" in name


def dash_hint(err: NoSuchOption, args: list[str]) -> NoSuchOption:
    """`No such option: -c` (click reads `-clip.mp4` as the short options -c -l ...) with the way out: `--` ends
    the options, or `./-clip.mp4`. `args`: the words the failing command was given."""
    name = next((a for a in args if a.startswith(err.option_name) and looks_like_a_file(a)), None)
    if name is None:
        return err
    message = f"No such option: {name} (a file name starting with '-'? put -- before it, or write ./{name})"
    return NoSuchOption(name, message=message, ctx=err.ctx)


def with_dash_hint(invoke: Any, ctx: click.Context) -> Any:
    """A group's `invoke(ctx)`, its subcommand's unknown-option error given the hint (the words are read first:
    invoking consumes them)."""
    words = [*getattr(ctx, "_protected_args", []), *ctx.args]
    try:
        return invoke(ctx)
    except NoSuchOption as err:
        raise dash_hint(err, words) from None
