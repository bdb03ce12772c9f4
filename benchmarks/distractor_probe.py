"""Do the detectors reject what is not an audio-visual event? Scores on distractors against scores on events.

    python benchmarks/distractor_probe.py --data runs/compare --runs runs/compare/runs/{loco,unav,ccnet}/seed*

DATA is a compare.py folder; its clips' plans are re-drawn from the same make-sample settings (`--videos`,
`--classes`, `--mismatched`, `--split`, `--data-seed` as given to compare.py), so every audio-only sound, visual-only
object and mismatched pair (one class seen while another is heard) of the test split is known. For each run's
best.ckpt, every candidate on the test split is scored; a true event's score is the best score of a candidate of its
class with tIoU >= 0.5 against it, and a distractor's score likewise for its class (0 when no candidate overlaps it
that well). Per distractor kind the probe prints the AUC "a true event outscores a distractor of this kind" (1 = the
model never ranks the distractor above an event, 0.5 = it cannot tell them apart) and the mean scores, and the share
of true events that some candidate of their class fits with tIoU >= 0.7, 0.8, 0.9 whatever its score ("reach":
can the boundaries be right at all?); then the mean over each model's runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from avdet.pipeline.evaluate import evaluate_checkpoint
from avdet.pipeline.operating_point import span_tiou
from avdet.pipeline.synth.clips import Occurrence, SampleConfig, VideoPlan, plan_dataset
from avdet.pipeline.types import Event

TIOU = 0.5


def best_score(events: list[Event], label_id: int, span: tuple[float, float]) -> float:
    """The best score of a candidate of `label_id` that overlaps `span` with tIoU >= TIOU (0 if none)."""
    return max(
        (e.score for e in events if e.label_id == label_id and span_tiou((e.start, e.end), span) >= TIOU), default=0.0
    )


def best_tiou(events: list[Event], label_id: int, span: tuple[float, float]) -> float:
    """How well the best-placed candidate of `label_id` fits `span`, whatever its score."""
    return max((span_tiou((e.start, e.end), span) for e in events if e.label_id == label_id), default=0.0)


def kind_of(occ: Occurrence, plan: VideoPlan) -> str:
    """event, audio_only, visual_only, or mismatched (a visual-only and an audio-only occurrence of two classes
    over the same span)."""
    if occ.kind == "event":
        return "event"
    partner = "audio_only" if occ.kind == "visual_only" else "visual_only"
    paired = any(
        o.kind == partner and (o.start, o.end) == (occ.start, occ.end) and o.label_id != occ.label_id
        for o in plan.occurrences
    )
    return "mismatched" if paired else occ.kind


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive outscores a negative), ties counting half."""
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def probe_run(run_dir: Path, plans: list[VideoPlan]) -> dict[str, float]:
    events = evaluate_checkpoint(run_dir / "best.ckpt", split="test").events
    scores: dict[str, list[float]] = {}
    fits = []  # per true event, the tIoU of its best-placed candidate: can the ranked list reach high tIoU at all?
    for plan in plans:
        found = events.get(plan.video_id, [])
        for occ in plan.occurrences:
            span = (occ.start, occ.end)
            scores.setdefault(kind_of(occ, plan), []).append(best_score(found, occ.label_id, span))
            if occ.kind == "event":
                fits.append(best_tiou(found, occ.label_id, span))
    rec = {"event_score": statistics.fmean(scores["event"])}
    rec |= {f"reach@{t:g}": float(np.mean(np.asarray(fits) >= t)) for t in (0.7, 0.8, 0.9)}
    for kind in ("audio_only", "visual_only", "mismatched"):
        if scores.get(kind):
            rec[f"auc_{kind}"] = auc(scores["event"], scores[kind])
            rec[f"{kind}_score"] = statistics.fmean(scores[kind])
    return {k: round(v, 4) for k, v in rec.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the compare.py folder (its data/ holds the clips)")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders holding best.ckpt")
    parser.add_argument("--videos", type=int, default=140)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--mismatched", type=float, default=0.5)
    parser.add_argument("--split", type=float, nargs=3, default=(0.35, 0.15, 0.5))
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args()
    cfg = SampleConfig(
        num_videos=args.videos,
        seed=args.data_seed,
        num_classes=args.classes,
        mismatched=args.mismatched,
        split=tuple(args.split),
    )
    plans = [p for p in plan_dataset(cfg) if p.subset == "test"]
    truth = json.loads((args.data / "data" / "annotations.json").read_text())["database"]
    if any(p.video_id not in truth for p in plans):
        parser.error(f"the plans drawn from these settings are not the clips of {args.data}: pass compare.py's")
    kinds = [kind_of(o, p) for p in plans for o in p.occurrences]
    print(json.dumps({"test_videos": len(plans), **{k: kinds.count(k) for k in sorted(set(kinds))}}))
    rows: dict[str, list[dict[str, float]]] = {}
    for run_dir in args.runs:
        rec = probe_run(run_dir, plans)
        rows.setdefault(run_dir.parent.name, []).append(rec)
        print(json.dumps({"run": str(run_dir), **rec}), flush=True)
    for name, recs in rows.items():
        means = {k: round(statistics.fmean(r[k] for r in recs), 4) for k in recs[0]}
        print(json.dumps({"model": name, "runs": len(recs), **means}))


if __name__ == "__main__":
    main()
