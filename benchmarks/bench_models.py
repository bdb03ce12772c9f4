"""Model size, FLOPs, training speed and detection latency, on synthetic features of the right shapes.

    .venv/bin/python benchmarks/bench_models.py size                 # params + forward FLOPs (batch 1)
    .venv/bin/python benchmarks/bench_models.py train --config tiny  # training steps/s at the config's batch size
    .venv/bin/python benchmarks/bench_models.py latency --config loco_i3d_vggish --seconds 60

`size` covers the paper configurations: LoCo, UnAV and CCNet on I3D-VGGish (T = 224) and ONE-PEACE (T = 256).
`latency` times model + decoding + soft-NMS for one video of `--seconds` on the 0.32 s grid, after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from avdet.models.flops import count_flops
from avdet.models.losses import PositiveNormaliser, detection_loss
from avdet.models.registry import model_entry
from avdet.pipeline.config import load_config, resolve_config_path
from avdet.pipeline.data import Batch
from avdet.pipeline.inference import padded_batch
from avdet.pipeline.postprocess import TimeGrid, postprocess
from avdet.pipeline.train import param_groups

SIZE_CONFIGS = [
    "loco_i3d_vggish",
    "unav_i3d_vggish",
    "ccnet_i3d_vggish",
    "loco_onepeace",
    "unav_onepeace",
    "ccnet_onepeace",
]


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
    print(f"{'config':20s} {'model':6s} {'T':>4s} {'params (M)':>11s} {'GFLOPs':>8s}")
    for name in SIZE_CONFIGS:
        try:
            resolve_config_path(name)
        except Exception:
            continue
        _, mcfg, model = build(name)
        model.eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        flops = count_flops(model, synthetic(mcfg, 1, mcfg.max_seq_len)) / 1e9
        print(f"{name:20s} {name.split('_')[0]:6s} {mcfg.max_seq_len:4d} {params:11.2f} {flops:8.2f}")


def cmd_train(args: argparse.Namespace) -> None:
    cfg, mcfg, model = build(args.config)
    torch.manual_seed(0)
    bs = cfg.train.batch_size
    audio, visual, mask = synthetic(mcfg, bs, mcfg.max_seq_len, valid=int(mcfg.max_seq_len * 0.8))
    segments = [torch.tensor([[5.0, 40.0], [20.0, 90.0]]) for _ in range(bs)]
    labels = [torch.tensor([0, 1 % mcfg.num_classes]) for _ in range(bs)]
    opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-4)
    norm = PositiveNormaliser()
    model.train()

    def step() -> None:
        out = model(audio, visual, mask)
        loss = detection_loss(out, segments, labels, mcfg.num_classes, norm, cfg.loss)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"{args.config}: batch {bs}, T {mcfg.max_seq_len}: {1 / med:.2f} steps/s ({med * 1000:.0f} ms/step, median of "
        f"{args.steps}; torch threads {torch.get_num_threads()})"
    )


def cmd_latency(args: argparse.Namespace) -> None:
    cfg, mcfg, model = build(args.config)
    model.eval()
    rows = int((args.seconds - 0.96) / 0.32) + 1
    audio, visual, mask = synthetic(mcfg, 1, rows)
    grid = TimeGrid(0.48, 0.32)
    classes = [f"c{i}" for i in range(mcfg.num_classes)]
    batch = Batch(["v"], [args.seconds], [grid], audio, visual, mask, [torch.zeros(0, 2)], [torch.zeros(0)])

    @torch.no_grad()
    def once() -> int:
        b = padded_batch(model, batch)
        out = model(b.audio, b.visual, b.mask)
        return len(postprocess(out, b.grids, b.durations, cfg.postprocess, classes)[0])

    for _ in range(3):
        once()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"{args.config}: {args.seconds:g} s video ({rows} rows): model + soft-NMS {med * 1000:.1f} ms "
        f"(median of {args.repeats}; torch threads {torch.get_num_threads()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("size")
    p = sub.add_parser("train")
    p.add_argument("--config", default="tiny")
    p.add_argument("--steps", type=int, default=5)
    p = sub.add_parser("latency")
    p.add_argument("--config", default="loco_i3d_vggish")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    {"size": cmd_size, "train": cmd_train, "latency": cmd_latency}[args.cmd](args)


if __name__ == "__main__":
    main()
