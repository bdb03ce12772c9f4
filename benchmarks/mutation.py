"""Mutation testing of the modules whose silent errors matter most, each with ONLY the tests that cover it.

    python benchmarks/mutation.py                      # every module of MODULES (about 30 min on 2 cores)
    python benchmarks/mutation.py pipeline/io/store.py # one or more of them
    python benchmarks/mutation.py --diffs store.py     # also print each survivor's diff

mutmut (3.x, the `dev` extra) plants one small fault at a time (a flipped comparison, a changed constant, a dropped
argument ...) and runs the module's tests against it: a mutant the tests pass is a "survivor", an error the tests
would let through. The goal is at least 90 % killed per module; every survivor is either killed by a new test or
explained (an equivalent mutant: the program behaves the same).

mutmut imports the mutated copy through sys.path ("./", "src/" or "source/"), and names a mutant by its file's
path; this repository's root IS the package `avdet` (installed editable), so each module is staged in a folder of
its own as `src/avdet/...` plus `tests/`, where `import avdet` finds the mutated copy first and the path-derived
names match the imported ones. Modules whose file does not exist (yet) are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module (path under the repository root) -> pytest arguments choosing the tests that cover it (test files, and
# e.g. "-m", "not slow" to leave out end-to-end tests whose subprocesses never import the mutated copy). Update the
# paths here after a restructure; a module whose file does not exist is skipped with a note.
MODULES: dict[str, list[str]] = {
    "pipeline/postprocess.py": ["tests/test_postprocess.py", "tests/test_softnms_golden.py"],
    "pipeline/nms.py": ["tests/test_postprocess.py", "tests/test_softnms_golden.py"],
    "pipeline/operating_point.py": ["tests/test_calibrate.py"],
    "pipeline/inference.py": ["tests/test_inference.py"],
    "pipeline/io/store.py": [
        "tests/test_store.py",
        "tests/test_store_index.py",
        "tests/test_store_content.py",
        "tests/test_full_disk.py",
        "tests/test_cache.py",
        "-m",
        "not slow",
    ],
    "entry.py": ["tests/test_entry.py"],
    "pipeline/train.py": ["tests/test_train.py"],
}

# Copied into each stage besides the package itself: nothing big, nothing mutmut writes.
_IGNORE = shutil.ignore_patterns(".venv", ".git", "mutants", "__pycache__", "*.orig", "*.egg-info", ".ruff_cache")


@dataclass
class ModuleReport:
    module: str
    killed: int
    total: int
    survivors: list[str]  # mutant names, e.g. avdet.pipeline.io.store.x_fingerprint__mutmut_3
    other: dict[str, int]  # statuses that are neither killed nor survived (timeout, no tests, ...)
    seconds: float

    @property
    def rate(self) -> float:
        return self.killed / self.total if self.total else 1.0


def _package_ignore(src: str, names: list[str]) -> set[str]:
    """What the staged package leaves out: the tests (staged beside it), benchmarks, docs, and `_IGNORE`."""
    top = Path(src) == REPO
    return set(_IGNORE(src, names)) | ({"tests", "benchmarks", "docs", "scripts"} & set(names) if top else set())


def stage(module: str, tests: list[str], root: Path) -> Path:
    """A folder where mutmut sees `src/avdet/<module>` and `tests/`; returns it (fresh each run)."""
    slug = module.replace("/", "_").removesuffix(".py")
    folder = root / slug
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "src").mkdir(parents=True)
    shutil.copytree(REPO, folder / "src" / "avdet", ignore=_package_ignore)
    shutil.copytree(REPO / "tests", folder / "tests", ignore=_IGNORE)
    existing = [t for t in tests if not t.startswith("tests/") or (REPO / t).is_file()]
    toml = [
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f'only_mutate = ["src/avdet/{module}"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(existing)}",
        # -x: a mutant is killed by its first failing test; slow tests stay in (they may be the ones that cover it)
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]',
        "",
        "[tool.pytest.ini_options]",
        'markers = ["gpu: needs a CUDA device", "slow: longer end-to-end tests"]',
        "",
    ]
    (folder / "pyproject.toml").write_text("\n".join(toml))
    return folder


def collect(folder: Path, module: str) -> tuple[int, int, list[str], dict[str, int]]:
    """(killed, total, survivors, other statuses) from mutmut's per-file record of exit codes."""
    from mutmut.stats import status_by_exit_code  # only here: the dev extra

    meta = folder / "mutants" / "src" / "avdet" / f"{module}.meta"
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    killed, survivors, other = 0, [], {}
    for name, code in sorted(codes.items()):
        status = status_by_exit_code[code]
        if status in ("killed", "caught by type check"):
            killed += 1
        elif status == "survived":
            survivors.append(name)
        else:
            other[status] = other.get(status, 0) + 1
            survivors.append(f"{name} ({status})")  # not killed: counted against the rate, named too
    return killed, len(codes), survivors, other


def run_module(module: str, tests: list[str], root: Path, children: int, diffs: bool) -> ModuleReport | None:
    if not (REPO / module).is_file():
        print(f"skip {module}: no such file in this checkout (update MODULES in {Path(__file__).name})")
        return None
    missing = [t for t in tests if t.startswith("tests/") and not (REPO / t).is_file()]
    if missing:
        print(f"note {module}: test files not found, left out: {', '.join(missing)}")
    folder = stage(module, tests, root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.setdefault("AVDET_GOLDEN_DIR", str(REPO.parent / "shared" / "golden"))
    start = time.perf_counter()
    log = folder / "mutmut.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print(f"FAIL {module}: mutmut exited {proc.returncode} (log {log}):\n  " + "\n  ".join(tail))
        return None
    killed, total, survivors, other = collect(folder, module)
    report = ModuleReport(module, killed, total, survivors, other, seconds)
    if diffs:
        for name in survivors:
            shown = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", name.split(" ")[0]],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
            )
            print(shown.stdout)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module paths (or their ends) from MODULES; default all")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avdet-mutation"), help="staging folder")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    args = parser.parse_args(argv)
    chosen = {m: t for m, t in MODULES.items() if not args.modules or any(m.endswith(a) for a in args.modules)}
    if not chosen:
        print(f"no module of MODULES matches {args.modules}: {', '.join(MODULES)}")
        return 2
    reports = []
    for module, tests in chosen.items():
        report = run_module(module, tests, args.workdir, args.children, args.diffs)
        if report is not None:
            reports.append(report)
            print(
                f"{report.module}: {report.killed}/{report.total} killed ({100 * report.rate:.1f} %) "
                f"in {report.seconds:.0f} s" + (f"; not run: {report.other}" if report.other else "")
            )
            for name in report.survivors:
                print(f"  survived: {name}")
    print("\n| module | killed | mutants | kill rate | survivors |\n| --- | --- | --- | --- | --- |")
    for r in reports:
        print(f"| {r.module} | {r.killed} | {r.total} | {100 * r.rate:.1f} % | {len(r.survivors)} |")
    return 0 if reports and all(r.rate >= 0.9 for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
