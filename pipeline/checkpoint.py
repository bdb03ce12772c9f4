"""Checkpoints: only tensors and primitives, loadable with `torch.load(..., weights_only=True)`.

A checkpoint carries everything `detect` and `eval` need: the model name and config, the class names, the extractor spec
the model was trained on, the post-processing parameters, the calibrated operating point (when calibrated) and the (EMA)
weights. A training checkpoint (`last.ckpt`) adds the optimiser, schedule, raw weights, normaliser and RNG states for
`--resume`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avdet import __version__
from avdet.errors import AvdetError, CheckpointError
from avdet.models.registry import model_entry
from avdet.pipeline.config import DataConfig, from_dict
from avdet.pipeline.io.atomic import atomic_path
from avdet.pipeline.postprocess import PostprocessConfig
from avdet.pipeline.types import OperatingPoint

FORMAT = "avdet-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, EMA weights) and everything `detect` and `eval` need with it."""

    path: Path
    model: nn.Module
    name: str  # model name in the registry (loco, unav, ccnet, ccln)
    task: str  # dense | segment
    classes: list[str]
    extractor: dict  # the spec of the features the model was trained on
    postprocess: PostprocessConfig  # decoding and NMS settings (dense task)
    data: DataConfig  # where the training data was, with any overrides applied
    meta: dict  # epoch, metrics, avdet_version
    operating_point: OperatingPoint | None = None  # calibrated thresholds (pipeline/calibrate.py), if any

    def check_compatible(self, classes: list[str], dims: tuple[int, int]) -> None:
        """Refuse data whose classes or feature dims (visual, audio) differ from what the model was trained on."""
        if self.classes != classes:
            raise CheckpointError(
                f"{self.path}: trained on {len(self.classes)} classes ({', '.join(self.classes[:3])}, ...) but the "
                f"data has {len(classes)} ({', '.join(classes[:3])}, ...)"
            )
        want = (self.extractor.get("visual_dim"), self.extractor.get("audio_dim"))
        if None not in want and tuple(want) != tuple(dims):
            raise CheckpointError(
                f"{self.path}: trained on features of dims {want} (visual, audio) but the data has {dims}"
            )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp + rename): an interrupted save never replaces a good checkpoint with half a file."""
    payload = {"format": FORMAT, "version": VERSION, "avdet_version": __version__, **payload}
    with atomic_path(path, CheckpointError) as tmp:
        torch.save(payload, tmp)


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
    entry = model_entry(model_section["name"])
    cfg = from_dict(entry.config_cls, model_section["config"], "model")
    return entry.model_cls(cfg), entry.name


def _with(cls: type, recorded: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str) -> Any:
    values = {**recorded, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    return from_dict(cls, values, where)


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    data: Mapping[str, Any] | None = None,
    postprocess: Mapping[str, Any] | None = None,
) -> Checkpoint:
    """A checkpoint ready for inference. `data` overrides the recorded data locations (DataConfig fields such as
    annotations, cache, released_root, ave_root); `postprocess` overrides PostprocessConfig fields. None values
    are ignored, so command-line options can be passed as they are."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    try:
        model, name = build_model_from(ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
        data_cfg = _with(DataConfig, ckpt.get("data", {}), data, "data")
        pp_cfg = _with(PostprocessConfig, ckpt.get("postprocess", {}), postprocess, "postprocess")
        point = ckpt.get("operating_point")
        point = None if point is None else OperatingPoint.from_payload(point, len(ckpt["classes"]))
    except AvdetError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except ValueError as err:  # only the operating point raises it
        raise CheckpointError(f"{path}: {err}") from None
    except (RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model ({str(err).splitlines()[0][:160]})") from None
    model.to(device).eval()
    return Checkpoint(
        path=path,
        model=model,
        name=name,
        task=ckpt.get("task", "dense"),
        classes=list(ckpt["classes"]),
        extractor=dict(ckpt["extractor"]),
        postprocess=pp_cfg,
        data=data_cfg,
        meta={k: ckpt[k] for k in ("epoch", "metrics", "avdet_version") if k in ckpt},
        operating_point=point,
    )
