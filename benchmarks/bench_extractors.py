"""Per-stream speed of the `i3d_vggish` recipe (RAFT, I3D RGB, I3D flow, VGGish) on a generated 60 s clip.

    .venv/bin/python benchmarks/bench_extractors.py [--seconds 60] [--device cpu|cuda|auto]
        [--raft-pairs 16] [--windows 4] [--full]

Weights are the seeded recipe (`random_weights=True`): speed does not depend on the values. Decoding and VGGish run
on the whole clip. RAFT and the two I3D streams are timed on a sample of the clip's frame pairs / windows (CPU
needs seconds per pair and per window) and extrapolated linearly to the whole clip: the work per pair and per
window is fixed, so the estimate is what a full run costs. `--full` also times the real thing end to end
(`compute_features`: decode + every stream), which is what to use on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_extract import make_clip  # the same generated 60 s 640x360 clip

from avdet.extractors import i3d_vggish, raft
from avdet.extractors.base import AudioInput
from avdet.extractors.registry import build_extractor_set
from avdet.pipeline.extract import compute_features
from avdet.pipeline.io import media


def timed(fn: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--raft-pairs", type=int, default=16, help="frame pairs timed for RAFT")
    parser.add_argument("--windows", type=int, default=4, help="windows timed per I3D stream")
    parser.add_argument("--full", action="store_true", help="also time the whole extraction end to end")
    args = parser.parse_args()
    device = i3d_vggish.resolve_device(args.device)

    t0 = time.perf_counter()
    ex = build_extractor_set("i3d_vggish", random_weights=True, device=device)
    build_s = time.perf_counter() - t0
    visual: i3d_vggish.TwoStreamI3D = ex.visual  # type: ignore[assignment]
    req = ex.media
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.seconds)
        info = media.probe(clip)
        rows = i3d_vggish.unav_num_rows(info.duration)
        pairs_total = i3d_vggish.STACK + i3d_vggish.STEP * (rows - 1)  # frame pairs the grid's windows use
        n_frames = [0]
        sample: list[np.ndarray] = []
        sample_len = max(args.raft_pairs + 1, i3d_vggish.STACK + 1)

        def decode() -> None:
            for chunk in media.read_frames(clip, req.fps, req.size, resize=req.resize, short_side=req.short_side):
                n_frames[0] += len(chunk)
                if sum(map(len, sample)) < sample_len:
                    sample.append(chunk.copy())

        results: list[tuple[str, str, float, float]] = []  # stage, measured, wall, full-clip estimate
        wall = timed(decode, "cpu")
        results.append(("decode video (25 fps, 256 short side)", f"{n_frames[0]} frames", wall, wall))
        samples = media.load_audio(clip, req.sample_rate, info=info)
        wall = timed(lambda: media.load_audio(clip, req.sample_rate, info=info), "cpu")
        results.append(("decode audio (16 kHz mono)", f"{len(samples) / 16000:.1f} s", wall, wall))

        frames = torch.from_numpy(np.concatenate(sample)[:sample_len]).to(device)
        frames = frames.permute(0, 3, 1, 2).float()  # (n, H, W, 3) -> (n, 3, H, W)
        if device.startswith("cuda"):  # warm-up: kernel selection and allocator, not part of the rate
            visual._flows(frames[:3])
        flows: list[torch.Tensor] = []
        pairs = frames[: args.raft_pairs + 1]

        def run_raft() -> None:
            for i in range(0, args.raft_pairs, visual.flow_batch):
                flows.append(visual._flows(pairs[i : i + visual.flow_batch + 1]))

        wall = timed(run_raft, device)
        results.append(
            (
                f"RAFT large ({raft.ITERATIONS} iters, 256x256)",
                f"{args.raft_pairs} pairs",
                wall,
                wall / args.raft_pairs * pairs_total,
            )
        )

        rgb = i3d_vggish.rgb_to_unit(i3d_vggish.center_crop(frames[: i3d_vggish.STACK]))  # (24, 3, 224, 224)
        flow = visual._flows(frames[: i3d_vggish.STACK + 1])  # (24, 2, 224, 224)
        rgb_batch = rgb.transpose(0, 1)[None].expand(visual.batch_size, -1, -1, -1, -1).contiguous()  # (B, 3, 24, h, w)
        flow_batch = (
            flow.transpose(0, 1)[None].expand(visual.batch_size, -1, -1, -1, -1).contiguous()
        )  # (B, 2, 24, h, w)
        calls = max(1, args.windows // visual.batch_size)
        measured = calls * visual.batch_size
        for name, net, batch in (("I3D RGB", visual.rgb_net, rgb_batch), ("I3D flow", visual.flow_net, flow_batch)):
            if device.startswith("cuda"):
                with torch.inference_mode():
                    net(batch)
            with torch.inference_mode():
                wall = timed(lambda net=net, batch=batch: [net(batch) for _ in range(calls)], device)
            results.append((f"{name} (24 x 224 x 224 windows)", f"{measured} windows", wall, wall / measured * rows))

        audio_rows = [0]

        def run_vggish() -> None:
            audio_rows[0] = len(ex.audio(AudioInput(samples, req.sample_rate, info.duration)))

        wall = timed(run_vggish, device)
        results.append(("VGGish (log-mel + VGG, 0.32 s hop)", f"{audio_rows[0]} rows", wall, wall))

        print(
            f"clip {info.duration:.1f} s (640x360 30 fps h264 + AAC) -> {rows} visual rows, {pairs_total} flow pairs; "
            f"device {device}; torch threads {torch.get_num_threads()}; models built in {build_s:.1f} s"
        )
        print(f"{'stage':44s} {'measured on':>14s} {'wall s':>8s} {'clip s (est.)':>14s} {'x real time':>12s}")
        for stage, what, wall, full in results:
            print(f"{stage:44s} {what:>14s} {wall:8.2f} {full:14.1f} {info.duration / full:12.3f}")
        total = sum(r[3] for r in results)
        print(f"{'all streams + decoding (est.)':44s} {'':>14s} {'':>8s} {total:14.1f} {info.duration / total:12.3f}")
        if args.full:
            wall = timed(lambda: compute_features(clip, ex), device)
            name = "full extraction, measured"
            print(f"{name:44s} {'whole clip':>14s} {wall:8.2f} {wall:14.1f} {info.duration / wall:12.3f}")


if __name__ == "__main__":
    main()
