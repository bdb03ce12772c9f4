"""Speed of the UnAV-100 evaluator on the whole test split (2,167 videos, 100 classes), against the reference.

    .venv/bin/python benchmarks/bench_eval.py                        # in-process, then whole processes side by side
    .venv/bin/python benchmarks/bench_eval.py --per-video 100 --repeat 5 --process-repeat 5
    .venv/bin/python benchmarks/bench_eval.py --check-argsort        # also: avdet's numpy 1.23 argsort vs numpy 1.23

In-process: `golden` scores ../shared/golden/eval_predictions.json (about 6.7 predictions per video). `synthetic`
scores what a detector writes with the reference post-processing: `--per-video` predictions per test video (100 =
max_seg_num), jittered copies of the true events plus random ones, with many equal scores. Loading (JSON +
validation) and scoring are timed separately; the best of `--repeat` runs is printed, wall-clock and CPU seconds.

Whole processes: `avdet eval --predictions ... --annotations ... --split test` against the reference evaluator
(../shared/reference/unav `libs/utils/metrics.py`, `ANETdetection(..., tiou_thresholds=0.1:0.9).evaluate(file)`,
its default 8 joblib workers), run from a throwaway folder by a virtual environment with the numpy it needs
(< 1.24), pandas and joblib, made under the temp dir if missing (skipped, with the reason, if it cannot be made).
Runs alternate; minima are printed with the ratio. avdet's evaluator (in this process) must agree with the
reference and with eval_expected_numpy123.json to 1e-8; the whole command's `--json`, which rounds to 6 decimals,
to half of its last digit. The reference reads "scores", so it gets a copy of the predictions with that key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from avdet.pipeline.data.annotations import load_annotations
from avdet.pipeline.metrics.mean_ap import argsort_numpy123, evaluate, load_predictions, validate_predictions

SHARED = Path(__file__).resolve().parents[2] / "shared"


def synthetic_predictions(annotations: dict, split: str, per_video: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    db = {}
    for vid, video in annotations["database"].items():
        if video["subset"] != split:
            continue
        duration = float(video.get("duration", 60.0))
        truth = video["annotations"]
        rows = []
        for k in range(per_video):
            if truth and k < 3 * len(truth):
                a = truth[k % len(truth)]
                start = min(duration, max(0.0, a["segment"][0] + rng.normal(0, 1.0)))
                end = min(duration, max(start, a["segment"][1] + rng.normal(0, 1.0)))
                label = a["label_id"]
            else:
                start = rng.uniform(0, duration)
                end = min(duration, start + rng.uniform(0.2, 20))
                label = int(rng.integers(100))
            rows.append({"segment": [float(start), float(end)], "label_id": label, "score": round(rng.random(), 3)})
        db[vid] = rows
    return {"database": db}


class Timing:
    """Best wall-clock and CPU seconds over repeats (CPU time is the steadier one on a shared machine)."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu

    def __format__(self, spec: str) -> str:
        return f"{self.wall:6.3f} s (cpu {self.cpu:6.3f} s)"


def best_of(repeat: int, fn) -> tuple[Timing, object]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(min(walls), min(cpus)), out


REF_PACKAGES = ["numpy<1.24", "pandas<2.1", "joblib"]

_DRIVER = """import json, sys, time
import numpy as np
t0 = time.perf_counter()
from metrics import ANETdetection
ann, preds, split, out = sys.argv[1:5]
t1 = time.perf_counter()
det = ANETdetection(ann, split=split, tiou_thresholds=np.linspace(0.1, 0.9, 9))
t2 = time.perf_counter()
mAP, avg = det.evaluate(preds, verbose=False)
t3 = time.perf_counter()
json.dump({"mAP": [float(x) for x in mAP], "average_mAP": float(avg), "numpy": np.__version__,
           "import_s": t1 - t0, "ground_truth_s": t2 - t1, "evaluate_s": t3 - t2}, open(out, "w"))
"""

_ARGSORT_DRIVER = """import sys
import numpy as np
rng = np.random.default_rng(int(sys.argv[2]))
arrays = {}
for k, n in enumerate([*range(1, 70), 100, 255, 256, 1000, 4097, 10000, 31337, 100000]):
    levels = int(rng.choice([2, 3, 10, 100, max(2, n // 3)]))
    v = rng.integers(0, levels, n).astype(np.float64) / levels
    if k % 3 == 1:
        v = np.sort(v)[:: 1 if k % 2 else -1].copy()  # presorted runs with ties
    arrays[f"v{k}"], arrays[f"o{k}"] = v, v.argsort()
np.savez(sys.argv[1], version=np.__version__, **arrays)
"""


def reference_python(venv: Path) -> tuple[Path | None, str]:
    """The reference's interpreter: `venv` with numpy < 1.24, pandas and joblib, created if missing."""
    python = venv / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import numpy, pandas, joblib; assert numpy.__version__ < '1.24'; print(numpy.__version__)",
    ]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, f"reference environment {venv}"
    print(f"creating the reference environment {venv} ({', '.join(REF_PACKAGES)}) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", *REF_PACKAGES]]
    for step in steps:
        run = subprocess.run(step, capture_output=True, text=True)
        if run.returncode != 0:
            return None, f"cannot make {venv}: {' '.join(step[-3:])} failed: {(run.stdout + run.stderr).strip()[-400:]}"
    ok = subprocess.run(check, capture_output=True, text=True)
    return (python, f"reference environment {venv}") if ok.returncode == 0 else (None, ok.stderr.strip()[-400:])


def reference_workdir(reference: Path, predictions: Path) -> Path:
    """A throwaway folder with the reference's metrics.py, the driver and the predictions with "scores"."""
    work = Path(tempfile.mkdtemp(prefix="avdet-ref-eval-"))
    shutil.copy(reference / "libs" / "utils" / "metrics.py", work / "metrics.py")
    (work / "driver.py").write_text(_DRIVER)
    raw = json.loads(predictions.read_text())
    db = raw.get("database", raw.get("results", raw))
    renamed = {vid: [{**p, "scores": p.get("scores", p.get("score"))} for p in ps] for vid, ps in db.items()}
    (work / "predictions.json").write_text(json.dumps({"database": renamed}))
    return work


def timed_process(cmd: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{(run.stdout + run.stderr)[-2000:]}")
    return elapsed


def compare_processes(args: argparse.Namespace) -> None:
    """`avdet eval` and the reference evaluator as whole processes, alternating, minima, identical numbers."""
    print("\n== whole processes: avdet eval vs the reference evaluator ==")
    metrics = args.reference / "libs" / "utils" / "metrics.py"
    python, message = reference_python(args.ref_venv) if metrics.is_file() else (None, f"{metrics} not found")
    print(message if python else f"REFERENCE SKIPPED: {message}")
    out = Path(tempfile.mkdtemp(prefix="avdet-eval-"))
    ours_cmd = [sys.executable, "-m", "avdet", "eval", "--predictions", str(args.predictions)]
    ours_cmd += ["--annotations", str(args.annotations), "--split", args.split, "--json", str(out / "avdet.json")]
    work = reference_workdir(args.reference, args.predictions) if python else None
    ref_cmd = [str(python), "driver.py", str(args.annotations), "predictions.json", args.split, str(out / "ref.json")]
    ours, theirs = [], []
    for _ in range(args.process_repeat):
        ours.append(timed_process(ours_cmd))
        if work:
            theirs.append(timed_process(ref_cmd, cwd=work))
    mine = json.loads((out / "avdet.json").read_text())
    ann = load_annotations(args.annotations)
    exact = evaluate(ann, load_predictions(args.predictions, ann), split=args.split)
    rounding = float(np.abs(np.asarray(mine["mAP"]) - exact.mAP).max())
    print(f"avdet eval (whole process)        {min(ours):7.3f} s   Avg. mAP {100 * mine['average_mAP']:.6f} %")
    print(f"  its --json (6 decimals) vs the evaluator: {rounding:.1e}", "ok" if rounding <= 5e-7 else "DIFFERENT")
    expected_path = args.predictions.parent / "eval_expected_numpy123.json"
    if args.predictions.name == "eval_predictions.json" and expected_path.is_file():
        expected = json.loads(expected_path.read_text())
        gap = float(np.abs(exact.mAP - np.asarray(expected["mAP"])).max())
        print(f"avdet vs eval_expected_numpy123.json: max |difference| {gap:.1e}", "ok" if gap <= 1e-8 else "DIFFERENT")
    if work:
        ref = json.loads((out / "ref.json").read_text())
        gap = float(np.abs(exact.mAP - np.asarray(ref["mAP"])).max())
        print(
            f"reference evaluator (numpy {ref['numpy']})  {min(theirs):7.3f} s",
            f"  Avg. mAP {100 * ref['average_mAP']:.6f} %",
        )
        print(
            f"  inside it: imports {ref['import_s']:.2f} s, ground truth {ref['ground_truth_s']:.2f} s, "
            f"ANETdetection.evaluate {ref['evaluate_s']:.2f} s (last run)"
        )
        print(
            f"ratio: avdet eval is {min(theirs) / min(ours):.1f}x faster as a whole process; "
            f"mAPs differ by at most {gap:.1e}",
            "(identical to 1e-8)" if gap <= 1e-8 else "(DIFFERENT)",
        )
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)


def check_argsort(args: argparse.Namespace, seeds: int = 3) -> None:
    """avdet's `argsort_numpy123` against numpy < 1.24 itself on random arrays full of ties (1 to 10^5 values)."""
    print("\n== argsort_numpy123 vs numpy < 1.24 ==")
    python, message = reference_python(args.ref_venv)
    if python is None:
        print(f"SKIPPED: {message}")
        return
    work = Path(tempfile.mkdtemp(prefix="avdet-argsort-"))
    (work / "gen.py").write_text(_ARGSORT_DRIVER)
    total = bad = stable_differs = 0
    for seed in range(seeds):
        timed_process([str(python), "gen.py", str(work / f"{seed}.npz"), str(seed)], cwd=work)
        data = np.load(work / f"{seed}.npz")
        for key in (k for k in data.files if k.startswith("v") and k != "version"):
            v, want = data[key], data["o" + key[1:]]
            total += 1
            bad += not np.array_equal(argsort_numpy123(v), want)
            stable_differs += not np.array_equal(np.argsort(v, kind="stable"), want)
    print(
        f"numpy {data['version']}: {total} arrays, {bad} differ from argsort_numpy123 "
        f"(a stable sort differs on {stable_differs})"
    )
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=SHARED / "data" / "unav100_annotations.json")
    parser.add_argument("--predictions", type=Path, default=SHARED / "golden" / "eval_predictions.json")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-video", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--process-repeat", type=int, default=3, help="whole-process runs of each side")
    parser.add_argument("--reference", type=Path, default=SHARED / "reference" / "unav")
    parser.add_argument("--ref-venv", type=Path, default=Path(tempfile.gettempdir()) / "avdet-ref-eval-venv")
    parser.add_argument("--check-argsort", action="store_true", help="compare argsort_numpy123 with numpy < 1.24")
    parser.add_argument("--no-processes", action="store_true", help="skip the whole-process comparison")
    args = parser.parse_args()

    t_ann, ann = best_of(1, lambda: load_annotations(args.annotations))
    print(f"load annotations {t_ann}")
    if args.predictions.is_file():
        t_load, preds = best_of(args.repeat, lambda: load_predictions(args.predictions, ann))
        t_eval, result = best_of(args.repeat, lambda: evaluate(ann, preds, split=args.split))
        n = sum(len(p) for p in preds.values())
        print(f"golden    {n:7d} predictions  load {t_load}  evaluate {t_eval}", end="")
        print(f"  Avg. mAP {100 * result.average_mAP:.4f} %")
    raw = synthetic_predictions(ann, args.split, args.per_video)
    t_val, preds = best_of(args.repeat, lambda: validate_predictions(raw, ann))
    t_eval, result = best_of(args.repeat, lambda: evaluate(ann, preds, split=args.split))
    n = sum(len(p) for p in preds.values())
    print(f"synthetic {n:7d} predictions  validate {t_val}  evaluate {t_eval}", end="")
    print(f"  Avg. mAP {100 * result.average_mAP:.4f} %")
    if not args.no_processes:
        compare_processes(args)
    if args.check_argsort:
        check_argsort(args)


if __name__ == "__main__":
    main()
