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
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from avdet.errors import CheckpointError, ConfigError
from avdet.models.ccnet import CCNetConfig
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
    from avdet.models.keymaps import ccnet_state_dict_from_reference

    return ccnet_state_dict_from_reference(dict(state))


def _ccnet_config(ref: Mapping[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from avdet.models.keymaps import ccnet_config_from_reference

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


def ccnet_config_from_reference(model_cfg: dict) -> CCNetConfig:
    """The reference constructor arguments (its `model` config section) as a `CCNetConfig`."""
    arch = tuple(model_cfg.get("backbone_arch", (2, 2, 5)))
    if model_cfg.get("scale_factor", 2) != 2:
        raise CheckpointError(f"CCNet reference scale_factor {model_cfg['scale_factor']} is not supported (only 2)")
    return CCNetConfig(
        visual_dim=int(model_cfg["input_dim_V"]),
        audio_dim=int(model_cfg["input_dim_A"]),
        num_classes=int(model_cfg["num_classes"]),
        max_seq_len=int(model_cfg["max_seq_len"]),
        embed_dim=int(model_cfg.get("embd_dim", 512)),
        num_heads=int(model_cfg.get("n_head", 4)),
        embed_convs=int(arch[0]),
        embed_kernel=int(model_cfg.get("embd_kernel_size", 3)),
        embed_with_ln=bool(model_cfg.get("embd_with_ln", True)),
        encoder_layers=int(arch[1]),
        num_levels=int(arch[2]) + 1,
        head_dim=int(model_cfg.get("head_dim", 512)),
        head_layers=int(model_cfg.get("head_num_layers", 3)),
        head_kernel=int(model_cfg.get("head_kernel_size", 3)),
        head_with_ln=bool(model_cfg.get("head_with_ln", True)),
        class_aware=bool(model_cfg.get("class_aware", True)),
    )


_BLOCK = r"(?P<blk>(?:\.\d+)?)\."  # an optional ModuleList index, then the block's own names


# (reference pattern, avdet replacement) for the module prefixes; the block internals are mapped below
_PREFIXES: list[tuple[str, str]] = [
    (r"^backbone\.embd_V\.", "backbone.embed_visual."),
    (r"^backbone\.embd_A\.", "backbone.embed_audio."),
    (r"^backbone\.embd_norm_V\.", "backbone.embed_norm_visual."),
    (r"^backbone\.embd_norm_A\.", "backbone.embed_norm_audio."),
    (r"^backbone\.self_att_V\.", "backbone.encoder_visual."),
    (r"^backbone\.self_att_A\.", "backbone.encoder_audio."),
    (r"^backbone\.ori_CMI_Visual\.", "backbone.cross_visual.0."),
    (r"^backbone\.ori_CMI_Audio\.", "backbone.cross_audio.0."),
    (r"^backbone\.visual_TCG\.", "backbone.gate_visual."),
    (r"^backbone\.audio_TCG\.", "backbone.gate_audio."),
    (r"^MTGC_block\.feature_expand\.", "mtgc.expand."),
    (r"^MTGC_block\.feature_squeeze\.", "mtgc.squeeze."),
    (r"^MTGC_block\.cooccur_branch\.", "mtgc.cooccur."),
    (r"^MTGC_block\.temporal_branch\.", "mtgc.temporal."),
    (r"^MTGC_block\.C2F_attention\.", "mtgc.c2f_attn."),
    (r"^MTGC_block\.F2C_attention_block\.", "mtgc.f2c_attn."),
    (r"^MTGC_block\.C2F_linear\.", "mtgc.c2f_linear."),
    (r"^MTGC_block\.feature_tem_press\.", "mtgc.channel_press."),
    (r"^MTGC_block\.feature_tem_block\.", "mtgc.channel_expand."),
    (r"^MTGC_block\.channel_att\.", "mtgc.channel_attn."),
    (r"^(cls|reg)_head\.head\.", r"\1_head.tower.convs."),
    (r"^(cls|reg)_head\.norm\.", r"\1_head.tower.norms."),
    (r"^cls_head\.cls_head\.", "cls_head.classifier."),
    (r"^reg_head\.offset_head\.", "reg_head.regressor."),
    (r"^reg_head\.scale\.", "reg_head.scales."),
]


_INTERNALS: list[tuple[str, str]] = [  # inside transformer blocks and gates
    (r"\.ln11\.", ".norm_kv."),
    (r"\.ln12\.", ".norm_q."),
    (r"\.ln2\.", ".norm_mlp."),
    (r"(_TCG\.\d+)\.(query|key|value|proj)(_conv|_norm)?\.", r"\1.attn.\2\3."),
    (r"\.gate_linear\.", ".gate."),
]


# reference (1, C, 1) LayerNorm / LayerScale tensors and (out, in, 1) pointwise convs become (C,) and (out, in)
_FLATTEN = re.compile(r"(norm\w*(\.\d+)?|norms\.\d+|drop_path_\w+)\.(weight|bias|scale)$")


_POINTWISE = re.compile(r"(\.attn\.(query|key|value|proj)|\.mlp\.[03])\.weight$")


def _rename_ccnet(key: str) -> str:
    new = key[len("module.") :] if key.startswith("module.") else key
    for pattern, repl in _INTERNALS:  # before the prefixes: they look at the reference's module names
        new = re.sub(pattern, repl, new)
    cmi = re.match(r"^backbone\.CMI_(Visual|Audio)\.(\d+)\.", new)
    if cmi:  # the strided cross-modal blocks are levels 1.. of avdet's pyramid
        side = "visual" if cmi.group(1) == "Visual" else "audio"
        return f"backbone.cross_{side}.{int(cmi.group(2)) + 1}." + new[cmi.end() :]
    for pattern, repl in _PREFIXES:
        renamed, hits = re.subn(pattern, repl, new)
        if hits:
            return renamed
    raise CheckpointError(f"unexpected parameter {key!r} in a CCNet reference state dict")


def ccnet_state_dict_from_reference(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A zzhhfut/CCNet-AAAI2025 `CCNet_base_TCG_Transformer` state dict (optionally `module.`-prefixed) with
    avdet's `CCNet` names and shapes. Unknown names are a one-line `CheckpointError`."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        new = _rename_ccnet(key)
        if _FLATTEN.search(new) and value.dim() == 3:
            value = value.reshape(-1)  # (1, C, 1) -> (C,)
        elif _POINTWISE.search(new) and value.dim() == 3:
            value = value.squeeze(-1)  # (out, in, 1) -> (out, in)
        out[new] = value
    return out
