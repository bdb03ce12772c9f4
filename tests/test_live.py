"""`avdet live` / `Detector.stream`: a pipe source, a UDP source on 127.0.0.1, SIGINT mid-event, a stream that
drops and returns, falling behind; and live rows against offline extraction. Every process started is stopped."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from avdet.pipeline.io.media import probe
from conftest import SampleSet, make_clip

KEYS = ["label", "label_id", "start", "end", "score", "emitted_at"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _test_videos(sample_set: SampleSet) -> list[Path]:
    db = json.loads(sample_set.annotations.read_text())["database"]
    ids = sorted(v for v, item in db.items() if item["subset"] == "test")
    return [sample_set.root / "videos" / f"{v}.mp4" for v in ids]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ffmpeg_children(pid: int) -> list[int]:
    """Process ids of the ffmpeg children of `pid`."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    out = []
    for k in kids:
        try:
            if Path(f"/proc/{k}/comm").read_text().strip() == "ffmpeg":
                out.append(k)
        except OSError:
            continue
    return out


def _wait_for_ffmpeg(pid: int, timeout: float = 60.0) -> None:
    """Until `pid` runs its decoder (a UDP receiver must listen before the sender starts)."""
    deadline = time.monotonic() + timeout
    while not _ffmpeg_children(pid):
        assert time.monotonic() < deadline, "the live decoder never started"
        time.sleep(0.1)
    time.sleep(0.3)  # ffmpeg opens its socket right after starting


def _live_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "avdet", "live", *map(str, args), "--threads", "1"]


@contextmanager
def _process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen]:
    """A process that is killed (if still running) and reaped however the test ends."""
    proc = subprocess.Popen(args, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _send_udp(video: Path, port: int, realtime: bool = True) -> list[str]:
    return [
        "ffmpeg", "-nostdin", "-loglevel", "error", *(["-re"] if realtime else []), "-i", str(video),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-c:a", "aac",
        "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316",
    ]  # fmt: skip


def _lines(stdout: str) -> list[dict]:
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    for e in events:
        assert list(e) == KEYS
        assert 0 <= e["start"] < e["end"] <= e["emitted_at"] + 1e-6  # emitted once final: after its end
    return events


def _tiou(a: dict, b: dict) -> float:
    inter = min(a["end"], b["end"]) - max(a["start"], b["start"])
    return max(0.0, inter) / (a["end"] - a["start"] + b["end"] - b["start"] - max(0.0, inter))


# -- rows --------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_live_rows_equal_offline_rows(clips: dict[str, Path]) -> None:
    """A file decoded live gives the offline audio rows exactly and the offline visual frame descriptors exactly;
    only the change against the background differs (trailing median instead of the 60 s block's)."""
    from avdet.extractors.lite import FRAME_DIM, VISUAL_FRAME_DIM
    from avdet.extractors.lite_live import LiveAudioRows, LiveVisualRows, total_rows
    from avdet.extractors.registry import build_extractor_set
    from avdet.pipeline.extract import compute_features
    from avdet.pipeline.io.live_media import LiveRequest, live_media

    video = clips["av"]
    ext = build_extractor_set("lite")
    offline = compute_features(video, ext)
    req = LiveRequest(fps=ext.media.fps, size=ext.media.size, sample_rate=ext.media.sample_rate)
    vis, aud = LiveVisualRows(ext.visual, req.fps), LiveAudioRows(ext.audio, req.sample_rate)
    v_parts, a_parts = [], []
    for kind, data, _ in live_media(str(video), req, stop=threading.Event(), realtime=False):
        if kind == "idle":
            continue
        (v_parts if kind == "video" else a_parts).append((vis if kind == "video" else aud).push(data))
    n = total_rows(max(vis.frames / req.fps, aud.samples / req.sample_rate), ext.visual.window_s, ext.visual.step_s)
    assert n == len(offline.visual)
    v_parts.append(vis.finish(n))
    a_parts.append(aud.finish(n))
    live_v, live_a = np.concatenate(v_parts), np.concatenate(a_parts)
    assert live_v.shape == offline.visual.values.shape and live_a.shape == offline.audio.values.shape
    np.testing.assert_allclose(live_a, offline.audio.values, rtol=0, atol=1e-5)
    frame_cols = np.r_[0:FRAME_DIM, VISUAL_FRAME_DIM : VISUAL_FRAME_DIM + FRAME_DIM]  # means and stds
    np.testing.assert_allclose(live_v[:, frame_cols], offline.visual.values[:, frame_cols], rtol=0, atol=1e-5)


# -- sources -----------------------------------------------------------------------------------------------------
def test_pipe_source_matches_offline_detect(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    """ffmpeg writes NUT to stdout, piped into `avdet live -`: JSON lines on stdout, the same in a valid WebVTT
    file; the offline detector's events are found live."""
    from avdet.pipeline.detect import Detector

    video, ckpt = _test_videos(sample_set)[0], trained_run / "best.ckpt"
    out = tmp_path / "live.vtt"
    feed = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-c", "copy", "-f", "nut", "-"]
    with (
        _process(feed, stdout=subprocess.PIPE) as sender,
        _process(
            _live_cmd("-", "--checkpoint", ckpt, "--out", out, "--stats", tmp_path / "stats.json"),
            stdin=sender.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        ) as live,
    ):
        sender.stdout.close()  # the live process holds the read end
        stdout, stderr = live.communicate(timeout=120)
    assert live.returncode == 0, stderr
    events = _lines(stdout)
    vtt = out.read_text()
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == len(events)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert abs(stats["stream_s"] - probe(video).duration) < 0.2 and stats["events"] == len(events)
    detector = Detector(ckpt, cache=sample_set.cache)
    overlap = detector.operating_point.overlap_iou  # each event once: no two of a class overlap beyond it
    assert all(
        _tiou(a, b) <= overlap
        for i, a in enumerate(events)
        for b in events[i + 1 :]
        if a["label_id"] == b["label_id"] and overlap is not None
    ), events
    offline = [e.__dict__ for e in detector.detect(video).events]
    assert offline, "the fixture model finds nothing in this clip"
    found = [max((_tiou(o, e) for e in events if e["label_id"] == o["label_id"]), default=0.0) for o in offline]
    assert np.mean([f >= 0.5 for f in found]) >= 0.5, (offline, events)


def test_udp_source(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    """`ffmpeg -re ... -f mpegts udp://127.0.0.1:PORT` into `avdet live udp://...`; SIGINT after the sender is done
    ends it with exit 0 and the whole stream's events."""
    video = min(_test_videos(sample_set), key=lambda v: probe(v).duration)
    port, out = _free_udp_port(), tmp_path / "live.srt"
    args = _live_cmd(f"udp://127.0.0.1:{port}", "--checkpoint", trained_run / "best.ckpt", "--out", out)
    with _process(
        [*args, "--stats", tmp_path / "stats.json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    ) as live:
        _wait_for_ffmpeg(live.pid)
        subprocess.run(_send_udp(video, port), check=True, timeout=60)
        time.sleep(1.5)  # the last packets through the decoder
        live.send_signal(signal.SIGINT)
        stdout, stderr = live.communicate(timeout=60)
    assert live.returncode == 0, stderr
    events = _lines(stdout)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["stopped"] and abs(stats["stream_s"] - probe(video).duration) < 1.0, stats
    assert stats["windows"] >= stats["rows"] // 4  # every hop (2 rows), give or take catching up
    assert out.read_text().count(" --> ") == len(events) == stats["events"]


def test_sigint_mid_stream_flushes_and_exits_0(trained_run: Path, sample_set: SampleSet, tmp_path: Path) -> None:
    """The first part of a clip arrives through a pipe that stays open, cut 1 s after an event's end (with a 2 s
    margin, not final while the stream plays); SIGINT then: exit 0, that event is emitted as final at the stop, and
    the JSON file is valid and holds exactly the printed events."""
    from avdet.pipeline.detect import Detector

    video, ckpt = _test_videos(sample_set)[0], trained_run / "best.ckpt"
    duration = probe(video).duration
    best = max(
        (e for e in Detector(ckpt, cache=sample_set.cache).detect(video).events if e.end + 1 < duration),
        key=lambda e: e.score,
    )
    cut = best.end + 1.0
    part = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-t", f"{cut:.2f}", "-f", "nut", "-"],
        check=True,
        capture_output=True,
    ).stdout
    out, stats = tmp_path / "live.json", tmp_path / "stats.json"
    args = _live_cmd("-", "--checkpoint", ckpt, "--out", out, "--margin", 2, "--report-every", 0.2, "--stats", stats)
    with _process(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) as live:
        live.stdin.write(part)
        live.stdin.flush()  # and left open: the stream has not ended
        through = threading.Event()

        def watch() -> None:  # the lag report says how much of the stream the model has seen
            for line in live.stderr:
                found = re.search(rb"at ([0-9.]+) s of stream", line)
                if found and float(found.group(1)) >= cut - 1.0:
                    through.set()

        threading.Thread(target=watch, daemon=True).start()
        assert through.wait(90), "the live process never got through the data"
        live.send_signal(signal.SIGINT)
        stdout = live.stdout.read().decode()
        live.wait(timeout=30)
        live.stdin.close()
    assert live.returncode == 0
    events = _lines(stdout)
    doc = json.loads(out.read_text())
    printed = sorted((e["label_id"], round(e["start"], 3), round(e["end"], 3)) for e in events)
    assert sorted((e["label_id"], round(e["start"], 3), round(e["end"], 3)) for e in doc["events"]) == printed
    run = json.loads(stats.read_text())
    assert run["stopped"] and abs(run["stream_s"] - cut) < 0.5
    flushed = [e for e in events if e["label_id"] == best.label_id and abs(e["end"] - best.end) < 1.0]
    assert flushed and flushed[0]["emitted_at"] == pytest.approx(run["stream_s"], abs=0.01), (best, events)


def test_stream_that_drops_and_returns(trained_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The UDP sender is killed mid-stream, then a new one starts: the drop and the return are reported, the
    stream goes on (both parts' media counted), and stop() ends it."""
    from avdet.pipeline.detect import Detector

    clip_a, clip_b = make_clip(tmp_path / "a.mp4", 4.0), make_clip(tmp_path / "b.mp4", 2.0, frequency=880)
    port = _free_udp_port()
    stream = Detector(trained_run / "best.ckpt").stream(
        f"udp://127.0.0.1:{port}", stall_s=1.0, retries=4, backoff_s=0.1
    )
    errors: list[BaseException] = []

    def broadcast() -> None:
        try:
            _wait_for_ffmpeg(os.getpid())
            with _process(_send_udp(clip_a, port)) as first:
                time.sleep(3.0)
                first.kill()  # the stream drops
            time.sleep(2.0)  # a stall (1 s), then a reconnection waiting for data
            with _process(_send_udp(clip_b, port)) as second:
                second.wait(timeout=30)
            time.sleep(1.5)
        except BaseException as err:  # reported by the test below
            errors.append(err)
        finally:
            stream.stop()

    sender = threading.Thread(target=broadcast)
    with caplog.at_level(logging.WARNING, logger="avdet.pipeline.io.live_media"):
        sender.start()
        events = list(stream)
        sender.join()
    assert not errors, errors
    text = caplog.text
    assert "stream dropped" in text and "retry 1 of 4" in text and "stream back after" in text
    assert 2.5 < stream.stats.stream_s < 6.0, stream.stats  # 1-3 s of the first sender, then up to 2 s more
    assert all(e.end <= stream.stats.stream_s + 1e-6 for e in events)


def test_falling_behind_is_reported_and_drops_no_rows(
    trained_run: Path, clips: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A model slower than the stream (1.2 s a window, a window due every 0.32 s, the file at its own speed): it
    runs less often, the lag is reported, and every row still goes through it."""
    from avdet.extractors.base import num_grid_rows
    from avdet.pipeline.detect import Detector

    detector = Detector(trained_run / "best.ckpt")
    hook = detector.checkpoint.model.register_forward_pre_hook(lambda *_: time.sleep(1.2))
    try:
        stream = detector.stream(clips["av"], hop_s=0.32, report_every_s=1.0, behind_s=0.0)
        with caplog.at_level(logging.INFO, logger="avdet.pipeline.live"):
            list(stream)
    finally:
        hook.remove()
    stats = stream.stats
    assert "falling behind" in caplog.text and "no rows dropped" in caplog.text
    assert stats.rows == num_grid_rows(probe(clips["av"]).duration, 0.96, 0.32)  # every row
    assert stats.windows < stats.rows  # the model ran less often than every row (the last window included)
    assert stats.max_lag_s > 1.28  # hop + a row's window: behind
