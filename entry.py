"""The `avdet` process entry point, and the output conventions the CLI shares with it (Rich consoles, the report
table, JSON output), importable without Typer.

`avdet eval --predictions P --annotations A [--split S] [--json [F]]` is answered here without building the Typer
app: Typer's parameter handling imports pydantic and builds a validator per parameter, several times the cost of
scoring a split. Any other command line (another option, a repeated one, `--help`, ...) goes to `avdet.cli`. Both
give the same output and exit codes, errors included.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
out = Console()
STDOUT = Path("-")  # `--json -`: to stdout
PIPE_WIDTH = 100_000  # columns of a console that is not a terminal: long rows stay whole


def configure_output(verbose: int = 0, quiet: bool = False) -> None:
    """Logging through Rich at the root options' level; consoles that are not terminals never cut long rows."""
    from rich.logging import RichHandler

    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    logging.getLogger().setLevel(level)
    for stream in (console, out):  # piped or redirected: never cut tables (URLs, paths) at 80 columns
        if not stream.is_terminal:
            stream.width = PIPE_WIDTH


def print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def json_value(value: Any, digits: int = 6) -> Any:
    """Floats rounded for JSON output (no `0.30000000000000004`); NaN becomes null."""
    if isinstance(value, float):
        return None if value != value else round(value, digits)
    if isinstance(value, dict):
        return {k: json_value(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v, digits) for v in value]
    return value


def json_text(value: Any) -> str:
    import json

    return json.dumps(json_value(value), indent=2)


def write_json(target: Path | None, value: Any) -> None:
    """`--json`: nothing (None), stdout (`-`) or a file written atomically; floats rounded."""
    from avdet.pipeline.io.atomic import write_text_atomic

    if target == STDOUT:
        out.print_json(json_text(value))
    elif target is not None:
        write_text_atomic(target, json_text(value) + "\n")


def print_report(report: Any, to_stdout: bool = True) -> None:
    """Any task's report (`tasks.Report`) as a table (on stderr when stdout carries JSON)."""
    from rich.table import Table

    title, columns, rows = report.table()
    table = Table(title=escape(title), show_edge=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 and col == "class" else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    (out if to_stdout else console).print(table)


def json_argv(argv: list[str]) -> list[str]:
    """`avdet eval ... --json` with no file means stdout: give the option its `-` (Typer has no optional values)."""
    out = list(argv)
    if "eval" not in out:
        return out
    for i in range(out.index("eval") + 1, len(out)):
        nxt = out[i + 1] if i + 1 < len(out) else None
        if out[i] == "--json" and (nxt is None or nxt.startswith("-")):
            out.insert(i + 1, str(STDOUT))
            break
    return out


def eval_predictions(predictions: Path, annotations: Path, split: str) -> Any:
    """A predictions file scored against annotations (no model, no torch import)."""
    from avdet.pipeline.data.annotations import load_annotations
    from avdet.pipeline.metrics.mean_ap import MapScores, evaluate, load_predictions

    ann = load_annotations(annotations, split)  # only what is scored is validated: a cheap start
    return MapScores(split, evaluate(ann, load_predictions(predictions, ann), split=split))


_FAST_EVAL_OPTIONS = {"--predictions", "--annotations", "--split", "--json"}


def fast_eval_args(argv: list[str]) -> dict[str, str] | None:
    """The options of `eval --predictions P --annotations A [--split S] [--json F]` (after `json_argv`), each once,
    as `--name value` or `--name=value`; None for any other command line (Typer parses those)."""
    if argv[:1] != ["eval"]:
        return None
    found: dict[str, str] = {}
    rest = argv[1:]
    while rest:
        name, eq, value = rest[0].partition("=")
        if not eq:
            if len(rest) < 2:
                return None
            value, rest = rest[1], rest[2:]
        else:
            rest = rest[1:]
        if name not in _FAST_EVAL_OPTIONS or name in found or not value or (value.startswith("-") and value != "-"):
            return None
        found[name] = value
    return found if {"--predictions", "--annotations"} <= found.keys() else None


def _fast_eval(options: dict[str, str]) -> None:
    """`avdet eval --predictions` as `cli.eval_` runs it, errors included."""
    from avdet.errors import AvdetError

    # a short process that makes hardly any reference cycles: the collector would only walk the parsed JSON (a
    # few hundred thousand objects) again and again, a fifth of the run
    gc.disable()
    json_out = Path(options["--json"]) if "--json" in options else None
    configure_output()
    try:
        split = options.get("--split", "test")
        report = eval_predictions(Path(options["--predictions"]), Path(options["--annotations"]), split)
        print_report(report, to_stdout=json_out != STDOUT)
        write_json(json_out, report.as_dict())
    except AvdetError as err:
        print_error(str(err))
        sys.exit(1)


def main() -> None:
    argv = json_argv(sys.argv[1:])
    options = fast_eval_args(argv)
    if options is None:
        from avdet.cli import main as cli_main

        cli_main()
        return
    try:
        _fast_eval(options)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
