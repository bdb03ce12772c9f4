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
