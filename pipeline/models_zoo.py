"""Named pretrained detectors: `avdet models`, `avdet detect --model NAME`, `avdet.load(NAME)`.

A name resolves to a checkpoint the way whisper's do: the published reference checkpoint is downloaded once
(`pipeline.io.download.fetch`: progress, resume, SHA-256, atomic), converted with the strict reference conversion
(`pipeline.convert`, key maps in `models.keymaps`), and kept as safetensors:

    $AVDET_HOME/models/<name>/<published file>        the download, as published
    $AVDET_HOME/models/<name>/<name>.safetensors      the converted model `detect` loads
    $AVDET_HOME/models/<name>/SHA256SUMS              digests of both, checked on every later load
    $AVDET_HOME/models/<name>/source.json             the URL and digest the conversion came from

`$AVDET_HOME` defaults to ~/.cache/avdet. The index (what names exist, where their files are) is `BUILTIN_INDEX`
below, or the JSON file or http(s) URL in `$AVDET_MODEL_INDEX` (a mirror, an air-gapped copy, tests): the same
entries under "models", relative "url"s resolved against "base_url" (default: the index's own URL).

Importing this module does not import torch; resolving a name that still needs converting does.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avdet.errors import ConfigError, DownloadError
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.io.download import fetch, read_sums, record_sum, sha256_of, verify_recorded

log = logging.getLogger(__name__)

HOME_ENV = "AVDET_HOME"
INDEX_ENV = "AVDET_MODEL_INDEX"
DEFAULT_HOME = Path("~/.cache/avdet")
CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".tar")

# The UnAV repository's annotations at a fixed commit: the class names (label_id -> label) of UnAV-100, which the
# released checkpoints do not store.
UNAV100_CLASSES_URL = (
    "https://github.com/ttgeng233/UnAV/raw/60144ed39473b2b54dc38d7412bc073280a7cd00/data/unav100_annotations.json"
)


@dataclass(frozen=True)
class ZooModel:
    """One named pretrained detector: where its reference checkpoint is published and how to convert it."""

    name: str
    detector: str  # avdet model registry name: unav | ccnet
    features: str  # the extractor set whose features it reads (extractors.registry)
    released_features: bool  # trained on the released feature files (its spec then names the set only)
    num_classes: int
    url: str  # the published reference checkpoint
    file: str  # its file name in the model folder
    reference_config: dict[str, Any]  # the reference constructor arguments (the files do not store them)
    license: str
    page: str  # where the model is published (README / repository)
    sha256: str | None = None  # None: unpinned (no published digest); the first download records one
    size: int | None = None  # bytes, where known
    published_map: float | None = None  # test Avg. mAP (%) published for this model on UnAV-100
    map_source: str = ""
    class_names: tuple[str, ...] | None = None  # the classes, inline ...
    classes_url: str | None = None  # ... or a UnAV-format annotations JSON / class TSV to read them from
    classes_sha256: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # anything else an index carries, kept for --json

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None


BUILTIN_INDEX: list[dict[str, Any]] = [
    {
        "name": "unav-unav100",
        "detector": "unav",
        "features": "i3d_vggish",
        "released_features": True,
        "num_classes": 100,
        "url": "https://drive.google.com/file/d/1qiC2osEaBSH8HFvF0WY_535F21CM3JXj/view?usp=share_link",
        "file": "unav_unav100.pth.tar",
        # configs/avel_unav100.yaml of ttgeng233/UnAV (max_seq_len is its dataset section's)
        "reference_config": {
            "input_dim_V": 2048,
            "input_dim_A": 128,
            "use_abs_pe": True,
            "class_aware": True,
            "use_dependency": True,
            "num_classes": 100,
            "max_seq_len": 224,
        },
        "license": "MIT (ttgeng233/UnAV)",
        "page": "https://github.com/ttgeng233/UnAV#evaluation",
        "published_map": 47.8,
        "map_source": "UnAV (DAVEL), I3D-VGGish, UnAV-100 test Avg. mAP (CVPR 2023; CCNet paper Table 1)",
        "classes_url": UNAV100_CLASSES_URL,
        "note": "the pretrained UnAV-100 model the UnAV README links (Google Drive)",
    },
    {
        "name": "ccnet-unav100",
        "detector": "ccnet",
        "features": "i3d_vggish",
        "released_features": True,
        "num_classes": 100,
        "url": "https://drive.google.com/file/d/11_kmeXwmMMZixh8TAJ2n1TRfRmZLm0UY/view?usp=sharing",
        "file": "ccnet_unav100.pth.tar",
        # configs/CCNet_unav100.yaml of zzhhfut/CCNet-AAAI2025 (max_seq_len is its dataset section's)
        "reference_config": {
            "input_dim_V": 2048,
            "input_dim_A": 128,
            "class_aware": True,
            "num_classes": 100,
            "max_seq_len": 256,
        },
        "license": "none stated (zzhhfut/CCNet-AAAI2025 has no LICENSE file)",
        "page": "https://github.com/zzhhfut/CCNet-AAAI2025#evaluation",
        "published_map": 49.2,
        "map_source": "CCNet, I3D-VGGish, UnAV-100 test Avg. mAP (AAAI 2025, Table 1)",
        "classes_url": UNAV100_CLASSES_URL,
        "note": "the pretrained model the CCNet README links (Google Drive); features as its "
        "configs/CCNet_unav100.yaml (2048 + 128: I3D-VGGish); a ONE-PEACE model would be refused by the strict "
        "conversion (size mismatch)",
    },
]
_FIELDS = {f for f in ZooModel.__dataclass_fields__ if f != "extra"}


def avdet_home() -> Path:
    """`$AVDET_HOME`, else ~/.cache/avdet (not created)."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else DEFAULT_HOME.expanduser()


def models_dir() -> Path:
    return avdet_home() / "models"


def _entry(raw: dict[str, Any], base_url: str | None, where: str) -> ZooModel:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: every model entry must be a mapping, found {type(raw).__name__}")
    missing = [
        k for k in ("name", "detector", "features", "num_classes", "url", "file", "reference_config") if k not in raw
    ]
    if missing:
        raise ConfigError(f"{where}: model {raw.get('name', '?')!r} lacks {', '.join(missing)}")
    values = {k: v for k, v in raw.items() if k in _FIELDS}
    values.setdefault("released_features", False)
    values.setdefault("license", "unknown")
    values.setdefault("page", "")
    for key in ("url", "classes_url"):
        url = values.get(key)
        if url and not urllib.parse.urlsplit(url).scheme:
            if not base_url:
                raise ConfigError(
                    f"{where}: {key} {url!r} of {raw['name']!r} is relative but the index has no base_url"
                )
            values[key] = urllib.parse.urljoin(base_url, url)
    if values.get("class_names") is not None:
        values["class_names"] = tuple(values["class_names"])
    if "/" in values["name"] or values["name"].startswith("."):
        raise ConfigError(f"{where}: model name {values['name']!r} must not contain '/' or start with '.'")
    return ZooModel(**values, extra={k: v for k, v in raw.items() if k not in _FIELDS})


def _read_index_source(source: str) -> tuple[dict[str, Any], str | None]:
    """The index JSON from a path or an http(s) URL, and the base for its relative URLs."""
    if urllib.parse.urlsplit(source).scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:  # noqa: S310 (http/https only)
                text = response.read().decode("utf-8")
        except (OSError, ValueError) as err:
            raise DownloadError(f"cannot read the model index {source} (${INDEX_ENV}): {err}") from None
        base = source
    else:
        path = Path(source).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the model index (${INDEX_ENV}): {err.strerror or err}") from None
        base = None
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: the model index is not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("models"), list):
        raise ConfigError(f'{source}: the model index must be {{"models": [...]}}')
    return tree, tree.get("base_url") or base


def load_index(source: str | None = None) -> dict[str, ZooModel]:
    """name -> entry: from `source` (a JSON path or URL), else `$AVDET_MODEL_INDEX`, else the built-in index."""
    source = source or os.environ.get(INDEX_ENV)
    if not source:
        entries, base, where = BUILTIN_INDEX, None, "the built-in model index"
    else:
        tree, base = _read_index_source(source)
        entries, where = tree["models"], source
    index: dict[str, ZooModel] = {}
    for raw in entries:
        model = _entry(raw, base, where)
        if model.name in index:
            raise ConfigError(f"{where}: model {model.name!r} is listed twice")
        index[model.name] = model
    return index


def model_entry(name: str, index: dict[str, ZooModel] | None = None) -> ZooModel:
    """The entry of `name`; an unknown name is a one-line error with the closest names and the full list."""
    index = load_index() if index is None else index
    if name in index:
        return index[name]
    close = difflib.get_close_matches(name, list(index), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint}; known: {', '.join(sorted(index))} (see `avdet models`)")


def model_folder(name: str) -> Path:
    return models_dir() / name


def converted_path(name: str) -> Path:
    return model_folder(name) / f"{name}.safetensors"


def model_rows(index: dict[str, ZooModel] | None = None) -> list[dict[str, Any]]:
    """One row per model for `avdet models` (table or JSON): its entry plus whether it is converted locally."""
    index = load_index() if index is None else index
    rows = []
    for model in index.values():
        row = {k: v for k, v in asdict(model).items() if k not in ("extra", "class_names")}
        row.update(model.extra)
        row["classes"] = model.num_classes
        row["pinned"] = model.pinned
        row["downloaded"] = converted_path(model.name).is_file()
        row["path"] = str(converted_path(model.name))
        rows.append(row)
    return rows


def looks_like_name(text: str | Path) -> bool:
    """A model name rather than a checkpoint path: no folder part, no checkpoint suffix, not an existing file."""
    text = str(text)
    return bool(text) and not Path(text).exists() and "/" not in text and not text.endswith(CHECKPOINT_SUFFIXES)


def resolve_checkpoint(checkpoint: str | Path, *, progress: bool = True) -> Path:
    """A checkpoint path as given, or the converted file of a model name (downloaded and converted once)."""
    if looks_like_name(checkpoint):
        return model_checkpoint(str(checkpoint), progress=progress)
    return Path(checkpoint)


def model_checkpoint(name: str, *, progress: bool = True, index: dict[str, ZooModel] | None = None) -> Path:
    """The converted safetensors file of model `name`, downloading and converting it first when needed.

    An index that cannot be read (a URL while offline) still resolves a name converted before."""
    cached = converted_path(name)
    if index is None:
        try:
            index = load_index()
        except DownloadError:
            if not cached.is_file():
                raise
            log.info("model index unreachable; using %s as converted before", cached)
            verify_recorded(cached)
            return cached
    model = model_entry(name, index)
    if cached.is_file() and _source_record(model.name) == _source_of(model):
        verify_recorded(cached)
        return cached
    return _download_and_convert(model, progress)


def _source_of(model: ZooModel) -> dict[str, Any]:
    """What a converted file depends on: when the index changes any of it, the model is fetched again."""
    return {
        "url": model.url,
        "sha256": model.sha256,
        "detector": model.detector,
        "features": model.features,
        "reference_config": model.reference_config,
        "classes": list(model.class_names) if model.class_names else model.classes_url,
    }


def _source_record(name: str) -> dict[str, Any] | None:
    path = model_folder(name) / "source.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _fetch_checked(url: str, dest: Path, sha256: str | None, progress: bool, what: str) -> Path:
    """`dest` from `url` unless already there and intact; its digest recorded in the folder's SHA256SUMS."""
    if dest.is_file():
        recorded = read_sums(dest.parent).get(dest.name)
        digest = sha256_of(dest)
        if (sha256 or recorded) in (None, digest):
            if recorded is None:
                record_sum(dest.parent, dest.name, digest)
            return dest
        log.warning("%s does not match its %s digest; downloading it again", dest, "pinned" if sha256 else "recorded")
        dest.unlink()
    if sha256 is None:
        log.warning(
            "%s: no published SHA-256 (unpinned); the digest of this download is recorded in %s",
            what,
            dest.parent / "SHA256SUMS",
        )
    fetch(url, dest, sha256=sha256, progress=progress, label=what)
    record_sum(dest.parent, dest.name, sha256_of(dest))
    return dest


def _classes(model: ZooModel, folder: Path, progress: bool) -> list[str]:
    from avdet.pipeline.data.annotations import read_classes

    if model.class_names is not None:
        names = list(model.class_names)
    elif model.classes_url:
        suffix = ".tsv" if model.classes_url.split("?", 1)[0].endswith(".tsv") else ".json"
        path = _fetch_checked(
            model.classes_url, folder / f"classes{suffix}", model.classes_sha256, progress, f"{model.name} classes"
        )
        if suffix == ".tsv":
            names = read_classes({"database": {}}, path)
        else:
            try:
                names = read_classes(json.loads(path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise ConfigError(f"{path}: not UnAV-format annotations (from {model.classes_url})") from None
    else:
        raise ConfigError(f"model {model.name!r}: the index gives neither class_names nor classes_url")
    if len(names) != model.num_classes:
        raise ConfigError(
            f"model {model.name!r}: the index says {model.num_classes} classes, its class list has {len(names)}"
        )
    return names


def _extractor_spec(model: ZooModel) -> dict[str, Any]:
    """The spec stored in the converted checkpoint: the set's name for released features (the spec those files were
    made with is not recorded), else the spec this avdet computes, which `detect` then checks."""
    if model.released_features:
        return {"name": model.features, "released": True}
    from avdet.extractors.registry import build_extractor_set

    return dict(build_extractor_set(model.features).spec)


def _download_and_convert(model: ZooModel, progress: bool) -> Path:
    from avdet.pipeline.checkpoint import export_safetensors
    from avdet.pipeline.convert import convert_checkpoint

    folder = model_folder(model.name)
    src = _fetch_checked(model.url, folder / model.file, model.sha256, progress, model.name)
    classes = _classes(model, folder, progress)
    log.info("converting %s (%s reference checkpoint)", src, model.detector)
    staging = folder / f".{model.name}.convert.ckpt"
    try:
        convert_checkpoint(src, staging, model.detector, classes, _extractor_spec(model), model.reference_config)
        dst = export_safetensors(staging, converted_path(model.name))
    finally:
        staging.unlink(missing_ok=True)
    record_sum(folder, dst.name, sha256_of(dst))
    write_text_atomic(folder / "source.json", json.dumps(_source_of(model), indent=2, sort_keys=True) + "\n")
    return dst
