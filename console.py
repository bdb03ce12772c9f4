"""The CLI's output conventions, shared by `cli.py` (Typer) and `entry.py` (the fast `eval --predictions` path):
the Rich consoles (stdout for results, stderr for progress, logs and errors), log set-up, one-line errors, JSON
output and report tables. Imports nothing from avdet but the atomic write (lazily), and neither Typer nor torch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from avdet.pipeline.io.writers import STDOUT

console = Console(stderr=True)
out = Console()
PIPE_WIDTH = 100_000  # columns of a console that is not a terminal: long rows stay whole


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"  # log records when stderr is a file, pipe or notebook


def log_handler() -> logging.Handler:
    """Rich's coloured, column-aligned records on a terminal; elsewhere (`2> log`, CI, nohup, notebooks) plain
    lines: Rich lays a record out at the console's width, and a console that is not a terminal is PIPE_WIDTH wide
    (so tables stay whole), which would pad every record to 100,000 columns."""
    if console.is_terminal:
        from rich.logging import RichHandler

        return RichHandler(console=console, show_path=False)
    handler = logging.StreamHandler(console.file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    return handler


def configure_output(verbose: int = 0, quiet: bool = False) -> None:
    """Logging at the root options' level (Rich on a terminal, plain lines elsewhere); consoles that are not
    terminals never cut long table rows."""
    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[log_handler()])
    logging.getLogger().setLevel(level)
    for stream in (console, out):  # piped or redirected: never cut tables (URLs, paths) at 80 columns
        if not stream.is_terminal:
            stream.width = PIPE_WIDTH


def visible(text: str) -> str:
    """`text` on one line: control characters (a newline, a tab, an escape in a file name) written as Python
    escapes (`\\n`, `\\x1b`), so a message stays one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(visible(message))}", highlight=False, soft_wrap=True)


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


def command_index(argv: list[str]) -> int | None:
    """Where the subcommand's name sits: the first word that is not a root option (the root's options, -v, -q,
    --version, take no values), so a folder named `eval` later on the line is never taken for the command."""
    for i, arg in enumerate(argv):
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return i
    return None


def json_argv(argv: list[str]) -> list[str]:
    """`--json` as documented on every command: `avdet eval ... --json` with no file means stdout, so the option
    gets its `-` (Typer has no optional values); the other commands' `--json` is a switch that always means stdout,
    so a `--json -` there drops the `-` (else: "unexpected extra argument")."""
    out = list(argv)
    at = command_index(out)
    if at is None:
        return out
    is_eval = out[at] == "eval"
    for i in range(at + 1, len(out)):
        if out[i] == "--":
            break
        if out[i] != "--json":
            continue
        nxt = out[i + 1] if i + 1 < len(out) else None
        if is_eval and (nxt is None or (nxt.startswith("-") and nxt != str(STDOUT))):
            out.insert(i + 1, str(STDOUT))
        elif not is_eval and nxt == str(STDOUT):
            del out[i + 1]
        break
    return out
