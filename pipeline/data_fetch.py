"""`avdet data fetch unav100`: the UnAV-100 annotations and released features from the Hugging Face dataset the
UnAV README names (`ttgeng233/UnAV-100`), through `huggingface_hub` (the optional extra `avdet[data]`), into a
layout `avdet train` reads in place:

    <dir>/hub/                        the dataset snapshot, as published (huggingface_hub `local_dir`: files that
                                      are complete are skipped on a second run, interrupted ones resumed)
    <dir>/extracted/<archive>/        archives in the snapshot (.zip, .tar, .tar.gz, .tgz), unpacked once
    <dir>/unav100_classes.tsv         label_id -> label, written from the annotations
    <dir>/avdet_data.json             what was found where (the mapping below), and the `train` overrides

<dir> is `--dir`, else $AVDET_HOME/data/unav100 (default ~/.cache/avdet/data/unav100).

The dataset's file layout could not be confirmed from here, so nothing assumes one: the mapping is explicit and
searched for, wherever the files are in the snapshot or its archives:
- annotations: the file named `unav100_annotations.json`;
- I3D-VGGish features: the folder holding `<id>_rgb.npy`, `<id>_flow.npy`, `<id>_vggish.npy` (the UnAV README's
  `av_features/`), read in place as `data.source: released`, `data.released_layout: i3d_vggish`;
- ONE-PEACE features, if present: the folder holding `<id>_one_peace_video_finetune.npy` + `_one_peace_audio.npy`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avdet.errors import DataError, DownloadError
from avdet.pipeline.io.atomic import write_text_atomic
from avdet.pipeline.io.released import LAYOUTS
from avdet.pipeline.models_zoo import avdet_home

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    revision: str  # a branch, tag or commit of the dataset repository
    annotations: str  # the annotation file's name, searched for in the snapshot
    config: dict[str, str]  # released layout -> the shipped config that trains on it


DATASETS: dict[str, HubDataset] = {
    "unav100": HubDataset(
        repo_id="ttgeng233/UnAV-100",
        revision="main",  # no release tag is published; `--revision COMMIT` pins one
        annotations="unav100_annotations.json",
        config={"i3d_vggish": "unav_i3d_vggish", "onepeace": "unav_onepeace"},
    )
}
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")
MANIFEST = "avdet_data.json"
INSTALL_HINT = "pip install 'avdet[data]' (or pip install huggingface_hub)"


@dataclass
class FetchedData:
    """Where a fetched dataset's parts are, and how `avdet train` reads them in place."""

    name: str
    folder: str
    repo_id: str
    revision: str
    annotations: str
    classes: str
    features: dict[str, str] = field(default_factory=dict)  # released layout -> folder
    videos: dict[str, int] = field(default_factory=dict)  # released layout -> videos with every file

    def train_command(self, layout: str | None = None) -> str:
        """The `avdet train` line that reads this data in place (the first layout found, by default)."""
        layout = layout or next(iter(self.features), "i3d_vggish")
        config = DATASETS[self.name].config.get(layout, "unav_i3d_vggish")
        sets = [
            f"data.annotations={self.annotations}",
            f"data.classes={self.classes}",
            "data.source=released",
            f"data.released_root={self.features.get(layout, '')}",
            f"data.released_layout={layout}",
        ]
        return f"avdet train --config {config} " + " ".join(f"--set {_quote(s)}" for s in sets)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def data_dir(name: str, explicit: str | Path | None = None) -> Path:
    return Path(explicit).expanduser() if explicit else avdet_home() / "data" / name


def dataset_entry(name: str) -> HubDataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; avdet can fetch: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _snapshot(entry: HubDataset, target: Path, revision: str, progress: bool) -> Path:
    """The dataset repository at `revision` in `target` (huggingface_hub skips complete files, resumes the rest)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise DataError(f"`avdet data fetch` needs huggingface_hub: {INSTALL_HINT}") from None
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if not progress:
        disable_progress_bars()
    try:
        path = snapshot_download(
            repo_id=entry.repo_id,
            repo_type="dataset",
            revision=revision,
            local_dir=target,
            endpoint=os.environ.get("HF_ENDPOINT") or None,  # read now: huggingface_hub reads it once, at import
        )
    except HfHubHTTPError as err:
        raise DownloadError(f"{entry.repo_id} (Hugging Face dataset): {str(err).splitlines()[0][:200]}") from None
    except Exception as err:  # connection errors come from httpx/requests, whose types depend on the version
        raise DownloadError(
            f"{entry.repo_id} (Hugging Face dataset) could not be fetched ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else ''}); run the command again to resume into {target}"
        ) from None
    finally:
        if not progress:
            enable_progress_bars()
    return Path(path)


def _is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVES)


def _archive_stem(path: Path) -> str:
    for suffix in sorted(ARCHIVES, key=len, reverse=True):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _extract(archive: Path, folder: Path) -> Path:
    """Unpack `archive` once into folder/<stem> (to a temp folder, then renamed: a cut unpack is redone)."""
    dest = folder / _archive_stem(archive)
    if dest.is_dir():
        return dest
    tmp = folder / f".{dest.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("unpacking %s", archive)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    target = (tmp / member).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise DataError(f"{archive}: member {member!r} would unpack outside its folder")
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")  # no links out, no absolute paths, no devices
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot unpack it ({err}); delete it and run the command again") from None
    os.replace(tmp, dest)
    return dest


def _feature_folders(roots: list[Path]) -> dict[str, tuple[Path, int]]:
    """Released layout -> (the folder with the most complete videos, their number), over every folder below
    `roots`."""
    best: dict[str, tuple[Path, int]] = {}
    for root in roots:
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir() and ".cache" not in p.parts)]:
            names = [p.name for p in folder.iterdir() if p.name.endswith(".npy")]
            if not names:
                continue
            for layout_name, layout in LAYOUTS.items():
                suffixes = (*layout.visual_suffixes, layout.audio_suffix)
                have: dict[str, set[str]] = {}
                for name in names:
                    for suffix in suffixes:
                        if name.endswith(suffix):
                            have.setdefault(name[: -len(suffix)], set()).add(suffix)
                complete = sum(1 for found in have.values() if len(found) == len(suffixes))
                if complete and complete > best.get(layout_name, (folder, 0))[1]:
                    best[layout_name] = (folder, complete)
    return best


def _annotations(roots: list[Path], name: str, snapshot: Path) -> Path:
    found = sorted(
        (p for root in roots for p in root.rglob(name) if ".cache" not in p.parts), key=lambda p: len(p.parts)
    )
    if not found:
        listing = ", ".join(sorted(p.name for p in snapshot.iterdir() if not p.name.startswith(".")))[:300]
        raise DataError(f"{snapshot}: no {name} in the dataset or its archives (top level: {listing or 'empty'})")
    return found[0]


def _write_classes(annotations: Path, dest: Path) -> Path:
    from avdet.pipeline.data.annotations import read_classes

    try:
        tree = json.loads(annotations.read_text(encoding="utf-8"))
        names = read_classes(tree)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise DataError(f"{annotations}: not UnAV-format annotations") from None
    write_text_atomic(dest, "".join(f"{i}\t{label}\n" for i, label in enumerate(names)))
    return dest


def fetch_dataset(
    name: str, folder: str | Path | None = None, *, revision: str | None = None, progress: bool = True
) -> FetchedData:
    """Fetch (or finish fetching) dataset `name` into `folder` and map its parts; see the module docstring."""
    entry = dataset_entry(name)
    root = data_dir(name, folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the data folder {root}: {err.strerror or err}") from None
    rev = revision or entry.revision
    snapshot = _snapshot(entry, root / "hub", rev, progress)
    unpacked = [
        _extract(a, root / "extracted")
        for a in sorted(p for p in snapshot.rglob("*") if p.is_file() and _is_archive(p) and ".cache" not in p.parts)
    ]
    roots = [snapshot, *unpacked]
    annotations = _annotations(roots, entry.annotations, snapshot)
    classes = _write_classes(annotations, root / f"{name}_classes.tsv")
    found = _feature_folders(roots)
    if not found:
        log.warning("%s: no released feature files (%s) found; annotations only", root, ", ".join(LAYOUTS))
    fetched = FetchedData(
        name=name,
        folder=str(root),
        repo_id=entry.repo_id,
        revision=rev,
        annotations=str(annotations),
        classes=str(classes),
        features={k: str(v[0]) for k, v in found.items()},
        videos={k: v[1] for k, v in found.items()},
    )
    write_text_atomic(root / MANIFEST, json.dumps({**asdict(fetched), "train": fetched.train_command()}, indent=2))
    return fetched
