"""Figures: event timelines and the segment task's confusion matrix (matplotlib, written atomically)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from avdet.errors import DataError
from avdet.pipeline.io.atomic import write_bytes_atomic
from avdet.pipeline.io.guard import PNG_SOFTWARE
from avdet.pipeline.io.writers import one_line, read_events_file
from avdet.pipeline.types import Event

PNG_METADATA = {"Software": PNG_SOFTWARE}  # marks the PNG as avdet's: a later run may replace it (io/guard.py)
LABEL_WIDTH = 26  # characters per line of a class name on the y axis (two lines at most)


def pack_rows(events: list[Event]) -> list[int]:
    """Sub-row of each event (in the given order) so that events on one row never overlap: by start time, each
    takes the first row whose last event has ended (interval partitioning: as few rows as the deepest overlap)."""
    row_end: list[float] = []
    rows = [0] * len(events)
    for i in sorted(range(len(events)), key=lambda i: (events[i].start, -events[i].score)):
        e = events[i]
        free = next((r for r, end in enumerate(row_end) if end <= e.start), len(row_end))
        if free == len(row_end):
            row_end.append(e.end)
        row_end[free] = e.end
        rows[i] = free
    return rows


def _class_rows(events: list[Event]) -> list[int]:
    """`pack_rows` within each class: the sub-row of each event inside its class's lane."""
    rows = [0] * len(events)
    for lab in {e.label_id for e in events}:
        idx = [i for i, e in enumerate(events) if e.label_id == lab]
        for i, r in zip(idx, pack_rows([events[i] for i in idx]), strict=True):
            rows[i] = r
    return rows


def _class_label(name: str) -> str:
    """A class name on at most two lines of LABEL_WIDTH characters, shortened with an ellipsis."""
    import textwrap

    lines = textwrap.wrap(one_line(name), LABEL_WIDTH) or [""]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), LABEL_WIDTH, placeholder="...")]
    return "\n".join(lines)


TICK_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)  # seconds: round clock steps


def _tick_step(end: float, most: int = 14) -> float:
    """The smallest round clock step giving at most `most` ticks over [0, end]."""
    return next((step for step in TICK_STEPS if end / step <= most), end / most)


def _m_ss(seconds: float, _pos: object = None) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def plot_timeline(
    events: list[Event],
    duration: float,
    path: str | Path,
    classes: list[str] | None = None,
    ground_truth: list[Event] | None = None,
    title: str | None = None,
) -> None:
    """Draw one lane per class present (events or ground truth), ordered by label id. In a lane, detections sit on
    as many sub-rows as they overlap, coloured by score (colour bar) with the score written on bars wide enough;
    ground truth, when given, is a hatched grey row at the bottom of its lane. Time ticks at round clock steps, in
    m:ss from two minutes on. Writes a PNG to `path` atomically (Agg canvas: no pyplot, no global backend)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    ground_truth = ground_truth or []
    names = {e.label_id: e.label for e in [*ground_truth, *events]}
    if classes:
        names.update({i: classes[i] for i in names if 0 <= i < len(classes)})
    lanes = sorted(names)  # by label id, lane 0 at the top
    det_rows, gt_rows = _class_rows(events), _class_rows(ground_truth)
    depth = {
        lab: 1 + max((r for e, r in zip(events, det_rows, strict=True) if e.label_id == lab), default=0)
        for lab in lanes
    }  # detection sub-rows (one even when empty)
    gt_depth = {
        lab: 1 + max((r for g, r in zip(ground_truth, gt_rows, strict=True) if g.label_id == lab), default=-1)
        for lab in lanes
    }  # ground-truth sub-rows (none without ground truth)
    top, centre = {}, {}  # first row of each lane, its centre (rows of height 1, lanes separated by a gap)
    y = 0.0
    for lab in lanes:
        top[lab] = y
        rows = depth[lab] + gt_depth[lab]
        centre[lab] = y + (rows - 1) / 2
        y += rows + 0.6
    end = max(float(duration), max((e.end for e in [*events, *ground_truth]), default=0.0), 1e-3)
    min_width = end * 2e-3  # zero-length events stay visible

    height = 1.6 + 0.24 * max(y, 1.0)
    fig = Figure(figsize=(12, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)
    px_per_s = 9.0 * fig.dpi / end  # about the axes width in pixels per second
    for e, r in zip(events, det_rows, strict=True):
        yy = top[e.label_id] + r
        width = max(e.end - e.start, min_width)
        ax.broken_barh([(e.start, width)], (yy - 0.4, 0.8), facecolor=cmap(norm(e.score)), edgecolor="0.2", lw=0.4)
        if width * px_per_s > 34:
            ink = "white" if e.score < 0.6 else "black"
            ax.text(e.start + width / 2, yy, f"{e.score:.2f}", ha="center", va="center", fontsize=7, color=ink)
    for g, r in zip(ground_truth, gt_rows, strict=True):
        yy = top[g.label_id] + depth[g.label_id] + r
        span = [(g.start, max(g.end - g.start, min_width))]
        ax.broken_barh(span, (yy - 0.3, 0.6), facecolor="0.85", edgecolor="0.25", hatch="////", lw=0.5)
    for i, lab in enumerate(lanes):
        if i % 2:  # alternate lane shading guides the eye across a wide figure
            ax.axhspan(top[lab] - 0.5, top[lab] + depth[lab] + gt_depth[lab] - 0.5, color="0.96", zorder=0)

    ax.set_xlim(0, end)
    ax.set_ylim(max(y - 0.6, 0.5) - 0.5 if lanes else 0.5, -0.5)
    ax.set_yticks([centre[lab] for lab in lanes])
    ax.set_yticklabels([_class_label(names[lab]) for lab in lanes], fontsize=8)
    ax.xaxis.set_major_locator(MultipleLocator(_tick_step(end)))
    if end >= 120:  # long videos: clock time
        ax.xaxis.set_major_formatter(FuncFormatter(_m_ss))
    ax.set_xlabel("time (s)" if end < 120 else "time (m:ss)")
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if not lanes:
        ax.text(end / 2, 0, "no events", ha="center", va="center", color="0.5")
    if title:
        ax.set_title(one_line(title), loc="left", fontsize=11)
    handles = [Patch(facecolor=cmap(0.7), edgecolor="0.2", label=f"detection ({len(events)})")]
    if ground_truth:
        handles.append(
            Patch(facecolor="0.85", edgecolor="0.25", hatch="////", label=f"ground truth ({len(ground_truth)})")
        )
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.025, pad=0.01)
    bar.set_label("score", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata=PNG_METADATA)
    write_bytes_atomic(path, buffer.getvalue())


def plot_events_file(
    events_json_path: str | Path,
    out_png: str | Path,
    database: Mapping[str, Mapping] | None = None,
    annotations: str | Path = "annotations",
) -> None:
    """`avdet plot`: draw an events JSON, with that video's ground truth from `database` (an annotation file's
    loaded "database" mapping, read by the caller from the file named `annotations`) if given."""
    video, duration, events = read_events_file(events_json_path)
    truth = None
    if database is not None:
        db = database
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


def save_confusion_png(
    confusion: np.ndarray, class_names: list[str], accuracy: float, path: str | Path, normalise: bool = True
) -> Path:
    """A (K, K) confusion matrix (rows = truth) of K labels as a PNG, normalised per row by default; the title
    gives the `accuracy` (percent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion.astype(np.float64)
    if normalise:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    k = len(class_names)
    size = max(4.0, 0.32 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0 if normalise else None)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"segment accuracy {accuracy:.1f} %")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata=PNG_METADATA)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def plot_training_curves(
    epochs: list[int],
    losses: dict[str, list[float | None]],
    validated: list[tuple[int, float]],
    metric: str,
    path: str | Path,
) -> None:
    """A training run's curves from plain numbers: each loss term per epoch (left, log scale when positive) and
    the validation metric at the epochs it was measured (right). Writes a PNG to `path` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    positive = True
    for name, values in losses.items():
        points = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            positive = positive and min(ys) > 0
            ax_loss.plot(xs, ys, marker=".", lw=1.8 if name == "total" else 1.0, label=name)
    if positive and any(losses.values()):
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("training loss (mean per epoch)", loc="left", fontsize=10)
    ax_loss.legend(fontsize=7, frameon=False)
    ax_loss.grid(color="0.9")
    percent = metric != "val_accuracy"  # mAP is stored as a fraction, accuracy in percent
    if validated:
        xs, ys = zip(*validated, strict=True)
        ys = [100 * y for y in ys] if percent else list(ys)
        ax_val.plot(xs, ys, marker="o", color="tab:green")
        ax_val.margins(y=0.15)  # room above the best point for its label
        best = max(range(len(ys)), key=ys.__getitem__)
        ax_val.annotate(
            f"best {ys[best]:.1f} (epoch {xs[best]})",
            (xs[best], ys[best]),
            fontsize=8,
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
        )
    else:
        ax_val.text(0.5, 0.5, "not validated", ha="center", va="center", color="0.5", transform=ax_val.transAxes)
    ax_val.set_xlabel("epoch")
    ax_val.set_title(f"validation {'Avg. mAP (%)' if percent else 'segment accuracy (%)'}", loc="left", fontsize=10)
    ax_val.grid(color="0.9")
    if epochs:
        for ax in (ax_loss, ax_val):
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
