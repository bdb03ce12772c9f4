"""The `avdet` process entry point (the output conventions it shares with the CLI are in `console.py`).

`avdet eval --predictions P --annotations A [--split S] [--json [F]]` is answered here without building the Typer
app: Typer's parameter handling imports pydantic and builds a validator per parameter, several times the cost of
scoring a split. Any other command line (another option, a repeated one, `--help`, ...) goes to `avdet.cli`. Both
give the same output and exit codes, errors included.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from avdet.console import STDOUT, configure_output, console, json_argv, print_error, print_report, write_json

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
    from avdet.pipeline.io.guard import check_eval_paths
    from avdet.pipeline.metrics.mean_ap import evaluate_files

    # a short process that makes hardly any reference cycles: the collector would only walk the parsed JSON (a
    # few hundred thousand objects) again and again, a fifth of the run
    gc.disable()
    json_out = Path(options["--json"]) if "--json" in options else None
    configure_output()
    try:
        split = options.get("--split", "test")
        check_eval_paths(
            predictions=Path(options["--predictions"]),
            checkpoint=None,
            annotations=Path(options["--annotations"]),
            outputs={"--json": json_out},
            overwrite=False,
        )
        report = evaluate_files(Path(options["--predictions"]), Path(options["--annotations"]), split)
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
