"""Print avdet's requirements (pyproject.toml's dependencies plus the named extras), one per line (Python >= 3.11).

The Docker image installs these before it copies the source, so a code change reuses the dependency layer:
    python scripts/requirements.py decord hdf5 dist tb > requirements.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The base dependencies and those of `extras`, in order, without repeats; an unknown extra is an error."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra {', '.join(unknown)} (known: {', '.join(sorted(optional))})")
    out: list[str] = []
    for dep in [*project["dependencies"], *(d for e in extras for d in optional[e])]:
        if dep not in out:
            out.append(dep)
    return out


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print("\n".join(requirements(root / "pyproject.toml", sys.argv[1:])))
