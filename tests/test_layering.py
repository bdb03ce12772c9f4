"""The layering rule of DESIGN.md: cli -> pipeline -> {extractors, models}; and the torch-free fast paths."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import avdet

ROOT = Path(avdet.__file__).resolve().parent
LOWER_LAYERS = ("models", "extractors")
FORBIDDEN = ("avdet.pipeline", "avdet.cli")


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, top-level or inside functions; relative imports
    are resolved against `package` (`from ..pipeline import x` in avdet.models -> avdet.pipeline.x)."""
    parts = package.split(".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*parts[: len(parts) - node.level + 1], node.module or ""]) if node.level else node.module
            base = (base or "").strip(".")
            # the imported names too: `from avdet import pipeline` imports the module avdet.pipeline
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def forbidden_imports(path: Path) -> list[str]:
    package = ".".join(("avdet", *path.relative_to(ROOT).parent.parts))
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in imported_modules(path.read_text(), package)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_models_and_extractors_never_import_pipeline_or_cli(layer: str) -> None:
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no modules under {ROOT / layer}"
    offenders = [line for path in files for line in forbidden_imports(path)]
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_every_import_form() -> None:
    source = "def f():\n    from avdet.pipeline import checkpoint\n    from ..cli import app\n    import avdet.models\n"
    names = [name for _, name in imported_modules(source, "avdet.models")]
    assert {"avdet.pipeline.checkpoint", "avdet.cli.app", "avdet.models"} <= set(names)
    assert [name for _, name in imported_modules("from . import blocks", "avdet.models")] == [
        "avdet.models",
        "avdet.models.blocks",
    ]


def test_writers_and_evaluator_start_without_torch() -> None:
    code = (
        "import avdet.pipeline.io.writers, avdet.pipeline.metrics.mean_ap; import sys; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.stdout


# -- the import graph of the whole package -----------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("avdet", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _package_modules() -> dict[str, Path]:
    """Every module of the installed package (what the wheel ships: no tests, benchmarks or scripts)."""
    skip = {"tests", "benchmarks", "scripts", "build", "docs"}
    return {
        _module_name(p): p
        for p in ROOT.rglob("*.py")
        if not skip & set(p.relative_to(ROOT).parts)
        and not p.relative_to(ROOT).parts[0].startswith(".")
        and p.name != "setup.py"
    }


def _runtime_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """avdet modules `path` imports when it runs, at the top or inside functions (lazily); imports under
    `if TYPE_CHECKING:` never run and are left out. `from pkg import x` names the module pkg.x when there is one."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = {
        target
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only
        for _, target in imported_modules(ast.unparse(node), package)
    }
    return {t for t in found if t in known and t != name}


def import_graph() -> dict[str, set[str]]:
    modules = _package_modules()
    return {name: _runtime_imports(path, name, set(modules)) for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_no_import_circles_lazy_imports_included() -> None:
    graph = import_graph()
    assert "avdet.pipeline.detect" in graph and graph["avdet.pipeline.detect"], "the graph found no imports"
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_lazy_circle(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    path = tmp_path / "probe.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from avdet import cli\n"
        "def f():\n    import avdet.entry\n    from avdet import cli\n"
    )
    assert _runtime_imports(path, "avdet.pipeline.probe", {"avdet.cli", "avdet.entry"}) == {"avdet.entry", "avdet.cli"}
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from avdet import cli\n")
    assert _runtime_imports(path, "avdet.pipeline.probe", {"avdet.cli"}) == set()


# io/ is the bottom layer of pipeline/: value types and extractor constants only, no networks
IO_FORBIDDEN = ("avdet.pipeline.data", "avdet.pipeline.metrics", "avdet.pipeline.tasks", "avdet.models")
IO_ALLOWED_EXTRACTORS = ("avdet.extractors.base", "avdet.extractors.recipes")


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_io_is_the_bottom_layer() -> None:
    graph = import_graph()
    offenders = [
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.startswith("avdet.pipeline.io.")
        for target in sorted(targets)
        if target.startswith(IO_FORBIDDEN)
        or (target.startswith("avdet.extractors.") and target not in IO_ALLOWED_EXTRACTORS)
    ]
    assert not offenders, "\n".join(offenders)


# -- the detection path -------------------------------------------------------------------------------------------
DETECT_MODULE_LIMIT = 24  # avdet modules loaded by `import avdet.pipeline.detect`, packages not counted
TRAINING_SIDE = (
    "avdet.pipeline.train",
    "avdet.pipeline.tasks",
    "avdet.pipeline.distributed",
    "avdet.pipeline.data.ave",
    "avdet.pipeline.data.segments",
    "avdet.pipeline.metrics",
    "avdet.pipeline.io.plots",
    "avdet.pipeline.calibrate",
    "avdet.models.losses",
    "avdet.models.segment_losses",
    "avdet.models.targets",
)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_detection_loads_no_training_side_module() -> None:
    code = (
        "import sys, json, avdet.pipeline.detect; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('avdet') "
        "and not hasattr(sys.modules[m], '__path__'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    import json

    loaded = json.loads(res.stdout)
    training = [m for m in loaded if m.startswith(TRAINING_SIDE)]
    assert not training, f"detection loads training-side modules: {training}"
    assert len(loaded) <= DETECT_MODULE_LIMIT, f"{len(loaded)} modules: {loaded}"
