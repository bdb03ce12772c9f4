"""Typed experiment configs: YAML files hold only differences from the code defaults.

Unknown keys and wrong types are one-sentence `ConfigError`s; `--set a.b=c` overrides any field (values parsed
as YAML); every run writes its resolved config next to its checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from avdet.errors import ConfigError
from avdet.models import registry as model_registry
from avdet.models.loss_config import LossConfig, SegmentLossConfig
from avdet.pipeline.postprocess import PostprocessConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DataConfig:
    annotations: str = ""  # UnAV-100-format JSON, or (segment task) an AVE folder / its Annotations.txt
    classes: str = ""  # optional TSV (label_id, label); default: names found in the annotations
    # store: avdet's feature store; released: released UnAV-100 .npy folders; ave_h5: the AVE release's HDF5
    # features read in place (segment task; annotations, classes and splits come from its files)
    source: Literal["store", "released", "ave_h5"] = "store"
    cache: str = ""  # feature store root (source=store); default $AVDET_CACHE or ~/.cache/avdet/features
    extractor: str = "lite"  # extractor set the store's features come from (source=store)
    released_root: str = ""  # folder of released .npy features (source=released)
    released_layout: Literal["i3d_vggish", "onepeace"] = "i3d_vggish"
    ave_root: str = ""  # folder of the AVE release's .h5 files (source=ave_h5)
    segment_s: float = 1.0  # segment task, store/released sources: feature rows are averaged per segment
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    crop_ratio: tuple[float, float] = (0.9, 1.0)  # random crop of 90-100 % of a long training sequence
    crop_keep_event: float = 0.5  # the crop keeps at least this share of one event
    num_workers: int = 0


@dataclass
class TrainConfig:
    epochs: int = 40
    warmup_epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    clip_grad: float = 1.0  # 0 = no clipping
    ema_decay: float = 0.999  # 0 = no EMA (checkpoints hold the trained weights)
    schedule: Literal["cosine", "constant"] = "cosine"  # after the linear warm-up
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    eval_every: int = 1  # epochs between validations
    eval_start: int = 0  # first epoch (0-based) to validate
    log_every: int = 10  # iterations between TensorBoard scalars


@dataclass
class ExperimentConfig:
    task: Literal["dense", "segment"] = "dense"
    model: dict = field(default_factory=lambda: {"name": "loco"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    segment_loss: SegmentLossConfig = field(default_factory=SegmentLossConfig)  # task: segment

    def __post_init__(self) -> None:
        check_task(self)  # built from YAML, `--set` or by hand: validated once, here

    def model_config(self) -> Any:
        """The model section as its model's typed config."""
        return build_model_config(self.model)


def build_model_config(section: dict) -> Any:
    section = dict(section)
    entry = model_registry.model_entry(section.pop("name", None))
    return from_dict(entry.config_cls, section, "model")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert: int -> float, list -> tuple) one value against a type annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, not {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {' or '.join(_type_name(a) for a in args)}, not {value!r}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where} must be null")
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, not {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, not {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, not {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be an integer, not {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where} must be {_type_name(tp)}, not {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping: unknown keys and wrong types are `ConfigError`s."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known keys: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain YAML/JSON-friendly primitives (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", parsed c); values are YAML (numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.001")
    try:
        return key.strip(), yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return key.strip(), raw


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or the name of a file shipped in configs/ (e.g. `tiny` or `tiny.yaml`)."""
    p = Path(path)
    if p.is_file():
        return p
    for candidate in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(c.stem for c in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"{path}: no such config file or shipped config name (shipped: {names})")


def _read_tree(cfg_path: Path) -> dict:
    try:
        tree = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{cfg_path}: invalid YAML ({str(err).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{cfg_path}: not a text file (cannot decode it as UTF-8)") from None
    except OSError as err:
        raise ConfigError(f"{cfg_path}: cannot read ({err.strerror or err})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping")
    return tree


def _validated(tree: dict) -> ExperimentConfig:
    return from_dict(ExperimentConfig, tree)  # ExperimentConfig checks itself (`check_task`)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (differences from the defaults), apply `--set` overrides, validate.

    An error is blamed on the file when the file alone is invalid, else on the first `--set` that makes it so."""
    tree: dict = {}
    where = "defaults"
    if path is not None:
        cfg_path = resolve_config_path(path)
        where = str(cfg_path)
        tree = _read_tree(cfg_path)
    parsed = [(text, *parse_override(text)) for text in overrides]
    full = copy.deepcopy(tree)
    for _, key, value in parsed:
        _set_path(full, key, value)
    try:
        return _validated(full)
    except ConfigError as err:
        first_error = err
    try:
        _validated(tree)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    for text, key, value in parsed:
        _set_path(tree, key, value)
        try:
            _validated(tree)
        except ConfigError as err:
            raise ConfigError(f"--set {text}: {err}") from None
    raise ConfigError(f"--set {' '.join(overrides)}: {first_error}")


def check_task(cfg: ExperimentConfig) -> None:
    """The model section is valid, supports the task, and agrees with the task's settings (now, not at the first
    forward)."""
    model_cfg = cfg.model_config()
    entry = model_registry.model_entry(cfg.model["name"])
    if cfg.task not in entry.tasks:
        raise ConfigError(
            f"model {entry.name!r} does not support task {cfg.task!r} (it supports {', '.join(entry.tasks)})"
        )
    if cfg.data.source == "ave_h5" and cfg.task != "segment":
        raise ConfigError("data.source 'ave_h5' holds AVE segment labels: use it with task: segment")
    if cfg.data.source == "ave_h5" and not cfg.data.ave_root:
        raise ConfigError("data.ave_root is required when data.source is 'ave_h5'")
    check_values(cfg)
    check_model_sizes(model_cfg)
    head = getattr(model_cfg, "head", None)
    if head is not None and (head == "segment") != (cfg.task == "segment"):
        raise ConfigError(f"task {cfg.task!r} needs model.head: {'segment' if cfg.task == 'segment' else 'detection'}")
    setting = getattr(model_cfg, "setting", None)
    if cfg.task == "segment" and setting is not None and setting != cfg.segment_loss.setting:
        raise ConfigError(f"model.setting {setting!r} and segment_loss.setting {cfg.segment_loss.setting!r} must agree")


# (section.field, lowest allowed value, whether the bound itself is allowed)
_BOUNDS = (
    ("train.lr", 0.0, False),
    ("train.batch_size", 1, True),
    ("train.epochs", 1, True),
    ("train.warmup_epochs", 0, True),
    ("train.weight_decay", 0.0, True),
    ("train.clip_grad", 0.0, True),
    ("train.ema_decay", 0.0, True),
    ("train.eval_every", 1, True),
    ("train.eval_start", 0, True),
    ("train.log_every", 1, True),
    ("data.segment_s", 0.0, False),
    ("data.num_workers", 0, True),
    ("data.crop_keep_event", 0.0, True),
)


# model config fields that count things: sizes, heads, kernels must be >= 1; layer and conv counts >= 0
_POSITIVE_SUFFIXES = ("dim", "heads", "kernel", "hidden", "_att")
_POSITIVE_NAMES = ("num_classes", "max_seq_len", "window_size", "d_model", "top_k", "num_levels")
_COUNT_SUFFIXES = ("layers", "convs")


def check_model_sizes(model_cfg: Any) -> None:
    """Sizes a network cannot have are a config error here, not a traceback from torch at the first layer."""
    for f in dataclasses.fields(model_cfg):
        value = getattr(model_cfg, f.name)
        if not isinstance(value, int) or isinstance(value, bool):
            continue  # floats, names, lists; `lcf_dim: null` means "derived"
        if f.name.endswith(_POSITIVE_SUFFIXES) or f.name in _POSITIVE_NAMES:
            if value < 1:
                raise ConfigError(f"model.{f.name} must be >= 1, not {value}")
        elif f.name.endswith(_COUNT_SUFFIXES) and value < 0:
            raise ConfigError(f"model.{f.name} must be >= 0, not {value}")


def check_values(cfg: ExperimentConfig) -> None:
    """Numbers a run cannot use are refused before it starts (not as a traceback, or a silent no-op, later)."""
    for dotted, low, inclusive in _BOUNDS:
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise ConfigError(f"{dotted} must be {'>=' if inclusive else '>'} {low}, not {value}")
    last_epoch = cfg.train.warmup_epochs + cfg.train.epochs - 1  # epochs count from 0, warm-up included
    if cfg.train.eval_start > last_epoch:
        raise ConfigError(
            f"train.eval_start {cfg.train.eval_start} is past the last epoch ({last_epoch}, counting from 0 with "
            "the warm-up): nothing would be validated and no best.ckpt written"
        )
    if cfg.train.ema_decay >= 1:
        raise ConfigError(f"train.ema_decay must be < 1, not {cfg.train.ema_decay}")
    low, high = cfg.data.crop_ratio
    if not 0 < low <= high <= 1:
        raise ConfigError(f"data.crop_ratio must be two numbers 0 < low <= high <= 1, not {list(cfg.data.crop_ratio)}")


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
