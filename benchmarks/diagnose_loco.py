"""Diagnose LoCo's components on generated data: per-term losses and gradient norms, LCF's sigma and temperature,
LAC's window offsets and scales, and the paper's cross-similarity "mean of std", in a small loop of its own.

    PYTHONPATH=... python benchmarks/diagnose_loco.py --data runs/cmp8 --set model.lcf=none --steps 300
    python benchmarks/diagnose_loco.py --data runs/cmp8 --runs runs/cmp8/runs/{loco,loco_no_lcf}/seed*

DATA holds a compare.py set (DATA/data/annotations.json, classes.tsv, DATA/cache with lite features). The loop is
the trainer's (AdamW, warm-up + cosine, gradient clipping) without EMA or checkpoints; every `--every` steps it prints
one JSON line: the loss terms, the gradient norm each term alone sends into the unimodal encoders, the total norm
before clipping (and the clip factor), sigma, 1/tau, and per LAC level the mean |offset| and exp(scale) range.
At the end it prints the validation Avg. mAP and the mean over validation videos of the std of the within-video
audio-visual cross-similarity matrix of the unimodal encoder outputs (normalised; the paper's Fig. 3 diagnostic).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avdet.models import lac
from avdet.models.lac import WindowAdaptation
from avdet.models.losses import detection_loss
from avdet.models.registry import model_entry
from avdet.pipeline.checkpoint import load_checkpoint
from avdet.pipeline.config import load_config
from avdet.pipeline.data.dense import collate
from avdet.pipeline.distributed import DistributedContext
from avdet.pipeline.tasks.dense import DenseTask
from avdet.pipeline.train import GlobalBatchSampler, param_groups, warmup_cosine


def grad_norm(term: Tensor, params: list[nn.Parameter]) -> float:
    """L2 norm of d term / d params (0 when the term does not reach them)."""
    if not term.requires_grad:
        return 0.0
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.square().sum()) for g in grads if g is not None))


class WindowProbe:
    """Forward hooks on every WindowAdaptation: the last (scale, offset) per module."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: dict[str, tuple[Tensor, Tensor]] = {}
        for name, mod in model.named_modules():
            if isinstance(mod, WindowAdaptation):
                mod.register_forward_hook(partial(self._hook, name))

    def _hook(self, name: str, _mod: nn.Module, _inp: tuple, out: tuple[Tensor, Tensor]) -> None:
        self.seen[name] = (out[0].detach(), out[1].detach())

    def summary(self, scale_of) -> dict[str, list[float]]:
        """Per module [mean |offset|, max |offset|, min length factor, max length factor] (in base windows)."""
        res = {}
        for name, (scale, offset) in self.seen.items():
            factor = scale_of(scale)
            res[name.replace("pyramid.", "").replace(".attn.adapt", "")] = [
                round(float(offset.abs().mean()), 3),
                round(float(offset.abs().max()), 3),
                round(float(factor.min()), 3),
                round(float(factor.max()), 3),
            ]
        return res


def cross_similarity_std(a: Tensor, v: Tensor) -> float:
    """std of the (T, T) cosine-similarity matrix of one video's audio and visual rows (T, D)."""
    csm = F.normalize(v.float(), dim=-1) @ F.normalize(a.float(), dim=-1).T  # (T, T)
    return float(csm.std())


def encoded(model: nn.Module, dataset, max_len: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Per video, its first `max_len` rows through LoCo's unimodal encoders: audio (T, D), visual (T, D)."""
    for i in range(len(dataset)):
        item = dataset[i]
        n = min(item["visual"].shape[0], max_len)
        mask = torch.ones(1, n, dtype=torch.bool)
        yield (
            model.audio_encoder(item["audio"][None, :n], mask)[0],
            model.visual_encoder(item["visual"][None, :n], mask)[0],
        )


@torch.no_grad()
def mean_of_std(model: nn.Module, dataset, max_len: int) -> float:
    """The paper's diagnostic over the dataset's videos, on the unimodal encoder outputs."""
    model.eval()
    stds = []
    for a, v in encoded(model, dataset, max_len):
        stds.append(cross_similarity_std(a, v))
    model.train()
    return statistics.fmean(stds)


@torch.no_grad()
def position_probe(model: nn.Module, dataset, max_len: int) -> dict[str, float]:
    """Is the audio-visual alignment content or position? Mean cosine similarity (in LCF's space when the model has
    LCF, else of the encoder outputs) of audio row i and visual row i of the same video, of different videos at the
    same step i, and of different videos at random steps. Same-step-other-video close to same-video = position."""
    model.eval()
    embs = []
    for a, v in encoded(model, dataset, max_len):
        if getattr(model, "lcf", None) is not None:
            a, v = model.lcf.proj_audio(a), model.lcf.proj_visual(v)
        embs.append((F.normalize(a, dim=-1), F.normalize(v, dim=-1)))
    model.train()
    n = min(len(e[0]) for e in embs)
    a = torch.stack([e[0][:n] for e in embs])  # (V, n, d)
    v = torch.stack([e[1][:n] for e in embs])  # (V, n, d)
    same = float((a * v).sum(-1).mean())
    other = float((a * v.roll(1, dims=0)).sum(-1).mean())
    rand = float((a * v.roll(1, dims=0)[:, torch.randperm(n)]).sum(-1).mean())
    return {
        "same_video_same_step": round(same, 4),
        "other_video_same_step": round(other, 4),
        "other_video_random_step": round(rand, 4),
    }


def trained_runs(run_dirs: list[Path], split: str) -> None:
    """The end-of-training diagnostics of finished runs (compare.py's run folders: config.yaml + best.ckpt) on one
    split: one JSON line per run, then the mean per model (the run folder's parent)."""
    rows: dict[str, list[dict[str, float]]] = {}
    for run_dir in run_dirs:
        cfg = load_config(run_dir / "config.yaml", [f"data.val_split={split}"])
        task = DenseTask(cfg, cfg.model_config(), DistributedContext())
        model = load_checkpoint(run_dir / "best.ckpt").model
        max_len = cfg.model_config().max_seq_len
        rec = {"mean_of_std": round(mean_of_std(model, task.val_set, max_len), 4)}
        rec |= position_probe(model, task.val_set, max_len)
        rows.setdefault(run_dir.parent.name, []).append(rec)
        print(json.dumps({"run": str(run_dir), **rec}), flush=True)
    for name, recs in rows.items():
        means = {k: round(statistics.fmean(r[k] for r in recs), 4) for k in recs[0]}
        print(json.dumps({"model": name, "runs": len(recs), **means}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a compare.py output folder")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", dest="extra", action="append", default=[])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        help="no training: diagnose finished runs (config.yaml, best.ckpt)",
    )
    parser.add_argument("--split", default="test", help="the split --runs are diagnosed on")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.runs:
        trained_runs(args.runs, args.split)
        return
    overrides = [
        f"data.annotations={args.data / 'data' / 'annotations.json'}",
        f"data.classes={args.data / 'data' / 'classes.tsv'}",
        f"data.cache={args.data / 'cache'}",
        f"train.seed={args.seed}",
        "train.device=cpu",
        *args.extra,
    ]
    cfg = load_config(args.config, overrides)
    torch.manual_seed(args.seed)
    mcfg = cfg.model_config()
    task = DenseTask(cfg, mcfg, DistributedContext())
    model = model_entry(cfg.model["name"]).model_cls(mcfg)
    tc = cfg.train
    sampler = GlobalBatchSampler(len(task.train_set), tc.batch_size, tc.seed, 0, 1)
    loader = DataLoader(task.train_set, batch_sampler=sampler, collate_fn=partial(collate, pad_to=mcfg.max_seq_len))
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
    warm = tc.warmup_epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=warm, total=args.steps))
    enc = [p for n, p in model.named_parameters() if n.startswith(("audio_encoder", "visual_encoder"))]
    probe = WindowProbe(model)
    scale_of = getattr(lac, "window_length_factor", lambda s: s.clamp(-lac.MAX_LOG_SCALE, lac.MAX_LOG_SCALE).exp())
    step, epoch = 0, 0
    model.train()
    while step < args.steps:
        task.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            out = model(batch.audio, batch.visual, batch.mask)
            losses = detection_loss(out, batch.segments, batch.labels, len(task.classes), task.normaliser, cfg.loss)
            log = step % args.every == 0 or step == args.steps - 1
            if log:
                rec = {"step": step, **{k: round(float(v), 4) for k, v in losses.items()}}
                terms = {"cls": losses["cls"], "reg": cfg.loss.reg_weight * losses["reg"]}
                if "lcf" in losses:
                    terms["lcf"] = cfg.loss.lcf_weight * losses["lcf"]
                rec["enc_grad"] = {k: round(grad_norm(t, enc), 4) for k, t in terms.items()}
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            total = float(nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad or float("inf")))
            if log:
                rec["grad_total"] = round(total, 3)
                rec["clip_factor"] = round(min(1.0, tc.clip_grad / total) if tc.clip_grad else 1.0, 3)
                if model.lcf is not None:
                    rec["sigma"] = round(float(model.lcf.sigma), 3)
                    rec["inv_tau"] = round(float(model.lcf.log_scale.exp()), 3)
                rec["lac"] = probe.summary(scale_of)
                rec["lr"] = scheduler.get_last_lr()[0]
                print(json.dumps(rec), flush=True)
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= args.steps:
                break
        epoch += 1
    metrics = task.validate(model, torch.device("cpu"))
    std = mean_of_std(model, task.val_set, mcfg.max_seq_len)
    probe_pos = position_probe(model, task.val_set, mcfg.max_seq_len)
    final = {"final": True, "val_avg_mAP": round(100 * metrics["val_mAP"], 2), "mean_of_std": round(std, 4)}
    print(json.dumps({**final, **probe_pos}))


if __name__ == "__main__":
    main()
