"""The docs do not rot: every `avdet ...` command line in the code blocks of README.md and docs/*.md parses with
the real command (Click's parser under Typer: subcommand, options, their types and choices, required ones), without
running the work; the README stays a front door (at most 250 lines) and its links point at files that exist.

A doc line may carry placeholders: `<name>` stands for a value (replaced by `name`), `[--opt VALUE]` marks an
optional part (the brackets go), an upper-case word such as `VIDEO...` or `N` stands for a value (a number for the
one-letter numeric names N, S, X, F and P, a file name otherwise). Everything before the word `avdet` (a `docker
run ...`, `python -m`) and shell comments are left out."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest
import typer

from avdet.cli import _ray_argv, app
from avdet.console import json_argv
from conftest import REPO

try:  # Typer 0.2x carries its own copy of Click; older ones use Click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click import ClickException, UsageError

README_MAX_LINES = 250
NUMERIC_PLACEHOLDERS = {"N": "1", "S": "1", "X": "0.5", "F": "0.5", "P": "0.5"}


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every code-block line (fenced or indented by four spaces), with backslash
    continuations joined onto the line they continue."""
    raw: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            raw.append((number, line.strip()))
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in raw:
        start, text_so_far = pending if pending else (number, "")
        text_so_far = f"{text_so_far} {line}".strip()
        if text_so_far.endswith("\\"):
            pending = (start, text_so_far[:-1].rstrip())
            continue
        pending = None
        joined.append((start, text_so_far))
    return joined


@functools.cache
def _root() -> object:
    """The Click command Typer builds for `avdet` (built once: it is the slow part)."""
    return typer.main.get_command(app)


def _subcommands() -> set[str]:
    return set(_root().commands)


def _fill(token: str) -> str:
    """A placeholder token as a value the parser accepts (see the module docstring)."""
    token = re.sub(r"<([^<>]+)>", lambda m: re.sub(r"\W+", "_", m.group(1)), token)
    bare = token.rstrip(".")
    if bare in NUMERIC_PLACEHOLDERS:
        return NUMERIC_PLACEHOLDERS[bare]
    if re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\.\.)?", token):
        return bare.lower() + ".mp4" if bare.startswith("VIDEO") else bare.lower()
    return token


def avdet_argv(line: str, subcommands: set[str]) -> list[str] | None:
    """The arguments after `avdet` on a doc line, placeholders filled, or None when the line runs no avdet command
    (`docker build -t avdet .`, a file tree naming avdet)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, token in enumerate(tokens):
        rest = tokens[i + 1 :]
        if token == "avdet" and rest and (rest[0] in subcommands or rest[0].startswith("-")):
            argv = []
            for arg in rest:
                if arg in ("&&", "||", "|", ";", ">", "2>"):
                    break
                if arg.startswith("[-"):
                    arg = arg[1:]
                if arg.endswith("]") and "[" not in arg:
                    arg = arg[:-1]
                argv.append(_fill(arg))
            return argv
    return None


def parse(argv: list[str]) -> object:
    """Parse `avdet argv` as the command does (its argument rewrites included) down to the subcommand, converting
    and checking every option, without invoking anything. Raises click's UsageError (BadParameter, NoSuchOption,
    MissingParameter, ...) for a line the command would refuse."""
    command = _root()
    name, args, parent = "avdet", json_argv(_ray_argv(argv)), None
    while True:
        ctx = command.make_context(name, list(args), parent=parent)
        if not hasattr(command, "resolve_command"):  # a leaf command: parsed
            return ctx
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return ctx
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        command, parent = sub, ctx


def doc_commands() -> list[tuple[str, list[str]]]:
    subcommands = _subcommands()
    found = []
    for path in doc_files():
        for number, line in code_lines(path.read_text(encoding="utf-8")):
            argv = avdet_argv(line, subcommands)
            if argv is not None:
                found.append((f"{path.relative_to(REPO)}:{number}", argv))
    return found


DOC_COMMANDS = doc_commands()


def test_the_docs_hold_commands() -> None:
    where = {w.split(":")[0] for w, _ in DOC_COMMANDS}
    assert "README.md" in where and len(DOC_COMMANDS) >= 15, DOC_COMMANDS
    verbs = {argv[0] for _, argv in DOC_COMMANDS}
    assert {"extract", "train", "detect", "eval", "convert", "cache"} <= verbs, verbs


TRAIN_LINES = [(w, argv) for w, argv in DOC_COMMANDS if argv[0] == "train" and "--config" in argv]


@pytest.mark.parametrize(("where", "argv"), TRAIN_LINES, ids=[w for w, _ in TRAIN_LINES])
def test_doc_train_configs_load(where: str, argv: list[str]) -> None:
    """A documented training line names a config that exists and `--set` fields it has (its data paths are not
    read here)."""
    from avdet.errors import ConfigError
    from avdet.pipeline.config import load_config

    config = argv[argv.index("--config") + 1]
    sets = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--set"]
    if config == "configs/experiment.yaml":  # the README's `configs/<experiment>.yaml`: any config
        return
    try:
        load_config(config, sets)
    except ConfigError as err:
        pytest.fail(f"{where}: {err}")


@pytest.mark.parametrize(("where", "argv"), DOC_COMMANDS, ids=[w for w, _ in DOC_COMMANDS])
def test_doc_command_parses(where: str, argv: list[str]) -> None:
    try:
        parse(argv)
    except ClickException as err:
        pytest.fail(f"{where}: `avdet {shlex.join(argv)}` is refused: {err.format_message()}")


@pytest.mark.parametrize(
    "line",
    [
        "avdet detect clip.mp4 --checkpoint best.ckpt --no-such-option 3",  # an option that does not exist
        "avdet detect clip.mp4 --checkpoint best.ckpt --format docx",  # a value outside the choices
        "avdet extract videos/ --workers many",  # not a number
        "avdet detecct clip.mp4",  # a subcommand that does not exist
        "avdet train --set a.b=1",  # a required option missing
        "avdet cache prune --recipe 3f2a --dryrun",  # inside a command group
    ],
)
def test_a_wrong_doc_line_is_refused(line: str) -> None:
    argv = avdet_argv(line, _subcommands() | {"detecct"})
    assert argv is not None
    with pytest.raises(UsageError):
        parse(argv)


def test_placeholders_and_what_is_not_a_command() -> None:
    subs = _subcommands()
    assert avdet_argv("avdet train --config configs/<experiment>.yaml  # LoCo", subs) == [
        "train",
        "--config",
        "configs/experiment.yaml",
    ]
    assert avdet_argv("avdet cache failed [--extractor lite] # each", subs) == [
        "cache",
        "failed",
        "--extractor",
        "lite",
    ]
    assert avdet_argv("avdet extract VIDEOS... --workers N", subs) == ["extract", "videos.mp4", "--workers", "1"]
    assert avdet_argv("docker build -t avdet .", subs) is None
    assert avdet_argv("git clone <this repository> avdet && cd avdet", subs) is None
    assert avdet_argv('docker run -v "$PWD:/data" avdet detect /data/a.mp4 --checkpoint b.ckpt', subs) == [
        "detect",
        "/data/a.mp4",
        "--checkpoint",
        "b.ckpt",
    ]
    assert code_lines("text\n\n    avdet train --config tiny \\\n        --set a=1\n") == [
        (3, "avdet train --config tiny --set a=1")
    ]


def test_readme_is_a_front_door() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "    scripts/setup.sh && scripts/quickstart.sh\n" in text  # the two commands, exactly
    assert "    scripts/setup.sh && .venv/bin/python -m pytest -q\n" in text
    assert "scripts/setup.sh && .venv/bin/python -m pytest -q" in (REPO / ".ci" / "run").read_text()
    assert re.search(r"^## Performance$", text, re.M) and "2 CPU cores" in text  # with the machine stated


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_local_links_resolve() -> None:
    for path in doc_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            file = (path.parent / name).resolve() if name else path
            assert file.exists(), f"{path.relative_to(REPO)} links to {target}, which does not exist"
            if anchor:
                anchors = heading_anchors(file.read_text(encoding="utf-8"))
                assert anchor in anchors, f"{path.relative_to(REPO)} links to {target}: no such heading"
