"""`lite` visual features: layout, versioning, chunking invariance, and that a small object registers."""

from __future__ import annotations

import numpy as np
import pytest

from avdet.extractors import lite
from avdet.extractors.base import VisualInput


def textured_clip(frames: int = 50, size: int = 64, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 frames of a busy, noisy colour texture (the same picture with per-frame noise)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, size=(size // 8, size // 8, 3))
    picture = np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 20, size=(size, size, 3))
    noise = rng.normal(0, 4, size=(frames, size, size, 3))
    return np.clip(picture[None] + noise, 0, 255).astype(np.uint8)


def with_object(clip: np.ndarray, first: int, last: int, rgb: tuple[int, int, int], side: int = 6) -> np.ndarray:
    """A small square (side x side pixels, <1 % of a 64 x 64 frame) moving right over frames [first, last)."""
    out = clip.copy()
    for f in range(first, last):
        x = 8 + (f - first)
        out[f, 30 : 30 + side, x : x + side] = rgb
    return out


def features(clip: np.ndarray, chunk: int = 25) -> np.ndarray:
    chunks = [clip[i : i + chunk] for i in range(0, len(clip), chunk)]
    return lite.LiteVisual()(VisualInput(chunks, fps=12.5, duration=len(clip) / 12.5)).values


def test_dims_and_version() -> None:
    ext = lite.build()
    assert ext.visual.dim == 2 * lite.VISUAL_FRAME_DIM == ext.spec["visual_dim"] == 304
    assert ext.spec["version"] == 2  # a new recipe: features of version 1 live under another store key
    assert features(textured_clip(20)).shape == (num_rows(20), 304)


def num_rows(frames: int) -> int:
    from avdet.extractors.base import num_grid_rows

    return num_grid_rows(frames / 12.5, 0.96, 0.32)


def test_pool_hand_example() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert lite.pool(x, 2).tolist() == [[[2.5, 4.5], [10.5, 12.5]]]
    assert lite.pool(x, 2, "max").tolist() == [[[5.0, 7.0], [13.0, 15.0]]]


def test_chunking_does_not_change_the_features() -> None:
    clip = with_object(textured_clip(40), 10, 30, (230, 40, 40))
    assert np.allclose(features(clip, chunk=7), features(clip, chunk=40), atol=1e-5)


def test_a_small_object_registers() -> None:
    clip = textured_clip(50)
    red = features(with_object(clip, 15, 35, (230, 40, 40)))
    blue = features(with_object(clip, 15, 35, (40, 60, 230)))
    empty = features(clip)
    change = slice(lite.FRAME_DIM, lite.VISUAL_FRAME_DIM)  # the change-against-background block (row means)
    during, before = slice(6, 12), slice(0, 1)  # rows fully inside / outside the object's frames
    gap = np.abs(red[during, change] - empty[during, change]).mean()
    assert gap > 8 * np.abs(red[before, change] - empty[before, change]).mean() + 1e-3
    # the foreground colour says which object: red's is red, blue's is blue
    colour = slice(lite.FRAME_DIM + 2 * lite.CELLS + 1, lite.FRAME_DIM + 2 * lite.CELLS + 4)
    assert red[during, colour].mean(axis=0)[0] > red[during, colour].mean(axis=0)[2] + 0.15
    assert blue[during, colour].mean(axis=0)[2] > blue[during, colour].mean(axis=0)[0] + 0.15


@pytest.mark.parametrize("frames", [1, 3])
def test_very_short_clips(frames: int) -> None:
    assert np.isfinite(features(textured_clip(frames))).all()
