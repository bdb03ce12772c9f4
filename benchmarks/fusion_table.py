"""The fusion table of docs/fusion.md: informativeness levels x models, test (and validation) Avg. mAP over seeds.

    .venv/bin/python benchmarks/fusion_table.py --root runs/fusion --levels full weak unrelated

Reads the finished runs that `compare.py --fusion --visual-info LEVEL --out ROOT/LEVEL` wrote
(ROOT/LEVEL/runs/<row>/seed<S>/result.json). A row missing at a level is looked up in `--shared-from` (the audio
stream is the same at every visual level: same plan, same soundtrack, same features, so its runs are trained once).
For each level it says whether the shipped LoCo is within one spread (the larger std of the two) of its better
one-stream model, or ahead.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from compare import FUSION, MODELS, slug

ROWS = list(dict.fromkeys([MODELS[0].name, "LoCo, no LCF", *(v.name for v in FUSION)]))
SINGLE = ("LoCo, audio stream only", "LoCo, visual stream only")


def results(root: Path, level: str, row: str, shared: str | None) -> list[dict]:
    runs = sorted((root / level / "runs" / slug(row)).glob("seed*/result.json"))
    if not runs and shared:
        runs = sorted((root / shared / "runs" / slug(row)).glob("seed*/result.json"))
    return [json.loads(p.read_text()) for p in runs]


def stats(values: list[float]) -> tuple[float, float]:
    return 100 * statistics.fmean(values), 100 * statistics.stdev(values) if len(values) > 1 else 0.0


def cell(runs: list[dict], key: str) -> str:
    if not runs:
        return "–"
    mean, std = stats([r[key] for r in runs])
    return f"{mean:.1f} ± {std:.1f}" + (f" (n={len(runs)})" if len(runs) != 3 else "")


def verdict(level_runs: dict[str, list[dict]], row: str, key: str) -> str:
    """Is `row` within one spread of the better one-stream model (by the mean of `key`), or ahead of it?"""
    fused, singles = level_runs.get(row), [(s, level_runs.get(s)) for s in SINGLE if level_runs.get(s)]
    if not fused or not singles:
        return "–"
    name, best = max(singles, key=lambda s: statistics.fmean(r[key] for r in s[1]))
    (fm, fs), (bm, bs) = stats([r[key] for r in fused]), stats([r[key] for r in best])
    spread = max(fs, bs)
    word = "ahead" if fm > bm + spread else "within one spread" if fm >= bm - spread else "BEHIND"
    return f"{fm - bm:+.1f} vs {name.split(', ')[1]} (spread {spread:.1f}): {word}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--levels", nargs="+", required=True)
    parser.add_argument("--shared-from", default=None, help="level whose runs stand in for rows missing elsewhere")
    parser.add_argument("--key", default="test_avg", choices=("test_avg", "val_avg"))
    args = parser.parse_args()
    runs = {lv: {row: results(args.root, lv, row, args.shared_from) for row in ROWS} for lv in args.levels}
    rows = [row for row in ROWS if any(runs[lv][row] for lv in args.levels)]
    lines = ["| Model | " + " | ".join(args.levels) + " |", "|---|" + "---:|" * len(args.levels)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(cell(runs[lv][row], args.key) for lv in args.levels) + " |")
    print("\n".join(lines))
    print()
    for row in rows:
        if row in SINGLE:
            continue
        print(f"- {row}: " + "; ".join(f"{lv}: {verdict(runs[lv], row, args.key)}" for lv in args.levels))


if __name__ == "__main__":
    main()
