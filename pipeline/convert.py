"""`avdet convert`: a released UnAV / CCNet checkpoint file -> an avdet checkpoint (the key maps are in
`models.keymaps`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from avdet.errors import CheckpointError, ConfigError
from avdet.models.keymaps import convert_state_dict, reference_config


def _load_reference(src: Path) -> dict[str, Any]:
    if not src.is_file():
        raise CheckpointError(f"{src}: no such checkpoint file")
    from avdet.pipeline.checkpoint import torch_load

    ckpt = torch_load(src, "a readable PyTorch checkpoint")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{src}: expected a dict of tensors, got {type(ckpt).__name__}")
    return ckpt


def convert_checkpoint(
    src_path: str | Path,
    dst_path: str | Path,
    model_name: str,
    classes: list[str],
    extractor_spec: Mapping[str, Any],
    model_config: Mapping[str, Any] | None = None,
    postprocess: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A released reference checkpoint -> an avdet checkpoint (see `pipeline.checkpoint.save_checkpoint`).

    The EMA weights (`state_dict_ema`) are used when present, as the reference evaluates them, else `state_dict`
    (or the file itself when it is a bare state dict). `model_config` holds the reference constructor arguments
    (the checkpoint files do not store them); missing means the reference defaults, with the feature dims and the
    number of classes taken from the weights. Returns the written payload.
    """
    from avdet.models.registry import model_entry
    from avdet.pipeline.checkpoint import save_checkpoint
    from avdet.pipeline.config import from_dict, to_dict

    src, dst = Path(src_path), Path(dst_path)
    ckpt = _load_reference(src)
    raw = ckpt.get("state_dict_ema") or ckpt.get("state_dict") or ckpt
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{src}: no state dict of tensors found (keys: {', '.join(map(str, list(ckpt)[:5]))})")
    state = convert_state_dict(model_name, raw)
    config = _infer_dims(model_name, state, reference_config(model_name, model_config or {}))
    entry = model_entry(model_name)
    model_cfg = from_dict(entry.config_cls, config, "model")
    if getattr(model_cfg, "num_classes", len(classes)) != len(classes):
        raise CheckpointError(
            f"{src}: the weights predict {model_cfg.num_classes} classes but {len(classes)} were given"
        )
    model = entry.model_cls(model_cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{src}: weights do not fit the {model_name} model ({str(err).splitlines()[0][:200]})"
        ) from None
    payload: dict[str, Any] = {
        "task": "dense",
        "model": {"name": model_name, "config": to_dict(model_cfg)},
        "classes": list(classes),
        "extractor": dict(extractor_spec),
        "state_dict": model.state_dict(),
        "converted_from": str(src),
    }
    if postprocess is not None:
        payload["postprocess"] = dict(postprocess)
    save_checkpoint(dst, payload)
    return payload


def _infer_dims(model_name: str, state: Mapping[str, Tensor], config: dict[str, Any]) -> dict[str, Any]:
    """Fill sizes the weights determine (feature dims, classes, embed dim) when the config does not give them."""
    if model_name != "unav":
        return config
    shapes = {
        "visual_dim": ("visual_embed.convs.0.conv.weight", 1),
        "audio_dim": ("audio_embed.convs.0.conv.weight", 1),
        "embed_dim": ("visual_embed.convs.0.conv.weight", 0),
        "num_classes": ("cls_head.classifier.conv.weight", 0),
        "head_dim": ("cls_head.classifier.conv.weight", 1),
    }
    out = dict(config)
    for field, (key, axis) in shapes.items():
        if field not in out and key in state:
            out[field] = int(state[key].shape[axis])
    if "use_dependency" not in out:
        out["use_dependency"] = any(k.startswith("dependency.") for k in state)
    return out


def read_reference_config(path: Path) -> dict[str, Any] | None:
    """The model section of a reference training YAML (the constructor arguments its checkpoint was made with)."""
    import yaml

    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (cannot decode it as UTF-8)") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the reference config ({err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the reference config must be a YAML mapping")
    return tree.get("model")


def convert_release(
    src: Path, dst: Path, model_name: str, classes_tsv: Path | None, features: str, config_yaml: Path | None = None
) -> dict[str, Any]:
    """`avdet convert`: a released checkpoint, its class list (TSV) and optionally its reference YAML -> an avdet
    checkpoint trained on the released feature set `features` (i3d_vggish or onepeace)."""
    from avdet.pipeline.data.annotations import read_classes

    if classes_tsv is None:
        raise ConfigError("--classes is required: the reference checkpoints do not store class names")
    names = read_classes({"database": {}}, classes_tsv)
    model_config = read_reference_config(config_yaml) if config_yaml is not None else None
    released = {"name": features, "released": True}
    return convert_checkpoint(src, dst, model_name, names, released, model_config=model_config)
