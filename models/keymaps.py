"""Reference checkpoints -> avdet: parameter names, shapes and constructor arguments, for UnAV and CCNet.

Each reference is described as data (a `ReferenceLayout`) and converted by the same functions:
- names: `internals` (names inside attention blocks and gates) are replaced everywhere, then the first matching
  `prefixes` rule renames the module path; a parameter no rule knows is a one-line `CheckpointError`;
- shapes: the reference keeps tensors channel-first (B, C, T), so its LayerNorm / LayerScale parameters are
  (1, C, 1) and its 1x1 projections Conv1d weights (out, in, 1); avdet is channel-last: (C,) and nn.Linear (out, in);
- constructor arguments: a table of reference argument -> avdet config field, plus `backbone_arch`.

    convert_state_dict("unav", reference_state_dict) -> avdet state dict
    reference_config("unav", reference_model_config) -> avdet model config dict (fields of UnAVConfig)

Reading and writing checkpoint files is `avdet.pipeline.convert`'s job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from avdet.errors import CheckpointError, ConfigError
from avdet.models.targets import default_regression_ranges

# (regular expression, replacement); a replacement may be a function of the match
Rule = tuple[str, str | Callable[[re.Match[str]], str]]


@dataclass(frozen=True)
class ReferenceLayout:
    """How one reference implementation names, shapes and configures what avdet's model holds."""

    label: str  # for messages
    internals: tuple[Rule, ...]  # replaced everywhere, first (they read the reference's own module names)
    prefixes: tuple[Rule, ...]  # tried in order at the start of the name; the first match wins
    fields: Mapping[str, str]  # reference constructor argument ("a.b": b inside a) -> avdet config field
    arch_default: tuple[int, int, int]  # backbone_arch: (embedding convs, stem, levels - 1)
    stem_field: str  # the avdet field counting the stem's blocks ...
    stem_offset: int  # ... = backbone_arch[1] - stem_offset
    check: Callable[[Mapping[str, Any], int], None]  # (arguments, levels): refuses what avdet does not model
    required: tuple[str, ...] = ()  # constructor arguments the weights cannot stand in for


# -- shapes (the same for every reference) --------------------------------------------------------------------------
_FLATTEN = re.compile(r"(norm\w*(\.\d+)?|norms\.\d+|drop_path_\w+)\.(weight|bias|scale)$")  # LayerNorm, LayerScale
_POINTWISE = re.compile(r"(\.attn\.(query|key|value|proj)|\.mlp\.[03])\.weight$")  # 1x1 convs avdet holds as Linear


def _channel_last(name: str, value: Tensor) -> Tensor:
    """A reference tensor in the layout of the avdet parameter `name`."""
    if value.dim() != 3:
        return value
    if _FLATTEN.search(name):
        return value.reshape(-1)  # (1, C, 1) -> (C,)
    if _POINTWISE.search(name):
        return value.squeeze(-1)  # (out, in, 1) -> (out, in)
    return value


# -- names ----------------------------------------------------------------------------------------------------------
_BLOCK_INTERNALS: tuple[Rule, ...] = ((r"\.ln11\.", ".norm_kv."), (r"\.ln12\.", ".norm_q."), (r"\.ln2\.", ".norm_mlp."))
_HEADS: tuple[Rule, ...] = (  # UnAV's heads, which CCNet reuses
    (r"(cls|reg)_head\.head\.(\d+)\.", r"\1_head.tower.convs.\2."),
    (r"(cls|reg)_head\.norm\.(\d+)\.", r"\1_head.tower.norms.\2."),
    (r"cls_head\.cls_head\.", "cls_head.classifier."),
    (r"reg_head\.offset_head\.", "reg_head.regressor."),
    (r"reg_head\.scale\.(\d+)\.", r"reg_head.scales.\1."),
)


_DEPENDENCY = {
    "feature_expand": "expand",
    "feature_squeeze": "squeeze",
    "cooccur_branch": "cooccur",
    "temporal_branch": "temporal",
}


def _dependency(reference: str, avdet: str) -> tuple[Rule, ...]:
    """UnAV's dependency block (under `reference` there, `avdet` here), which CCNet's MTGC extends."""
    return tuple((rf"{reference}\.{old}\.", f"{avdet}.{new}.") for old, new in _DEPENDENCY.items())


def _strided_level(match: re.Match[str]) -> str:
    """CCNet's strided cross-modal blocks CMI_*.i are levels i + 1 of avdet's pyramid (level 0 is ori_CMI_*)."""
    return f"backbone.cross_{match[1].lower()}.{int(match[2]) + 1}."


def _rename(layout: ReferenceLayout, key: str) -> str:
    name = key
    for pattern, repl in layout.internals:
        name = re.sub(pattern, repl, name)
    for pattern, repl in layout.prefixes:
        renamed, hits = re.subn("^" + pattern, repl, name)
        if hits:
            return renamed
    raise CheckpointError(f"unexpected parameter {key!r} in a {layout.label} reference state dict")


# -- constructor arguments ------------------------------------------------------------------------------------------
_COMMON_FIELDS = {
    "input_dim_V": "visual_dim",
    "input_dim_A": "audio_dim",
    "num_classes": "num_classes",
    "max_seq_len": "max_seq_len",
    "embd_dim": "embed_dim",
    "n_head": "num_heads",
    "embd_kernel_size": "embed_kernel",
    "embd_with_ln": "embed_with_ln",
    "class_aware": "class_aware",
    "head_dim": "head_dim",
    "head_num_layers": "head_layers",
    "head_kernel_size": "head_kernel",
    "head_with_ln": "head_with_ln",
}


def _lookup(ref: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted argument path ("train_cfg.dropout")."""
    value: Any = ref
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _check_unav(ref: Mapping[str, Any], num_levels: int) -> None:
    for key, want in {"backbone_type": "convTransformer", "dependency_type": "DependencyBlock"}.items():
        if key in ref and ref[key] != want:
            raise ConfigError(f"UnAV {key} {ref[key]!r} is not supported (only {want!r})")
    if "regression_range" in ref:
        ranges = [tuple(float(x) for x in r) for r in ref["regression_range"]]
        ranges[-1] = (ranges[-1][0], math.inf) if ranges[-1][1] >= 10000 else ranges[-1]  # the reference's "inf"
        default = [tuple(r) for r in default_regression_ranges(num_levels)]
        if ranges != default:
            raise ConfigError(
                f"UnAV regression_range {ref['regression_range']} differs from the default: set loss.regression_ranges"
            )


def _check_ccnet(ref: Mapping[str, Any], num_levels: int) -> None:
    if ref.get("scale_factor", 2) != 2:
        raise CheckpointError(f"CCNet reference scale_factor {ref['scale_factor']} is not supported (only 2)")


# -- the references -------------------------------------------------------------------------------------------------
LAYOUTS: dict[str, ReferenceLayout] = {
    "unav": ReferenceLayout(  # ttgeng233/UnAV LocPointTransformer
        label="UnAV",
        internals=_BLOCK_INTERNALS,
        prefixes=(
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
            *_dependency(r"dependency_block", "dependency"),
            *_HEADS,
        ),
        fields={
            **_COMMON_FIELDS,
            "scale_factor": "scale_factor",
            "use_abs_pe": "use_abs_pe",
            "use_dependency": "use_dependency",
            "train_cfg.cls_prior_prob": "head_prior_prob",
            "train_cfg.dropout": "dropout",
            "train_cfg.droppath": "drop_path",
        },
        arch_default=(2, 3, 5),
        stem_field="self_attn_layers",
        stem_offset=1,  # the reference counts its full-rate cross-modal block in the stem
        check=_check_unav,
    ),
    "ccnet": ReferenceLayout(  # zzhhfut/CCNet-AAAI2025 CCNet_base_TCG_Transformer
        label="CCNet",
        internals=(
            *_BLOCK_INTERNALS,
            (r"(_TCG\.\d+)\.(query|key|value|proj)(_conv|_norm)?\.", r"\1.attn.\2\3."),  # gates hold their attention
            (r"\.gate_linear\.", ".gate."),
        ),
        prefixes=(
            (r"backbone\.CMI_(Visual|Audio)\.(\d+)\.", _strided_level),
            (r"backbone\.embd_V\.", "backbone.embed_visual."),
            (r"backbone\.embd_A\.", "backbone.embed_audio."),
            (r"backbone\.embd_norm_V\.", "backbone.embed_norm_visual."),
            (r"backbone\.embd_norm_A\.", "backbone.embed_norm_audio."),
            (r"backbone\.self_att_V\.", "backbone.encoder_visual."),
            (r"backbone\.self_att_A\.", "backbone.encoder_audio."),
            (r"backbone\.ori_CMI_Visual\.", "backbone.cross_visual.0."),
            (r"backbone\.ori_CMI_Audio\.", "backbone.cross_audio.0."),
            (r"backbone\.visual_TCG\.", "backbone.gate_visual."),
            (r"backbone\.audio_TCG\.", "backbone.gate_audio."),
            *_dependency(r"MTGC_block", "mtgc"),
            (r"MTGC_block\.C2F_attention\.", "mtgc.c2f_attn."),
            (r"MTGC_block\.F2C_attention_block\.", "mtgc.f2c_attn."),
            (r"MTGC_block\.C2F_linear\.", "mtgc.c2f_linear."),
            (r"MTGC_block\.feature_tem_press\.", "mtgc.channel_press."),
            (r"MTGC_block\.feature_tem_block\.", "mtgc.channel_expand."),
            (r"MTGC_block\.channel_att\.", "mtgc.channel_attn."),
            *_HEADS,
        ),
        fields=_COMMON_FIELDS,
        arch_default=(2, 2, 5),
        stem_field="encoder_layers",
        stem_offset=0,
        required=("input_dim_V", "input_dim_A", "num_classes", "max_seq_len"),
        check=_check_ccnet,
    ),
}


def _layout(model_name: str) -> ReferenceLayout:
    if model_name not in LAYOUTS:
        raise ConfigError(f"no reference converter for model {model_name!r} (known: {', '.join(sorted(LAYOUTS))})")
    return LAYOUTS[model_name]


def convert_state_dict(model_name: str, reference_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Reference parameter names and layouts -> avdet's (a `module.` prefix from DataParallel is dropped)."""
    layout = _layout(model_name)
    out: dict[str, Tensor] = {}
    for key, value in reference_state_dict.items():
        name = _rename(layout, key.removeprefix("module."))
        out[name] = _channel_last(name, value)
    return out


def reference_config(model_name: str, reference_model_config: Mapping[str, Any]) -> dict[str, Any]:
    """Reference constructor arguments -> the avdet model config dict (fields of the model's config class); what
    the reference does not give is left to the config's defaults."""
    layout, ref = _layout(model_name), reference_model_config
    missing = [key for key in layout.required if key not in ref]
    if missing:
        raise ConfigError(f"the {layout.label} reference config does not give {', '.join(missing)}")
    arch = list(ref.get("backbone_arch", layout.arch_default))
    if len(arch) != 3 or arch[1] < layout.stem_offset:
        raise ConfigError(
            f"{layout.label} backbone_arch must be (convs, stem, levels - 1) with stem >= {layout.stem_offset}, "
            f"got {arch}"
        )
    layout.check(ref, arch[2] + 1)
    out: dict[str, Any] = {}
    for path, field in layout.fields.items():
        found, value = _lookup(ref, path)
        if found:
            out[field] = value
    out["embed_convs"] = arch[0]
    out[layout.stem_field] = arch[1] - layout.stem_offset
    out["num_levels"] = arch[2] + 1
    return out
