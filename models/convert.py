"""Reference checkpoints -> avdet: parameter names, shapes and constructor arguments.

The reference code keeps tensors channel-first (B, C, T): its LayerNorm/LayerScale parameters are (1, C, 1) and its
1x1 projections are Conv1d weights (out, in, 1). avdet is channel-last: (C,) and nn.Linear (out, in). Renaming is
a list of (reference prefix, avdet prefix) rules applied to the longest matching prefix.

    convert_state_dict("unav", reference_state_dict) -> avdet state dict
    reference_config("unav", reference_model_config) -> avdet model config dict (for UnAVConfig)
    convert_checkpoint(src, dst, "unav", classes, extractor_spec) -> an avdet checkpoint file
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avdet.errors import CheckpointError, ConfigError
from avdet.models.targets import default_regression_ranges

# -- UnAV (ttgeng233/UnAV LocPointTransformer) -------------------------------------------------------------------
_UNAV_BLOCK_RULES = [("ln11.", "norm_kv."), ("ln12.", "norm_q."), ("ln2.", "norm_mlp.")]
_UNAV_MODULE_RULES = [
    (r"backbone\.embd_V\.(\d+)\.", r"visual_embed.convs.\1."),
    (r"backbone\.embd_A\.(\d+)\.", r"audio_embed.convs.\1."),
    (r"backbone\.embd_norm_V\.(\d+)\.", r"visual_embed.norms.\1."),
    (r"backbone\.embd_norm_A\.(\d+)\.", r"audio_embed.norms.\1."),
    (r"backbone\.self_att_V\.(\d+)\.", r"visual_stem.\1."),
    (r"backbone\.self_att_A\.(\d+)\.", r"audio_stem.\1."),
    (r"backbone\.ori_cross_att_Va\.", "visual_cross."),
    (r"backbone\.ori_cross_att_Av\.", "audio_cross."),
    (r"backbone\.cross_att_Va\.(\d+)\.", r"visual_pyramid.\1."),
    (r"backbone\.cross_att_Av\.(\d+)\.", r"audio_pyramid.\1."),
    (r"dependency_block\.feature_expand\.", "dependency.expand."),
    (r"dependency_block\.feature_squeeze\.", "dependency.squeeze."),
    (r"dependency_block\.cooccur_branch\.", "dependency.cooccur."),
    (r"dependency_block\.temporal_branch\.", "dependency.temporal."),
    (r"(cls|reg)_head\.head\.(\d+)\.", r"\1_head.tower.convs.\2."),
    (r"(cls|reg)_head\.norm\.(\d+)\.", r"\1_head.tower.norms.\2."),
    (r"cls_head\.cls_head\.", "cls_head.classifier."),
    (r"reg_head\.offset_head\.", "reg_head.regressor."),
    (r"reg_head\.scale\.(\d+)\.", r"reg_head.scales.\1."),
]
# avdet parameters that are nn.Linear where the reference has a 1x1 Conv1d
_LINEAR_WEIGHT = re.compile(r"\.(attn\.(query|key|value|proj)|mlp\.(0|3))\.weight$")


def _rename_unav(key: str) -> str:
    for pattern, repl in _UNAV_MODULE_RULES:
        key, n = re.subn("^" + pattern, repl, key)
        if n:
            break
    else:
        raise CheckpointError(f"unexpected UnAV parameter {key!r}: not a LocPointTransformer checkpoint")
    for old, new in _UNAV_BLOCK_RULES:
        key = key.replace("." + old, "." + new)
    return key


def _to_channel_last(key: str, value: Tensor) -> Tensor:
    if _LINEAR_WEIGHT.search(key):
        return value.squeeze(-1)  # (out, in, 1) -> (out, in)
    if value.dim() == 3 and value.shape[0] == 1 and value.shape[2] == 1:
        return value.reshape(-1)  # (1, C, 1) -> (C,)
    return value


def _convert_unav(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {_rename_unav(k): _to_channel_last(_rename_unav(k), v) for k, v in state.items()}


def _unav_config(ref: Mapping[str, Any]) -> dict[str, Any]:
    """LocPointTransformer constructor arguments -> UnAVConfig fields (checks what avdet does not model)."""
    fixed = {"backbone_type": "convTransformer", "dependency_type": "DependencyBlock"}
    for key, want in fixed.items():
        if key in ref and ref[key] != want:
            raise ConfigError(f"UnAV {key} {ref[key]!r} is not supported (only {want!r})")
    arch = list(ref.get("backbone_arch", (2, 3, 5)))
    if len(arch) != 3 or arch[1] < 1:
        raise ConfigError(f"UnAV backbone_arch must be (convs, stem, levels - 1) with stem >= 1, got {arch}")
    num_levels = arch[2] + 1
    if "regression_range" in ref:
        ranges = [tuple(float(x) for x in r) for r in ref["regression_range"]]
        default = [tuple(r) for r in default_regression_ranges(num_levels)]
        ranges[-1] = (ranges[-1][0], math.inf) if ranges[-1][1] >= 10000 else ranges[-1]
        if ranges != default:
            raise ConfigError(
                f"UnAV regression_range {ref['regression_range']} differs from the default: set loss.regression_ranges"
            )
    names = {
        "input_dim_V": "visual_dim",
        "input_dim_A": "audio_dim",
        "num_classes": "num_classes",
        "max_seq_len": "max_seq_len",
        "embd_dim": "embed_dim",
        "n_head": "num_heads",
        "embd_kernel_size": "embed_kernel",
        "embd_with_ln": "embed_with_ln",
        "scale_factor": "scale_factor",
        "use_abs_pe": "use_abs_pe",
        "use_dependency": "use_dependency",
        "class_aware": "class_aware",
        "head_dim": "head_dim",
        "head_num_layers": "head_layers",
        "head_kernel_size": "head_kernel",
        "head_with_ln": "head_with_ln",
    }
    out: dict[str, Any] = {new: ref[old] for old, new in names.items() if old in ref}
    out["embed_convs"] = arch[0]
    out["self_attn_layers"] = arch[1] - 1
    out["num_levels"] = num_levels
    train_cfg = ref.get("train_cfg") or {}
    if "cls_prior_prob" in train_cfg:
        out["head_prior_prob"] = train_cfg["cls_prior_prob"]
    if "dropout" in train_cfg:
        out["dropout"] = train_cfg["dropout"]
    if "droppath" in train_cfg:
        out["drop_path"] = train_cfg["droppath"]
    return out


def _convert_ccnet(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    from avdet.models.ccnet import ccnet_state_dict_from_reference

    return ccnet_state_dict_from_reference(dict(state))


def _ccnet_config(ref: Mapping[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from avdet.models.ccnet import ccnet_config_from_reference

    return asdict(ccnet_config_from_reference(dict(ref)))


_CONVERTERS: dict[str, tuple[Callable[[Mapping[str, Tensor]], dict[str, Tensor]], Callable[..., dict]]] = {
    "unav": (_convert_unav, _unav_config),
    "ccnet": (_convert_ccnet, _ccnet_config),
}


def _converter(model_name: str) -> tuple[Callable, Callable]:
    if model_name not in _CONVERTERS:
        raise ConfigError(f"no reference converter for model {model_name!r} (known: {', '.join(sorted(_CONVERTERS))})")
    return _CONVERTERS[model_name]


def convert_state_dict(model_name: str, reference_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reference parameter names and layouts -> avdet's (a `module.` prefix from DataParallel is dropped)."""
    state = {k.removeprefix("module."): v for k, v in reference_state_dict.items()}
    return _converter(model_name)[0](state)


def reference_config(model_name: str, reference_model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Reference constructor arguments -> the avdet model config dict (fields of the model's config class)."""
    return _converter(model_name)[1](reference_model_config)


def _load_reference(src: Path) -> dict[str, Any]:
    if not src.is_file():
        raise CheckpointError(f"{src}: no such checkpoint file")
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{src}: not a readable PyTorch checkpoint ({first[:160]})") from None
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
    if not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{src}: no state dict of tensors found (keys: {', '.join(list(ckpt)[:5])})")
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
