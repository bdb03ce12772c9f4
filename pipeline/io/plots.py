"""Figures: event timelines and the segment task's confusion matrix (matplotlib, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from avdet.errors import DataError
from avdet.pipeline.io.atomic import write_bytes_atomic
from avdet.pipeline.io.writers import _one_line, read_events_file
from avdet.pipeline.metrics.accuracy import SegmentReport
from avdet.pipeline.types import Event


def plot_timeline(
    events: list[Event],
    duration: float,
    path: str | Path,
    classes: list[str] | None = None,
    ground_truth: list[Event] | None = None,
    title: str | None = None,
) -> None:
    """Draw one lane per class present (events or ground truth), ordered by label id: events as bars whose opacity
    follows the score, ground truth as a thin hatched bar under them in the same lane. Time axis in seconds.
    Writes a PNG to `path` atomically. Uses matplotlib's Agg canvas directly (no pyplot, no global backend)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ground_truth = ground_truth or []
    names = {e.label_id: e.label for e in [*ground_truth, *events]}
    if classes:
        names.update({i: classes[i] for i in names if 0 <= i < len(classes)})
    lanes = sorted(names)  # by label id, lane 0 at the top
    row = {lab: i for i, lab in enumerate(lanes)}
    end = max(float(duration), max((e.end for e in [*events, *ground_truth]), default=0.0), 1e-3)
    min_width = end * 2e-3  # zero-length events stay visible

    height = 1.4 + 0.45 * max(len(lanes), 1)
    fig = Figure(figsize=(11, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab10"]
    for e in events:
        y = row[e.label_id]
        colour = cmap(y % 10)
        span = [(e.start, max(e.end - e.start, min_width))]
        alpha = 0.25 + 0.75 * min(max(e.score, 0.0), 1.0)
        ax.broken_barh(span, (y - 0.38, 0.5), facecolor=colour, alpha=alpha)
        ax.broken_barh(span, (y - 0.38, 0.5), facecolor="none", edgecolor=colour, linewidth=0.8)
    for g in ground_truth:
        span = [(g.start, max(g.end - g.start, min_width))]
        ax.broken_barh(span, (row[g.label_id] + 0.17, 0.18), facecolor="0.35", edgecolor="0.15", hatch="////", lw=0.5)

    ax.set_xlim(0, end)
    ax.set_ylim(len(lanes) - 0.5 if lanes else 0.5, -0.5)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([_one_line(names[lab]) for lab in lanes], fontsize=9)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if not lanes:
        ax.text(end / 2, 0, "no events", ha="center", va="center", color="0.5")
    if title:
        ax.set_title(_one_line(title), loc="left", fontsize=11)
    handles = [Patch(facecolor="0.5", alpha=0.9, label="detection (opacity = score)")]
    if ground_truth:
        handles.append(Patch(facecolor="0.35", edgecolor="0.15", hatch="////", label="ground truth"))
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


def plot_events_file(events_json_path: str | Path, out_png: str | Path, annotations: str | Path | None = None) -> None:
    """`avdet plot`: draw an events JSON, with that video's ground truth from an annotation file if given."""
    video, duration, events = read_events_file(events_json_path)
    truth = None
    if annotations is not None:
        from avdet.pipeline.data.annotations import load_annotations

        db = load_annotations(annotations)["database"]
        if video not in db:
            raise DataError(f"{annotations}: video {video!r} is not in the annotations")
        entry = db[video]
        duration = duration or float(entry.get("duration", 0.0))
        truth = [
            Event(
                str(a.get("label", a["label_id"])),
                int(a["label_id"]),
                float(a["segment"][0]),
                float(a["segment"][1]),
                1.0,
            )
            for a in entry.get("annotations", [])
        ]
    plot_timeline(events, duration, out_png, ground_truth=truth, title=video)


def save_confusion_png(report: SegmentReport, path: str | Path, normalise: bool = True) -> Path:
    """The confusion matrix as a PNG (rows = truth, normalised per row by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = report.confusion.astype(np.float64)
    if normalise:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    k = len(report.class_names)
    size = max(4.0, 0.32 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalise else None)
    ax.set_xticks(range(k), report.class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), report.class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"segment accuracy {report.accuracy:.1f} %")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
