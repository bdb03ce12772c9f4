"""The per-row floor: a two-layer MLP that classifies every feature row on its own (no temporal model), its runs of
confident rows turned into events and scored by the reference evaluator. A temporal detector that does not beat it
is broken; on one modality's rows alone it measures what that modality's features see.

    PYTHONPATH=... python benchmarks/row_mlp.py --data runs/compare --modality visual --seeds 3

DATA holds a compare.py set (DATA/data/annotations.json, classes.tsv, DATA/cache with lite features).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from avdet.pipeline.config import load_config
from avdet.pipeline.data.annotations import load_annotations, read_classes, split_ids
from avdet.pipeline.data.dense import DetectionDataset
from avdet.pipeline.data.sources import make_source
from avdet.pipeline.metrics.mean_ap import EvalResult, evaluate

MODALITIES = ("both", "audio", "visual")
THRESHOLDS = (0.2, 0.35, 0.5, 0.65, 0.8)  # every run of rows above each threshold is a candidate event


@dataclass
class Rows:
    """The rows of one split: features (R, C), multi-hot targets (R, K), and per video its row range and grid."""

    x: Tensor
    y: Tensor
    videos: list[tuple[str, int, int, float, float]]  # (video id, first row, end row, grid offset, grid step)


def row_targets(segments: np.ndarray, labels: np.ndarray, rows: int, num_classes: int) -> np.ndarray:
    """(rows, K) multi-hot: row i belongs to class c when i lies inside an event of c (grid units)."""
    y = np.zeros((rows, num_classes), np.float32)
    steps = np.arange(rows)
    for (start, end), label in zip(segments, labels, strict=True):
        y[(steps >= start) & (steps <= end), int(label)] = 1.0
    return y


def load_rows(dataset: DetectionDataset, modality: str, num_classes: int) -> Rows:
    xs, ys, videos, first = [], [], [], 0
    for i in range(len(dataset)):
        item = dataset[i]
        parts = {"audio": [item["audio"]], "visual": [item["visual"]], "both": [item["audio"], item["visual"]]}
        x = torch.cat(parts[modality], dim=1).float()  # (T, C)
        xs.append(x)
        ys.append(torch.from_numpy(row_targets(item["segments"].numpy(), item["labels"].numpy(), len(x), num_classes)))
        grid = item["grid"]
        videos.append((item["video_id"], first, first + len(x), float(grid.offset), float(grid.step)))
        first += len(x)
    return Rows(torch.cat(xs), torch.cat(ys), videos)


def train_mlp(train: Rows, hidden: int, epochs: int, seed: int) -> nn.Module:
    """A standardising two-layer MLP fitted with BCE on the training rows (mini-batches of 256)."""
    torch.manual_seed(seed)
    mean, std = train.x.mean(dim=0), train.x.std(dim=0).clamp(min=1e-4)
    mlp = nn.Sequential(
        nn.Linear(train.x.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, train.y.shape[1])
    )
    model = nn.Sequential(Standardise(mean, std), mlp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        order = torch.randperm(len(train.x))
        for lo in range(0, len(order), 256):
            idx = order[lo : lo + 256]
            loss = loss_fn(model(train.x[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Standardise(nn.Module):
    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def runs_above(prob: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """[first, last] row index pairs of the maximal runs where prob > threshold."""
    above = np.concatenate([[False], prob > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))  # starts at even, ends (exclusive) at odd positions
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def row_events(prob: np.ndarray, offset: float, step: float, classes: list[str]) -> list[dict]:
    """Events of one video from its (T, K) row probabilities: each run above each threshold, scored by its mean."""
    events = []
    for c in range(prob.shape[1]):
        for thr in THRESHOLDS:
            for first, last in runs_above(prob[:, c], thr):
                start, end = offset + (first - 0.5) * step, offset + (last + 0.5) * step
                score = float(prob[first : last + 1, c].mean())
                events.append({"segment": [max(0.0, start), end], "label_id": c, "label": classes[c], "score": score})
    return events


def score_split(model: nn.Module, rows: Rows, annotations: dict, split: str, classes: list[str]) -> EvalResult:
    with torch.no_grad():
        prob = torch.sigmoid(model(rows.x)).numpy()  # (R, K)
    predictions = {vid: row_events(prob[lo:hi], offset, step, classes) for vid, lo, hi, offset, step in rows.videos}
    return evaluate(annotations, predictions, split=split)


def run_row_mlp(
    annotations_path: Path,
    classes_path: Path,
    cache: Path,
    modality: str,
    seed: int,
    hidden: int = 128,
    epochs: int = 30,
) -> tuple[EvalResult, EvalResult]:
    """(validation, test) results of the per-row MLP on one modality's rows (or both)."""
    cfg = load_config(
        "tiny", [f"data.annotations={annotations_path}", f"data.classes={classes_path}", f"data.cache={cache}"]
    )
    annotations = load_annotations(cfg.data.annotations)
    classes = read_classes(annotations, cfg.data.classes or None)
    source = make_source(cfg.data, annotations)

    def rows(split: str) -> Rows:
        return load_rows(DetectionDataset(source, annotations, split_ids(annotations, split)), modality, len(classes))

    model = train_mlp(rows(cfg.data.train_split), hidden, epochs, seed)
    val = score_split(model, rows(cfg.data.val_split), annotations, cfg.data.val_split, classes)
    test = score_split(model, rows(cfg.data.test_split), annotations, cfg.data.test_split, classes)
    return val, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a compare.py output folder")
    parser.add_argument("--modality", choices=MODALITIES, nargs="+", default=list(MODALITIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ann, classes, cache = (
        args.data / "data" / "annotations.json",
        args.data / "data" / "classes.tsv",
        args.data / "cache",
    )
    for modality in args.modality:
        vals, tests = [], []
        for k in range(args.seeds):
            val, test = run_row_mlp(ann, classes, cache, modality, args.seed + k)
            vals.append(100 * val.average_mAP)
            tests.append(100 * test.average_mAP)
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        print(
            f"row MLP, {modality} rows: validation Avg. mAP {statistics.fmean(vals):.1f} ± {sd(vals):.1f}, "
            f"test {statistics.fmean(tests):.1f} ± {sd(tests):.1f} ({args.seeds} seeds)",
            flush=True,
        )


if __name__ == "__main__":
    main()
