"""Checkpoints: only tensors and primitives, loadable with `torch.load(..., weights_only=True)`.

A checkpoint carries everything `detect` and `eval` need: the model name and config, the class names, the extractor spec
the model was trained on, the post-processing parameters, the calibrated operating point (when calibrated) and the (EMA)
weights. A training checkpoint (`last.ckpt`) adds the optimiser, schedule, raw weights, normaliser and RNG states for
`--resume`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avdet.errors import AvdetError, CheckpointError
from avdet.models.pyramid import streams
from avdet.models.registry import model_entry
from avdet.pipeline.config import DataConfig, from_dict
from avdet.pipeline.io.atomic import atomic_path
from avdet.pipeline.postprocess import PostprocessConfig
from avdet.pipeline.types import OperatingPoint
from avdet.version import __version__

FORMAT = "avdet-checkpoint"
VERSION = 1
# DataConfig fields that are paths: recorded relative to the run folder, resolved against the checkpoint's folder.
DATA_PATH_KEYS = ("annotations", "classes", "cache", "released_root", "ave_root")


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

    @property
    def modality(self) -> str:
        """The streams the model reads: audio_visual, audio or visual."""
        return getattr(getattr(self.model, "cfg", None), "modality", "audio_visual")

    def check_compatible(self, classes: list[str], dims: tuple[int, int]) -> None:
        """Refuse data whose classes or feature dims (visual, audio) differ from what the model was trained on
        (a unimodal model: the dim of the stream it reads)."""
        if self.classes != classes:
            raise CheckpointError(
                f"{self.path}: trained on {len(self.classes)} classes ({', '.join(self.classes[:3])}, ...) but the "
                f"data has {len(classes)} ({', '.join(classes[:3])}, ...)"
            )
        used = streams(self.modality)
        want = tuple(self.extractor.get(f"{n}_dim") for n in used)
        dims = tuple(d for n, d in zip(("visual", "audio"), dims, strict=True) if n in used)
        if None not in want and want != dims:
            raise CheckpointError(
                f"{self.path}: trained on features of dims {want} (visual, audio) but the data has {dims}"
            )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp + rename): an interrupted save never replaces a good checkpoint with half a file."""
    payload = {"format": FORMAT, "version": VERSION, "avdet_version": __version__, **payload}
    with atomic_path(path, CheckpointError) as tmp, open(tmp, "xb") as f:
        try:
            torch.save(payload, f)  # a Python file: a full disk is an OSError, which atomic_path makes one line
        except RuntimeError as err:  # torch's zip writer, closing after that OSError, raises its own error
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise


# What an exported (shared) checkpoint keeps besides the weights: no training state, no local data paths.
EXPORTED_KEYS = (
    "task",
    "model",
    "classes",
    "extractor",
    "postprocess",
    "operating_point",
    "epoch",
    "metrics",
    "avdet_version",
)
SAFETENSORS_META_KEY = "avdet"


def export_safetensors(src: str | Path, dst: str | Path) -> Path:
    """A checkpoint's (EMA) weights as a `.safetensors` file, its metadata as JSON in the header: loadable
    without pickle, and without the training state and the trainer's data paths."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: an exported checkpoint is a .safetensors file")
    ckpt = read_checkpoint(src)
    meta = {k: ckpt[k] for k in EXPORTED_KEYS if k in ckpt}
    header = {"format": FORMAT, "version": str(VERSION), SAFETENSORS_META_KEY: json.dumps(meta, sort_keys=True)}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["state_dict"].items()}  # no shared storage
    with atomic_path(dst, CheckpointError) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return dst


def _read_safetensors(path: Path) -> dict[str, Any]:
    """An exported checkpoint as the dict `torch.load` gives for a `.ckpt` (envelope checked by the caller)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
        meta = json.loads(header.get(SAFETENSORS_META_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({str(err).splitlines()[0][:160]})") from None
    version = header.get("version")
    return {
        "format": header.get("format"),
        "version": int(version) if (version or "").isdigit() else version,
        **meta,
        "state_dict": state_dict,
    }


def torch_load(path: Path, what: str) -> Any:
    """`torch.load(weights_only=True)`; any failure is one `CheckpointError` naming the file and the reason in words."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle before failing on foreign bytes: our line says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types (KeyError, UnpicklingError, ...) on foreign bytes
        raise CheckpointError(f"{path}: not {what} ({load_failure_reason(err)})") from None


def load_failure_reason(err: Exception) -> str:
    """Why `torch.load` failed, in words: on foreign bytes the unpickler raises e.g. a bare `KeyError(544502645)`."""
    text = str(err).strip().strip("'\"")
    if isinstance(err, KeyError | IndexError | EOFError) or not text or text.lstrip("-").isdigit():
        return "unreadable or truncated PyTorch data"
    if text.startswith("Weights only load failed"):
        return "it holds pickled code or objects, which avdet never runs"
    return text.splitlines()[0][:160]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check the envelope (a `.ckpt` or an exported `.safetensors`); every failure is a one-line
    `CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _check_envelope(path, _read_safetensors(path))
    return _check_envelope(path, torch_load(path, "an avdet checkpoint"))


def _check_envelope(path: Path, ckpt: Any) -> dict[str, Any]:
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
    classes = [str(c) for c in ckpt["classes"]]
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise CheckpointError(f"{path}: class name {repeated[0]!r} appears twice; class names must be unique")
    return ckpt


def first_non_finite(state_dict: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity (a diverged or damaged model), or None."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def build_model_from(model_section: dict) -> tuple[nn.Module, str]:
    entry = model_entry(model_section["name"])
    cfg = from_dict(entry.config_cls, model_section["config"], "model")
    return entry.model_cls(cfg), entry.name


def _with(cls: type, recorded: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str) -> Any:
    values = {**recorded, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    return from_dict(cls, values, where)


def _resolve_data_paths(recorded: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """Recorded relative data paths made absolute against the checkpoint's folder (absolute ones stay)."""
    resolved = dict(recorded)
    for key in DATA_PATH_KEYS:
        if resolved.get(key) and not Path(resolved[key]).is_absolute():
            resolved[key] = str((folder / resolved[key]).resolve())
    return resolved


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
    broken = first_non_finite(ckpt["state_dict"])
    if broken is not None:
        raise CheckpointError(f"{path}: weight {broken} holds NaN or infinite values (a diverged or damaged model)")
    try:
        model, name = build_model_from(ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
        data_cfg = _with(DataConfig, _resolve_data_paths(ckpt.get("data", {}), path.parent), data, "data")
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
