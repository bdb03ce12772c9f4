"""Read the released UnAV-100 feature folders in place (no copy): I3D-VGGish and ONE-PEACE.

I3D-VGGish (UnAV): `<id>_rgb.npy` (T, 1024) + `<id>_flow.npy` (T, 1024) -> visual (T, 2048), `<id>_vggish.npy`
(T, 128); row i covers [0.32 i, 0.32 i + 0.96] s. ONE-PEACE (UniAV): `<id>_one_peace_video_finetune.npy` and
`<id>_one_peace_audio.npy`, (T, 1536) each; row i covers [0.25 i, 0.25 i + 1.0] s.

Like the reference loaders, modalities of one video are cropped to the shorter length; a difference of one
row is normal (the two extractors window differently) and logged, more than `max_mismatch` rows is a
`DataError` (features of different videos or a truncated file). Ids are whatever precedes the suffix, so ids
starting with `-` or `_` are fine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from avdet.errors import ConfigError, DataError
from avdet.extractors.base import Features, grid_times
from avdet.extractors.recipes import I3D_VGGISH, ONEPEACE, ONEPEACE_AUDIO_SUFFIX, ONEPEACE_DIM, ONEPEACE_VISUAL_SUFFIX

log = logging.getLogger(__name__)

LayoutName = Literal["i3d_vggish", "onepeace"]


@dataclass(frozen=True)
class Layout:
    """File naming, dimensions and time grid of one released feature set."""

    visual_suffixes: tuple[str, ...]  # concatenated in this order
    visual_dims: tuple[int, ...]
    audio_suffix: str
    audio_dim: int
    window_s: float
    step_s: float


LAYOUTS: dict[str, Layout] = {
    "i3d_vggish": Layout(
        ("_rgb.npy", "_flow.npy"), (1024, 1024), "_vggish.npy", 128, I3D_VGGISH.window_s, I3D_VGGISH.step_s
    ),
    "onepeace": Layout(
        (ONEPEACE_VISUAL_SUFFIX,),
        (ONEPEACE_DIM,),
        ONEPEACE_AUDIO_SUFFIX,
        ONEPEACE_DIM,
        ONEPEACE.window_s,
        ONEPEACE.step_s,
    ),
}


def _crop_pair(a: np.ndarray, b: np.ndarray, what: str, max_mismatch: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop two (T, C) arrays to the shorter length; log a small difference, refuse a large one."""
    if len(a) == len(b):
        return a, b
    gap = abs(len(a) - len(b))
    if gap > max_mismatch:
        raise DataError(f"{what}: lengths {len(a)} and {len(b)} differ by {gap} rows (more than {max_mismatch})")
    log.warning(
        "%s: lengths %d and %d differ by %d row(s); cropping to %d",
        what,
        len(a),
        len(b),
        gap,
        min(len(a), len(b)),
    )
    n = min(len(a), len(b))
    return a[:n], b[:n]


class ReleasedFeatures:
    """A folder of released per-video `.npy` features in one of `LAYOUTS`."""

    def __init__(self, root: str | Path, layout: LayoutName, *, max_mismatch: int = 1) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown released-feature layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"released feature folder {self.root} does not exist")
        self.layout_name = layout
        self.layout = LAYOUTS[layout]
        self.max_mismatch = max_mismatch

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (*self.layout.visual_suffixes, self.layout.audio_suffix)

    def _path(self, video_id: str, suffix: str) -> Path:
        return self.root / f"{video_id}{suffix}"

    def video_ids(self) -> list[str]:
        """Sorted ids with every file of the layout present (incomplete ones are logged and left out)."""
        found: dict[str, set[str]] = {}
        for entry in self.root.iterdir():
            name = entry.name
            for suffix in self.suffixes:
                if name.endswith(suffix) and len(name) > len(suffix):
                    found.setdefault(name[: -len(suffix)], set()).add(suffix)
        wanted = set(self.suffixes)
        complete = sorted(vid for vid, have in found.items() if have == wanted)
        partial = len(found) - len(complete)
        if partial:
            log.warning(
                "%s: %d video(s) lack some of %s and are skipped",
                self.root,
                partial,
                ", ".join(self.suffixes),
            )
        return complete

    def _load_array(self, video_id: str, suffix: str, dim: int) -> np.ndarray:
        path = self._path(video_id, suffix)
        if not path.is_file():
            raise DataError(f"{video_id}: missing {path.name} in {self.root}")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from None
        if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0:
            raise DataError(f"{path}: expected shape (T, {dim}) with T > 0, found {arr.shape}")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: contains NaN or infinite values")
        return arr

    def load(self, video_id: str) -> tuple[Features, Features]:
        """(visual, audio) features of one video on the layout's grid, cropped to the same length."""
        lay = self.layout
        parts = [self._load_array(video_id, s, d) for s, d in zip(lay.visual_suffixes, lay.visual_dims, strict=True)]
        visual = parts[0]
        for suffix, part in zip(lay.visual_suffixes[1:], parts[1:], strict=True):
            visual, part = _crop_pair(
                visual, part, f"{video_id} ({lay.visual_suffixes[0]} vs {suffix})", self.max_mismatch
            )
            visual = np.concatenate([visual, part], axis=1)  # (T, C1 + C2)
        audio = self._load_array(video_id, lay.audio_suffix, lay.audio_dim)
        visual, audio = _crop_pair(visual, audio, f"{video_id} (visual vs audio)", self.max_mismatch)
        times = grid_times(len(visual), lay.window_s, lay.step_s)
        return Features(np.ascontiguousarray(visual), times), Features(np.ascontiguousarray(audio), times.copy())
