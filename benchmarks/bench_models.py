"""Model size, FLOPs, training speed and detection latency, on synthetic features of the right shapes.

    .venv/bin/python benchmarks/bench_models.py size                 # params + forward FLOPs (batch 1)
    .venv/bin/python benchmarks/bench_models.py train --config loco_i3d_vggish --batch 16  # training steps/s
    .venv/bin/python benchmarks/bench_models.py latency --config loco_i3d_vggish --seconds 60
    .venv/bin/python benchmarks/bench_models.py all                  # all of the above (and tiny.yaml)

`size` covers the paper configurations: LoCo, UnAV and CCNet on I3D-VGGish (T = 224) and ONE-PEACE (T = 256).
`train` times full optimiser steps (forward, loss, backward, clipping, AdamW) on random features with two events
per video. `latency` times model + decoding + soft-NMS for one video of `--seconds` on the 0.32 s grid (188 rows
for 60 s), after warm-up; the weights are random, so every candidate scores near the 0.01 prior and soft-NMS sees
the full pre-NMS top-k, which is its worst case. Timings include the machine's load: each line reports it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
from flops import count_flops, count_params

from avdet.models.losses import PositiveNormaliser, detection_loss
from avdet.models.registry import model_entry
from avdet.pipeline.config import load_config
from avdet.pipeline.data.dense import Batch
from avdet.pipeline.inference import pad_inputs
from avdet.pipeline.postprocess import postprocess
from avdet.pipeline.train import param_groups
from avdet.pipeline.types import TimeGrid

GRID_STEP = 0.32  # seconds per feature row (I3D-VGGish and ONE-PEACE on UnAV-100)
SIZE_CONFIGS = [
    "loco_i3d_vggish",
    "unav_i3d_vggish",
    "ccnet_i3d_vggish",
    "loco_onepeace",
    "unav_onepeace",
    "ccnet_onepeace",
]


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def build(config: str, overrides: list[str] | None = None):
    cfg = load_config(config, overrides or [])
    mcfg = cfg.model_config()
    model = model_entry(cfg.model["name"]).model_cls(mcfg)
    return cfg, mcfg, model


def synthetic(mcfg, batch: int, length: int, valid: int | None = None) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, length, mcfg.audio_dim, generator=gen)
    visual = torch.randn(batch, length, mcfg.visual_dim, generator=gen)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, : valid or length] = True
    return audio, visual, mask


def cmd_size(_: argparse.Namespace) -> None:
    print("| config | model | T | params (M) | forward GFLOPs |\n|---|---|---:|---:|---:|")
    for name in SIZE_CONFIGS:
        cfg, mcfg, model = build(name)
        params = count_params(model) / 1e6
        flops = count_flops(model, mcfg.max_seq_len) / 1e9  # one video, full mask, T = max_seq_len
        print(f"| {name} | {cfg.model['name']} | {mcfg.max_seq_len} | {params:.2f} | {flops:.2f} |")


def cmd_train(args: argparse.Namespace) -> None:
    cfg, mcfg, model = build(args.config)
    torch.manual_seed(0)
    bs = args.batch or cfg.train.batch_size
    length = mcfg.max_seq_len
    audio, visual, mask = synthetic(mcfg, bs, length, valid=int(length * 0.8))
    # two events per video (grid units), inside the valid part and overlapping, as in UnAV-100
    events = torch.tensor([[0.05, 0.30], [0.15, 0.60]]) * length
    segments = [events.clone() for _ in range(bs)]
    labels = [torch.tensor([0, 1 % mcfg.num_classes]) for _ in range(bs)]
    opt = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr)
    norm = PositiveNormaliser(cfg.loss.norm_init, cfg.loss.norm_momentum)
    model.train()

    def step() -> None:
        out = model(audio, visual, mask)
        loss = detection_loss(out, segments, labels, mcfg.num_classes, norm, cfg.loss)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad)
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"{args.config}: batch {bs}, T {length}: {1 / med:.2f} steps/s ({med * 1000:.0f} ms/step, median of "
        f"{args.steps} after {args.warmup} warm-up; torch threads {torch.get_num_threads()}; {load_average()})"
    )


def cmd_latency(args: argparse.Namespace) -> None:
    cfg, mcfg, model = build(args.config)
    model.eval()
    grid = TimeGrid(0.48, GRID_STEP)  # the UnAV-100 0.32 s grid (16-frame windows at 25 fps, centre of row 0)
    rows = args.rows or math.ceil(args.seconds / GRID_STEP)
    audio, visual, mask = synthetic(mcfg, 1, rows)
    classes = [f"c{i}" for i in range(mcfg.num_classes)]
    batch = Batch(["v"], [args.seconds], [grid], audio, visual, mask, [torch.zeros(0, 2)], [torch.zeros(0)])

    @torch.no_grad()
    def once() -> tuple[float, int]:
        t0 = time.perf_counter()
        out = model(*pad_inputs(model, batch.audio, batch.visual, batch.mask))
        t1 = time.perf_counter()
        events = postprocess(out, batch.grids, batch.durations, cfg.postprocess, classes)[0]
        return t1 - t0, len(events)

    for _ in range(3):
        once()
    totals, models, counts = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model_s, n = once()
        totals.append(time.perf_counter() - t0)
        models.append(model_s)
        counts.append(n)
    med = statistics.median(totals)
    print(
        f"{args.config}: {args.seconds:g} s video ({rows} rows, padded to {model.padded_length(rows)}): model + "
        f"decoding + soft-NMS {med * 1000:.1f} ms (model {statistics.median(models) * 1000:.1f} ms; "
        f"{statistics.median(counts):.0f} events kept; median of {args.repeats}; torch threads "
        f"{torch.get_num_threads()}; {load_average()})"
    )


def cmd_all(args: argparse.Namespace) -> None:
    """Every number of the model benchmark: sizes, training speed (paper config at batch 16, tiny), latency."""
    cmd_size(args)
    for config, batch in (("loco_i3d_vggish", 16), ("tiny", 0), ("tiny", 16)):
        steps, warmup = (args.steps, args.warmup) if config == "tiny" else (args.big_steps, 1)
        cmd_train(argparse.Namespace(config=config, batch=batch, steps=steps, warmup=warmup))
    cmd_latency(argparse.Namespace(config="loco_i3d_vggish", seconds=60.0, rows=0, repeats=args.repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("size")
    p = sub.add_parser("train")
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch", type=int, default=0, help="batch size (0: the config's)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p = sub.add_parser("latency")
    p.add_argument("--config", default="loco_i3d_vggish")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rows", type=int, default=0, help="feature rows (0: ceil(seconds / 0.32), 188 for 60 s)")
    p.add_argument("--repeats", type=int, default=20)
    p = sub.add_parser("all")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--big-steps", type=int, default=3, help="timed steps of the paper config (slow on CPU)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    for p in sub.choices.values():
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"size": cmd_size, "train": cmd_train, "latency": cmd_latency, "all": cmd_all}[args.cmd](args)


if __name__ == "__main__":
    main()
