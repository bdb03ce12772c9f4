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


def configure_output(verbose: int = 0, quiet: bool = False) -> None:
    """Logging through Rich at the root options' level; consoles that are not terminals never cut long rows."""
    from rich.logging import RichHandler

    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
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
