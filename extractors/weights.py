"""Pretrained weights: canonical files in a weights directory, checked before use, downloaded on request only.

Directory: the explicit argument (`--weights-dir`), else `$AVDET_WEIGHTS`, else `~/.cache/avdet/weights`. Nothing
here touches the network; a missing file is a one-line `WeightsError` naming the file, the directory searched and
where to get it.

Checksums, strongest first: a full SHA-256 in the catalog; a line for the file in `SHA256SUMS` inside the weights
directory (written by `download`, or by a user pinning their own copies, `sha256sum` format); the digest prefix
torchvggish publishes in its file names (torch.hub convention). Upstream publishes no digest for the I3D and RAFT
files ("unpinned": their first download says so in one line and records the computed digest, which later loads
check); until then the loaders check their structure instead (every expected parameter name present with the
expected shape), which catches truncated or foreign checkpoints.

URLs are pinned: GitHub files to a commit, torchvggish to its v0.1 release, torchvision to its content-addressed
file name; never a moving branch. Downloading is `avdet.pipeline.weights` (through the one downloader,
`pipeline.io.download`: progress, resume, atomic rename); this module only reads what is on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from avdet.errors import WeightsError

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=torch.nn.Module)

WEIGHTS_ENV = "AVDET_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/avdet/weights")
SUMS_FILE = "SHA256SUMS"
RANDOM_SEED = 0  # seed of `random_weights=True`: the golden recipe's seed


@dataclass(frozen=True)
class WeightsFile:
    """A canonical weights file: its name in the weights directory and where it is published."""

    name: str
    url: str
    source: str  # who publishes it, for error messages
    used_by: str = "an avdet extractor"  # which extractor needs it, for error messages
    sha256: str | None = None  # full digest, where one is published
    sha256_prefix: str | None = None  # leading hex digits published in the file name (torch.hub convention)


# v-iashin/video_features at a fixed commit (its extract_i3d.py there loads these very paths), not `master`.
VIDEO_FEATURES_COMMIT = "d906a9ce50cb5a127f0092af35bc3c2fa5f03868"
_VF = f"https://github.com/v-iashin/video_features/raw/{VIDEO_FEATURES_COMMIT}/models"
_TV = "https://github.com/harritaylor/torchvggish/releases/download/v0.1"
CATALOG: dict[str, WeightsFile] = {
    f.name: f
    for f in (
        WeightsFile(
            "vggish-10086976.pth",
            f"{_TV}/vggish-10086976.pth",
            "the torchvggish v0.1 release (VGGish weights ported from TensorFlow AudioSet)",
            "i3d_vggish, vgg19_vggish (audio)",
            sha256_prefix="10086976",
        ),
        WeightsFile(
            "vggish_pca_params-970ea276.pth",
            f"{_TV}/vggish_pca_params-970ea276.pth",
            "the torchvggish v0.1 release (AudioSet PCA parameters)",
            "i3d_vggish, vgg19_vggish (audio)",
            sha256_prefix="970ea276",
        ),
        WeightsFile(
            "i3d_rgb.pt",
            f"{_VF}/i3d/checkpoints/i3d_rgb.pt",
            "v-iashin/video_features (kinetics_i3d_pytorch 'model_rgb.pth', renamed)",
            "i3d_vggish (visual, RGB stream)",
        ),
        WeightsFile(
            "i3d_flow.pt",
            f"{_VF}/i3d/checkpoints/i3d_flow.pt",
            "v-iashin/video_features (kinetics_i3d_pytorch 'model_flow.pth', renamed)",
            "i3d_vggish (visual, flow stream)",
        ),
        WeightsFile(
            "raft-sintel.pth",
            f"{_VF}/raft/checkpoints/raft-sintel.pth",
            "v-iashin/video_features (princeton-vl/RAFT models.zip, Sintel fine-tuned)",
            "i3d_vggish (optical flow for the flow stream)",
        ),
        WeightsFile(
            "vgg19-dcbb9e9d.pth",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "torchvision (VGG-19 ImageNet, IMAGENET1K_V1)",
            "vgg19_vggish (visual)",
            sha256_prefix="dcbb9e9d",
        ),
    )
}


def weights_dir(explicit: str | Path | None = None) -> Path:
    """The weights directory: `explicit` > `$AVDET_WEIGHTS` > default (not created)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS_DIR.expanduser()


def _entry(name: str) -> WeightsFile:
    if name not in CATALOG:
        raise WeightsError(f"unknown weights file {name!r}; known: {', '.join(sorted(CATALOG))}")
    return CATALOG[name]


def missing_message(name: str, directory: Path) -> str:
    entry = _entry(name)
    return (
        f"weights file {name} not found in {directory} (needed by {entry.used_by}; set --weights-dir or "
        f"${WEIGHTS_ENV}): download it from {entry.url} ({entry.source}) into that folder, or run "
        f"`avdet weights --download`"
    )


def locate(name: str, directory: str | Path | None = None) -> Path:
    """Path of a canonical weights file; a one-line `WeightsError` when it is not there."""
    folder = weights_dir(directory)
    path = folder / name
    if not path.is_file():
        raise WeightsError(missing_message(name, folder))
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    """`SHA256SUMS` of a weights directory (`<hex digest>  <file name>` lines; `*` binary marks allowed)."""
    path = folder / SUMS_FILE
    if not path.is_file():
        return {}
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise WeightsError(f"{path}:{number}: expected '<64 hex digits>  <file name>', found {line.strip()!r}")
        sums[parts[1].strip().lstrip("*")] = digest
    return sums


def record_sum(folder: Path, name: str, digest: str) -> None:
    """Add or replace `name`'s line in the directory's `SHA256SUMS` (atomically)."""
    sums = read_sums(folder)
    sums[name] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    fd, tmp = tempfile.mkstemp(prefix=f".{SUMS_FILE}.", dir=folder)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, folder / SUMS_FILE)


def expected_digest(name: str, folder: Path, override: str | None = None) -> str | None:
    """The digest (or published prefix) `name` must match: override > catalog > SHA256SUMS > name prefix."""
    entry = _entry(name)
    found = override or entry.sha256 or read_sums(folder).get(name) or entry.sha256_prefix
    return found.lower() if found else None


def verify_checksum(path: Path, name: str, expected_sha256: str | None = None) -> bool | None:
    """Check `path` against its expected digest; None when there is nothing to check against."""
    expected = expected_digest(name, path.parent, expected_sha256)
    if not expected:
        return None
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise WeightsError(
            f"{path}: SHA-256 {actual[:16]}... does not match the expected {expected[:16]}...; the file is "
            f"corrupted or not the canonical {name}: delete it and download it again from {_entry(name).url}"
        )
    return True


def _read_checkpoint(path: Path, name: str) -> object:
    """torch.load with weights_only (no code execution); numpy arrays (older .pth files hold them) allowed."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # whatever the unpickler raises, the user needs the same one line
        raise WeightsError(
            f"{path}: cannot read it as a torch checkpoint ({type(err).__name__}); the file is corrupted or "
            f"incomplete: delete it and download it again from {_entry(name).url}"
        ) from None


def _numpy_globals() -> list:
    """What unpickling plain numpy arrays needs (no arbitrary code)."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    # Files written under numpy 1 name it `numpy.core...`, numpy 2 `numpy._core...`: allow both spellings.
    items: list = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype]
    items += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8")]
    return items


def _as_tensor_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[str(key)] = value
    return out


def load_file(name: str, directory: str | Path | None = None, *, expected_sha256: str | None = None) -> dict:
    """Locate, checksum and read one canonical file as a dict of tensors (structure checked by the caller)."""
    path = locate(name, directory)
    verify_checksum(path, name, expected_sha256)
    return _as_tensor_dict(_read_checkpoint(path, name), path)


def check_structure(state: Mapping[str, Tensor], expected: Mapping[str, Tensor | torch.Size], what: str) -> None:
    """Every expected key there with the expected shape, nothing unexpected; else a one-line WeightsError."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(_shape(v))}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(_shape(v))
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[0]})")
    if problems:
        raise WeightsError(f"{what}: not the expected checkpoint: " + "; ".join(problems))


def _shape(value: Tensor | torch.Size | tuple) -> tuple:
    return tuple(value.shape) if isinstance(value, Tensor) else tuple(value)


def pinning(name: str) -> str:
    """How a catalog file is pinned: "sha256" (full digest), "prefix" (published digest prefix) or "unpinned"."""
    entry = _entry(name)
    return "sha256" if entry.sha256 else "prefix" if entry.sha256_prefix else "unpinned"


def files_for(extractor: str) -> list[str]:
    """Canonical files an extractor set needs (by the catalog's `used_by`), e.g. "i3d_vggish" -> 5 names."""
    names = [n for n, e in CATALOG.items() if extractor in e.used_by.split(" (")[0].split(", ")]
    if not names:
        raise WeightsError(f"no weights files are listed for extractor {extractor!r}")
    return names


def weights_report(directory: str | Path | None = None) -> list[dict]:
    """One row per canonical file: name, file, present, sha_ok (True / False / None: no digest known), url.

    Reads (and hashes) only what is on disk; never downloads.
    """
    folder = weights_dir(directory)
    rows = []
    for name, entry in CATALOG.items():
        path = folder / name
        present = path.is_file()
        sha_ok: bool | None = None
        problem = ""
        if present:
            try:
                sha_ok = verify_checksum(path, name)
            except WeightsError as err:
                sha_ok, problem = False, str(err)
        rows.append(
            {
                "name": name,
                "file": str(path),
                "present": present,
                "sha_ok": sha_ok,
                "used_by": entry.used_by,
                "url": entry.url,
                "source": entry.source,
                "pinned": pinning(name),
                "problem": problem,
            }
        )
    return rows


def seeded_tensor(key: str, shape: tuple[int, ...], seed: int) -> Tensor:
    """One parameter of the seeded recipe (the golden fixtures' recipe, see shared/golden/README.md).

    Normal noise with a He-like scale (sqrt(2 / fan_in)) so activations stay in range, 1 + noise for norm
    scales, 0.5 + |noise| for running variances; one RandomState per key, so names, not order, decide values.
    """
    rs = np.random.RandomState(zlib.crc32(key.encode()) ^ seed)
    scale = float(np.sqrt(2.0 / np.prod(shape[1:]))) if len(shape) >= 2 else 0.1
    w = rs.standard_normal(shape) * scale
    if len(shape) == 1 and key.endswith("weight"):
        w = 1.0 + w
    if key.endswith("running_var"):
        w = 0.5 + np.abs(w)
    return torch.from_numpy(np.asarray(w, dtype=np.float32))


def seeded_model(model: ModelT) -> ModelT:
    """`model` in eval mode with seeded weights (`random_weights=True`); no file is read."""
    model.load_state_dict(seeded_state_dict(model.state_dict()))
    return model.eval()


def load_checked(model: ModelT, state: Mapping[str, Tensor], what: str) -> ModelT:
    """`model` in eval mode with `state`, once `check_structure` has passed against the model's own parameters.
    BatchNorm's `num_batches_tracked` counters, which some exports lack and inference never reads, are kept."""
    reference = model.state_dict()
    counters = {k: v.clone() for k, v in reference.items() if k.endswith("num_batches_tracked")}
    state = {**counters, **state}
    check_structure(state, reference, what)
    model.load_state_dict(state)
    return model.eval()


def seeded_state_dict(reference: Mapping[str, Tensor], seed: int = RANDOM_SEED) -> dict[str, Tensor]:
    """A state dict shaped like `reference` with seeded values (`random_weights=True`, tests, benchmarks)."""
    out: dict[str, Tensor] = {}
    for key, value in reference.items():
        if key.endswith("num_batches_tracked"):
            out[key] = value.clone()
        else:
            out[key] = seeded_tensor(key, tuple(value.shape), seed).to(value.dtype)
    return out
