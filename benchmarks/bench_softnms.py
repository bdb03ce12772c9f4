"""avdet's soft-NMS against UnAV's C++ `nms_1d_cpu` (through its `batched_nms` wrapper), side by side in one run.

    .venv/bin/python benchmarks/bench_softnms.py
    .venv/bin/python benchmarks/bench_softnms.py --repeat 50 --sizes 500x10 5000x100 20000x100

The reference (../shared/reference/unav: `libs/utils/csrc/nms_cpu.cpp` and `libs/utils/nms.py`) is copied to a
throwaway folder under the temp dir, keyed by a hash of its sources and of the torch and Python versions, and built
there as a torch C++ extension (`setup.py build_ext --inplace`); later runs reuse the build. Nothing of it enters avdet.
Both sides get the same candidates (float32 segments on a 224-row grid, scores > 0.001 from a sigmoid, uniform
classes) and UnAV's test settings: Gaussian sigma 0.4, iou 0.7 (unused by the Gaussian method), min_score 0.001,
max_seg_num 100, multiclass, voting_thresh 0.75. Size by size, calls alternate between the two and the minimum over
repeats is reported; the kept events (order, labels, segments, scores) are compared for every size. Without a
compiler or the reference sources the script says so and times avdet alone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from avdet.pipeline.nms import NMSSettings, batched_nms

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETTINGS = {"sigma": 0.4, "iou_threshold": 0.7, "min_score": 0.001, "max_seg_num": 100, "voting_thresh": 0.75}

_SETUP = """from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

setup(
    name="nms_1d_cpu",
    ext_modules=[CppExtension("nms_1d_cpu", ["nms_cpu.cpp"], extra_compile_args=["-fopenmp"])],
    cmdclass={"build_ext": BuildExtension},
)
"""


def build_reference(reference: Path) -> tuple[ModuleType | None, str]:
    """Build (or reuse) the reference extension; returns its `nms` module or None, and what happened."""
    cpp, wrapper = reference / "libs" / "utils" / "csrc" / "nms_cpu.cpp", reference / "libs" / "utils" / "nms.py"
    if not (cpp.is_file() and wrapper.is_file()):
        return None, f"reference sources not found under {reference}"
    digest = hashlib.sha256(cpp.read_bytes() + wrapper.read_bytes() + _SETUP.encode())
    digest.update(f"{torch.__version__} {sys.version}".encode())
    where = Path(tempfile.gettempdir()) / f"avdet-ref-nms-{digest.hexdigest()[:16]}"
    if not list(where.glob("nms_1d_cpu*.so")):
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        shutil.copy(cpp, where / "nms_cpu.cpp")
        shutil.copy(wrapper, where / "ref_nms.py")
        (where / "setup.py").write_text(_SETUP)
        print(f"building the reference C++ extension in {where} ...", flush=True)
        run = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=where, capture_output=True, text=True
        )
        if run.returncode != 0:
            tail = "\n".join((run.stdout + run.stderr).splitlines()[-15:])
            shutil.rmtree(where, ignore_errors=True)
            return None, f"the reference C++ extension did not build:\n{tail}"
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("ref_nms"), f"reference built in {where}"
    except ImportError as err:
        return None, f"the reference extension does not load: {err}"


def make_case(n: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates as the decoder gives them: grid-unit segments, scores above pre_nms_thresh, class ids."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(-2.5, 2.0, 4 * n)
    scores = (1 / (1 + np.exp(-logits))).astype(np.float32)
    scores = scores[scores > 0.001][:n]
    centre = rng.uniform(0, 224, n)
    half = rng.uniform(0.5, 24, n)
    segs = np.stack([centre - half, centre + half], axis=1).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    return torch.from_numpy(segs), torch.from_numpy(scores), torch.from_numpy(labels)


def run_avdet(case: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    segs, scores, labels = case
    video = torch.zeros(len(scores), dtype=torch.long)  # one video: what detect runs per video
    (kept,) = batched_nms(segs, scores, labels, video, 1, NMSSettings(method="soft", multiclass=True, **SETTINGS))
    return kept


def run_reference(ref: ModuleType, case: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    segs, scores, labels = case
    s = SETTINGS
    return ref.batched_nms(
        segs,
        scores,
        labels,
        s["iou_threshold"],
        s["min_score"],
        s["max_seg_num"],
        use_soft_nms=True,
        multiclass=True,
        sigma=s["sigma"],
        voting_thresh=s["voting_thresh"],
    )


def compare(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> str:
    """'identical', or what differs (events = order, labels and segments; scores compared bit for bit)."""
    (s1, p1, l1), (s2, p2, l2) = ours, theirs
    if len(p1) != len(p2):
        return f"DIFFERENT: {len(p1)} vs {len(p2)} events"
    if not (torch.equal(l1, l2) and torch.equal(s1, s2)):
        return "DIFFERENT events (order, labels or segments)"
    if not torch.equal(p1, p2):
        return f"same events, scores differ by up to {float((p1 - p2).abs().max()):.2e}"
    return "identical"


def best_ms(fn: Callable[[], object], times: list[float]) -> None:
    start = time.perf_counter()
    fn()
    times.append(1e3 * (time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=SHARED / "reference" / "unav")
    parser.add_argument("--sizes", nargs="+", default=["500x10", "5000x100", "20000x100"], help="CANDIDATESxCLASSES")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # both sides: the reference's per-class torch ops, avdet's conversions

    ref, message = build_reference(args.reference)
    print(message if ref else f"REFERENCE UNAVAILABLE, timing avdet alone: {message}")
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    cases = [make_case(n, c, args.seed + k) for k, (n, c) in enumerate(sizes)]
    ours: list[list[float]] = [[] for _ in cases]
    theirs: list[list[float]] = [[] for _ in cases]
    for k, case in enumerate(cases):  # size by size, the two sides alternating: load changes hit both alike
        for _ in range(args.repeat):
            best_ms(lambda case=case: run_avdet(case), ours[k])
            if ref:
                best_ms(lambda case=case: run_reference(ref, case), theirs[k])

    print(f"\nsoft-NMS, min of {args.repeat} interleaved runs, 1 thread, torch {torch.__version__}")
    print("| candidates / classes | avdet | C++ reference | avdet / C++ | kept events |")
    print("|---|---|---|---|---|")
    for k, ((n, c), case) in enumerate(zip(sizes, cases, strict=True)):
        mine = min(ours[k])
        if ref:
            other = min(theirs[k])
            same = compare(run_avdet(case), run_reference(ref, case))
            print(f"| {n:,} / {c} | {mine:.2f} ms | {other:.2f} ms | {mine / other:.2f}x | {same} |")
        else:
            print(f"| {n:,} / {c} | {mine:.2f} ms | n/a | n/a | not checked |")


if __name__ == "__main__":
    main()
