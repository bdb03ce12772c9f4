"""`avdet train`: AdamW + warm-up/cosine (or constant), gradient clipping, EMA weights, validation metric (mAP
or segment accuracy), resumable checkpoints.

Deterministic under a seed: the shuffling order and the training crops depend only on (seed, epoch, index), and
every epoch-end checkpoint stores the RNG states, so `--resume` after a kill ends with the weights of an
uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from avdet.errors import AvdetError, ConfigError, DataError
from avdet.models.registry import model_entry
from avdet.pipeline.checkpoint import DATA_PATH_KEYS, read_checkpoint, save_checkpoint
from avdet.pipeline.config import ExperimentConfig, build_model_config, save_config, to_dict
from avdet.pipeline.distributed import init_distributed
from avdet.pipeline.run_lock import run_folder_lock
from avdet.pipeline.run_log import MetricsLog, open_tensorboard, write_curves
from avdet.pipeline.tasks import task_class
from avdet.pipeline.types import OperatingPoint

log = logging.getLogger(__name__)


# -- progress reporting (the CLI renders it; tests may pass nothing) -----------------------------------------------
@dataclass
class Reporter:
    start: Callable[[int, int], None] = lambda total_steps, first_step: None
    step: Callable[[int, dict[str, float]], None] = lambda step, losses: None
    epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None


@dataclass
class TrainResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    metric: str = "val_mAP"  # what best_metric measures: val_mAP (fraction) or val_accuracy (percent)
    operating_point: Any = None  # what calibration chose for best.ckpt (dense task), with `classes`
    classes: list[str] = field(default_factory=list)


# -- optimisation ---------------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on the weight matrices / kernels of linear and conv layers only (not biases, norms, scales)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_kernel = p.ndim >= 2 and name.endswith("weight")
        (decay if is_kernel else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 1e-8 / 1e-4, constant: bool = False) -> float:
    """LR multiplier: linear warm-up from 0 over `warmup` steps, then cosine to ~0 at `total` steps (or, with
    `constant`, the full rate to the end)."""
    if step < warmup:
        return step / max(1, warmup)
    if constant:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class ModelEma:
    """Exponential moving average of every floating-point state entry (weights and buffers)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                ema_v.copy_(v)


# -- the loop -------------------------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _data_record(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """The data section with its paths relative to the run folder, so `eval --checkpoint` finds the annotations and
    features again (`load_checkpoint` resolves them against the checkpoint's folder) and a shared checkpoint does
    not carry the trainer's absolute local paths. An unset cache stays unset: the reader's default applies."""
    data = to_dict(cfg.data)
    base = run_dir.resolve()
    for key in DATA_PATH_KEYS:
        if data[key]:
            data[key] = os.path.relpath(Path(data[key]).resolve(), base)
    return data


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Shuffled global batches of `batch_size` (seeded by seed + epoch); each rank takes its contiguous share.

    With one process this is an ordinary shuffled batch sampler; with N ranks the union of the ranks' batches at
    a step is exactly the single-process batch, so DDP training follows the single-process run. The last
    incomplete batch is dropped (as the reference does in training).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ConfigError(f"train.batch_size {batch_size} must be divisible by the number of processes ({world})")
        if size < batch_size:
            raise ConfigError(f"train.batch_size {batch_size} is larger than the training split ({size} videos)")
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.batch_size

    def __iter__(self):
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        share = self.batch_size // self.world
        for k in range(len(self)):
            start = k * self.batch_size + self.rank * share
            yield perm[start : start + share]


# Settings a resumed run may change: where it runs, and how long (more epochs continue the same run).
RESUMABLE_CHANGES = frozenset({"train.device", "data.num_workers", "train.epochs"})


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_differences(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting that differs between two resolved configs (as `to_dict` gives them)."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return [
        f"{key}: {a.get(key, '(unset)')} -> {b.get(key, '(unset)')}"
        for key in sorted(set(a) | set(b))
        if key not in RESUMABLE_CHANGES and a.get(key, missing) != b.get(key, missing)
    ]


def _resolved(tree: dict) -> dict:
    """A saved config with its model section as the model's full typed config, so a default written out
    (`--set model.dropout=<its default>`) is no difference."""
    try:
        model = {"name": tree["model"]["name"], **to_dict(build_model_config(tree["model"]))}
    except (AvdetError, KeyError, TypeError):
        return tree
    return {**tree, "model": model}


def check_run_dir(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """A run folder holding a run is never silently replaced: continue it (`resume`, with the same config), or
    replace it only when asked (`overwrite`)."""
    holds_run = any((run_dir / name).is_file() for name in ("last.ckpt", "best.ckpt"))
    if resume:
        if not (run_dir / "last.ckpt").is_file():
            raise DataError(f"{run_dir / 'last.ckpt'}: nothing to resume (no last checkpoint in the run folder)")
        saved = run_dir / "config.yaml"
        try:
            old = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise DataError(f"{saved}: cannot read the run's config to check the resume against ({err})") from None
        diffs = config_differences(_resolved(old if isinstance(old, dict) else {}), _resolved(to_dict(cfg)))
        if diffs:
            raise ConfigError(
                f"{run_dir}: --resume with a config that differs from the run's ({'; '.join(diffs)}): resume with "
                f"the run's config ({saved}) or start a new --run-dir"
            )
    elif holds_run and not overwrite:
        raise DataError(
            f"{run_dir}: holds a run already (best.ckpt / last.ckpt): continue it with --resume, choose a new "
            "--run-dir, or replace it with --overwrite"
        )


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train the configured model; writes config.yaml, last.ckpt, best.ckpt, metrics.jsonl (one line per epoch),
    curves.png and, when tensorboard is installed, TensorBoard scalars to `run_dir`.

    The task (dense or segment) decides the data, the losses and the validation metric; the loop, optimiser,
    schedule, EMA, checkpoints and resume are shared. Under torchrun every rank trains on its share of each global
    batch (DistributedDataParallel); only rank 0 validates, writes checkpoints and logs.
    """
    with run_folder_lock(run_dir, enabled=os.environ.get("RANK", "0") == "0"):  # one run per folder
        return _train(cfg, run_dir, resume=resume, overwrite=overwrite, reporter=reporter or Reporter())


def _train(cfg: ExperimentConfig, run_dir: Path, *, resume: bool, overwrite: bool, reporter: Reporter) -> TrainResult:
    tc = cfg.train
    check_run_dir(cfg, run_dir, resume=resume, overwrite=overwrite)
    dist, device = init_distributed(tc.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    model_cfg = cfg.model_config()
    entry = model_entry(cfg.model["name"])
    task = task_class(cfg.task)(cfg, model_cfg, dist)

    model = entry.model_cls(model_cfg).to(device)
    ema = ModelEma(model, tc.ema_decay)
    sampler = GlobalBatchSampler(len(task.train_set), tc.batch_size, tc.seed, dist.rank, dist.world)
    loader = task.train_loader(sampler)
    optimizer = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr)
    steps_per_epoch = len(sampler)
    total_epochs = tc.warmup_epochs + tc.epochs
    total_steps = total_epochs * steps_per_epoch
    schedule = partial(
        warmup_cosine,
        warmup=tc.warmup_epochs * steps_per_epoch,
        total=total_steps,
        constant=tc.schedule == "constant",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, best_metric, best_epoch, history = 0, -1.0, -1, []
    best_point: OperatingPoint | None = None  # what calibration chose for best.ckpt in this run

    last_path, best_path = run_dir / "last.ckpt", run_dir / "best.ckpt"
    if resume:
        state = read_checkpoint(last_path)["train_state"]
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        task.load_state_dict(state["task"])
        _set_rng_state(state["rng"])
        start_epoch, best_metric, best_epoch = state["epoch"] + 1, state["best_metric"], state["best_epoch"]
        history = list(state["history"])
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    net: nn.Module = model
    if dist.world > 1:
        task.prepare(model, dist.world)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    writer, metrics_log = None, None
    if dist.main:
        if not resume:  # --overwrite: the old run's checkpoints must not outlive it
            for stale in (last_path, best_path):
                stale.unlink(missing_ok=True)

        save_config(cfg, run_dir / "config.yaml")
        writer = open_tensorboard(run_dir / "tensorboard", purge_step=start_epoch * steps_per_epoch)
        metrics_log = MetricsLog(run_dir, start_epoch)
    meta = {
        "task": cfg.task,
        "model": {"name": entry.name, "config": to_dict(model_cfg)},
        "classes": task.classes,
        "extractor": task.spec,
        "postprocess": to_dict(cfg.postprocess),
        "data": _data_record(cfg, run_dir),
    }
    use_amp = tc.amp and device.type == "cuda"
    if dist.main:
        reporter.start(total_steps, start_epoch * steps_per_epoch)
    step = start_epoch * steps_per_epoch
    try:
        for epoch in range(start_epoch, total_epochs):
            task.set_epoch(epoch)
            sampler.set_epoch(epoch)
            if hasattr(model, "set_epoch"):  # e.g. LoCo's LCF warm-up (model.lcf_start_epoch)
                model.set_epoch(epoch)
            net.train()
            sums: dict[str, float] = {}
            for batch in loader:
                losses = task.losses(net, model, batch, device, dist.world, use_amp)
                optimizer.zero_grad(set_to_none=True)
                (losses["total"] * task.loss_scale(dist.world)).backward()
                if tc.clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad)
                optimizer.step()
                scheduler.step()
                ema.update(model)
                step += 1
                scalars = {k: float(dist.sum(v.detach().float())) for k, v in losses.items()}
                for k, v in scalars.items():
                    sums[k] = sums.get(k, 0.0) + v
                if writer is not None and step % tc.log_every == 0:
                    for k, v in scalars.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                if dist.main:
                    reporter.step(step, scalars)
            metrics: dict[str, float] = {f"loss_{k}": v / steps_per_epoch for k, v in sums.items()}
            metrics["epoch"] = epoch
            validate_now = epoch >= tc.eval_start and ((epoch + 1) % tc.eval_every == 0 or epoch + 1 == total_epochs)
            if dist.main and validate_now:
                t0 = time.perf_counter()
                metrics.update(task.validate(ema.module, device))
                metrics["val_seconds"] = time.perf_counter() - t0
                if writer is not None:
                    writer.add_scalar(task.metric_tag, metrics[task.metric], step)
                if metrics[task.metric] > best_metric:
                    best_metric, best_epoch = metrics[task.metric], epoch
                    best = {**meta, "epoch": epoch, "metrics": metrics, "state_dict": ema.module.state_dict()}
                    best_point = task.calibration()  # detect's default thresholds, from this very validation pass
                    if best_point is not None:
                        best["operating_point"] = best_point.to_payload()
                        f1 = (best_point.validation or {}).get("f1", 0.0)
                        log.info("calibrated best.ckpt: validation F1 %.3f", f1)
                    save_checkpoint(best_path, best)
            if dist.world > 1:  # every rank returns the same history and best metric
                metrics, best_metric, best_epoch = dist.broadcast((metrics, best_metric, best_epoch))
            history.append(metrics)
            if dist.main:
                reporter.epoch(epoch, metrics)
                metrics_log.write(metrics)
                save_checkpoint(
                    last_path,
                    {
                        **meta,
                        "epoch": epoch,
                        "metrics": metrics,
                        "state_dict": ema.module.state_dict(),
                        "train_state": {
                            "model": model.state_dict(),
                            "ema": ema.module.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "task": task.state_dict(),
                            "rng": _rng_state(),
                            "epoch": epoch,
                            "best_metric": best_metric,
                            "best_epoch": best_epoch,
                            "history": history,
                        },
                    },
                )
            dist.barrier()  # no rank runs ahead of a checkpoint it might need on resume
    finally:
        if writer is not None:
            writer.close()
        if metrics_log is not None:
            metrics_log.close()
    if dist.main:
        write_curves(run_dir, history, task.metric)
        if best_point is None and best_path.is_file():  # best.ckpt from before a --resume: its stored point
            stored = read_checkpoint(best_path).get("operating_point")
            best_point = None if stored is None else OperatingPoint.from_payload(stored, len(task.classes))
    return TrainResult(run_dir, best_metric, best_epoch, history, task.metric, best_point, list(task.classes))
