"""Live detection against offline `detect` on the same stream (issue 29).

The quickstart's test videos, concatenated into one file, are sent with `ffmpeg -re ... -f mpegts` over UDP on
127.0.0.1 into `avdet live udp://...` (pinned to one CPU core with taskset, one torch thread); the same file goes
through offline `avdet detect`. Reported:
  - the share of offline events also emitted live at tIoU >= 0.9 (same class, one-to-one; goal >= 90 %), and 0.5
  - event-level precision / recall / F1 of both against the truth at tIoU 0.5 (the calibrated operating point)
  - the emission delay, emitted_at - end in stream time (p50 / p95; goal p95 <= 2 s), and the same measured on the
    wall clock from the sender's start (which adds the decoder's start-up and the network path)
  - the CPU share the live process used (with its ffmpeg decoder) and its real-time factor (compute / stream)

    .venv/bin/python benchmarks/bench_live.py --quickstart quickstart --json live_bench.json
(run scripts/quickstart.sh first). Writes the concatenated file and the outputs under --work (default a temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
AVDET = [sys.executable, "-m", "avdet"]


def test_videos(quickstart: Path) -> tuple[list[Path], dict]:
    db = json.loads((quickstart / "data" / "annotations.json").read_text())["database"]
    ids = sorted(v for v, d in db.items() if d["subset"] == "test")
    return [quickstart / "data" / "videos" / f"{v}.mp4" for v in ids], {v: db[v] for v in ids}


def concatenate(videos: list[Path], target: Path) -> list[float]:
    """One file of the videos back to back (re-encoded, so every part has the same parameters); their offsets."""
    from avdet.pipeline.io.media import probe

    listing = target.with_suffix(".txt")
    listing.write_text("".join(f"file '{v.resolve()}'\n" for v in videos))
    subprocess.run(
        ["ffmpeg", "-y", "-nostdin", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", str(target)],
        check=True,
    )  # fmt: skip
    offsets, at = [], 0.0
    for v in videos:
        offsets.append(at)
        at += probe(v).duration
    return offsets


def truth_of(db: dict, ids: list[str], offsets: list[float], duration: float) -> dict:
    """The annotations of the concatenated file (one video "stream")."""
    events = [
        {**e, "segment": [e["segment"][0] + off, e["segment"][1] + off]}
        for vid, off in zip(ids, offsets, strict=True)
        for e in db[vid]["annotations"]
    ]
    return {"database": {"stream": {"duration": duration, "subset": "test", "annotations": events}}}


def tiou(a: dict, b: dict) -> float:
    inter = min(a["end"], b["end"]) - max(a["start"], b["start"])
    if inter <= 0:
        return 0.0
    return inter / (a["end"] - a["start"] + b["end"] - b["start"] - inter)


def matched_share(reference: list[dict], found: list[dict], threshold: float) -> float:
    """Share of `reference` events with a same-class `found` event at tIoU >= threshold (one-to-one, greedy by
    tIoU)."""
    pairs = sorted(
        (
            (tiou(r, f), i, j)
            for i, r in enumerate(reference)
            for j, f in enumerate(found)
            if r["label_id"] == f["label_id"]
        ),
        reverse=True,
    )
    used_r, used_f = set(), set()
    for t, i, j in pairs:
        if t >= threshold and i not in used_r and j not in used_f:
            used_r.add(i)
            used_f.add(j)
    return len(used_r) / len(reference) if reference else 1.0


def f1_against(truth: dict, events: list[dict]) -> dict:
    from avdet.pipeline.operating_point import event_counts
    from avdet.pipeline.types import Event

    evs = [Event(e["label"], e["label_id"], e["start"], e["end"], e["score"]) for e in events]
    return {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in event_counts(truth, {"stream": evs}, "test").as_dict().items()
    }


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg_child(pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for kid in (task / "children").read_text().split():
                if Path(f"/proc/{kid}/comm").read_text().strip() == "ffmpeg":
                    time.sleep(0.3)
                    return
        time.sleep(0.1)
    raise RuntimeError("the live decoder never started")


def run_live(
    stream: Path, ckpt: Path, work: Path, core: str, hop: float, margin: float
) -> tuple[list[dict], dict, float]:
    """Events (with their wall arrival, seconds after the sender started), the live stats and the sender's start."""
    port = free_udp_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cmd = ["taskset", "-c", core, *AVDET, "live", f"udp://127.0.0.1:{port}", "--checkpoint", str(ckpt),
           "--threads", "1", "--hop", str(hop), "--margin", str(margin), "--stats", str(work / "live_stats.json"),
           "--out", str(work / "live.json")]  # fmt: skip
    with (work / "live.log").open("wb") as log:
        live = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    events: list[dict] = []
    started = [0.0]

    def read() -> None:
        for line in live.stdout:
            if line.strip():
                events.append({**json.loads(line), "wall": time.monotonic() - started[0]})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ffmpeg_child(live.pid)
        started[0] = time.monotonic()
        other = "1" if core != "1" else "0"
        subprocess.run(
            ["taskset", "-c", other, "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(stream),
             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-c:a", "aac",
             "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
            check=True,
        )  # fmt: skip
        time.sleep(3.0)  # the last packets through the decoder and the model
        live.send_signal(signal.SIGINT)
        live.wait(timeout=120)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    reader.join(timeout=5)
    if live.returncode != 0:
        raise RuntimeError(f"avdet live failed ({live.returncode}): see {work / 'live.log'}")
    return events, json.loads((work / "live_stats.json").read_text()), started[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quickstart", type=Path, default=REPO / "quickstart")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--core", default="0", help="CPU core the live process is pinned to")
    ap.add_argument("--hop", type=float, default=0.64)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_live_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.quickstart / "run" / "best.ckpt"
    videos, db = test_videos(args.quickstart)
    stream = work / "stream.mp4"
    offsets = concatenate(videos, stream)
    from avdet.pipeline.io.media import probe

    duration = probe(stream).duration
    truth = truth_of(db, [v.stem for v in videos], offsets, duration)
    load_before = os.getloadavg()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*AVDET, "detect", str(stream), "--checkpoint", str(ckpt), "--cache", str(work / "cache"), "--threads", "1",
         "--out", str(work / "offline.json")],
        check=True, env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    offline = json.loads((work / "offline.json").read_text())["events"]

    live, stats, _ = run_live(stream, ckpt, work, args.core, args.hop, args.margin)
    load_after = os.getloadavg()
    delay = np.array([e["emitted_at"] - e["end"] for e in live])
    wall_delay = np.array([e["wall"] - e["end"] for e in live])
    result = {
        "stream": {
            "videos": len(videos),
            "seconds": round(duration, 2),
            "true_events": len(truth["database"]["stream"]["annotations"]),
        },
        "events": {"offline": len(offline), "live": len(live)},
        "offline_found_live": {
            "tiou_0.9": round(matched_share(offline, live, 0.9), 4),
            "tiou_0.5": round(matched_share(offline, live, 0.5), 4),
        },
        "live_found_offline_tiou_0.9": round(matched_share(live, offline, 0.9), 4),
        "f1_vs_truth_tiou_0.5": {"offline": f1_against(truth, offline), "live": f1_against(truth, live)},
        "delay_s": {
            "p50": round(float(np.percentile(delay, 50)), 3) if len(delay) else None,
            "p95": round(float(np.percentile(delay, 95)), 3) if len(delay) else None,
            "max": round(float(delay.max()), 3) if len(delay) else None,
        },
        "wall_delay_s": {
            "p50": round(float(np.percentile(wall_delay, 50)), 3) if len(wall_delay) else None,
            "p95": round(float(np.percentile(wall_delay, 95)), 3) if len(wall_delay) else None,
        },
        "live_stats": stats,
        "settings": {"hop_s": args.hop, "margin_s": args.margin, "core": args.core, "torch_threads": 1},
        "load_avg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "cpus": os.cpu_count(),
        "work": str(work),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
