"""Checkpoints: only tensors and primitives, loadable with `torch.load(..., weights_only=True)`.

A checkpoint carries everything `detect` and `eval` need: the model name and config, the class names, the
extractor spec the model was trained on, the post-processing parameters and the (EMA) weights. A training
checkpoint (`last.ckpt`) adds the optimiser, schedule, raw weights, normaliser and RNG states for `--resume`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avdet import __version__
from avdet.errors import AvdetError, CheckpointError
from avdet.models.registry import model_entry

FORMAT = "avdet-checkpoint"
VERSION = 1


@dataclass
class LoadedModel:
    model: nn.Module
    name: str
    task: str
    classes: list[str]
    extractor: dict
    postprocess: dict
    meta: dict


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp + rename): an interrupted save never replaces a good checkpoint with half a file."""
    payload = {"format": FORMAT, "version": VERSION, "avdet_version": __version__, **payload}
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check the envelope; every failure is a one-line `CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types (KeyError, UnpicklingError, ...) on foreign bytes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not an avdet checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an avdet checkpoint (no '{FORMAT}' header)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt.get('version')} is not supported by this avdet "
            f"(expects {VERSION}); use the avdet release that wrote it"
        )
    for key in ("model", "classes", "extractor", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return ckpt


def build_model_from(model_section: dict) -> tuple[nn.Module, str]:
    from avdet.pipeline.config import from_dict

    entry = model_entry(model_section["name"])
    cfg = from_dict(entry.config_cls, model_section["config"], "model")
    return entry.model_cls(cfg), entry.name


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A model ready for inference (eval mode, EMA weights) with its metadata."""
    ckpt = read_checkpoint(path)
    try:
        model, name = build_model_from(ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
    except AvdetError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model ({str(err).splitlines()[0][:160]})") from None
    model.to(device).eval()
    return LoadedModel(
        model=model,
        name=name,
        task=ckpt.get("task", "dense"),
        classes=list(ckpt["classes"]),
        extractor=dict(ckpt["extractor"]),
        postprocess=dict(ckpt.get("postprocess", {})),
        meta={k: ckpt[k] for k in ("epoch", "metrics", "avdet_version", "data") if k in ckpt},
    )


def check_compatible(path: str | Path, loaded: LoadedModel, classes: list[str], dims: tuple[int, int]) -> None:
    """Refuse data whose classes or feature dims differ from what the checkpoint was trained on."""
    if loaded.classes != classes:
        raise CheckpointError(
            f"{path}: trained on {len(loaded.classes)} classes ({', '.join(loaded.classes[:3])}, ...) but the data has "
            f"{len(classes)} ({', '.join(classes[:3])}, ...)"
        )
    want = (loaded.extractor.get("visual_dim"), loaded.extractor.get("audio_dim"))
    if None not in want and tuple(want) != tuple(dims):
        raise CheckpointError(f"{path}: trained on features of dims {want} (visual, audio) but the data has {dims}")
