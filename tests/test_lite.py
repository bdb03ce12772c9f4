"""`lite` visual features: layout, versioning, chunking invariance, streaming in bounded memory, and that a small
object registers."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

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


def one_shot(clip: np.ndarray, chunk: int, rows: int | None = None) -> np.ndarray:
    """The visual rows computed over the whole video at once (what `LiteVisual` did before streaming): every
    frame's statistics, one background pass over all blocks, then every row's window."""
    stats = list(lite.frame_stats(clip[i : i + chunk] for i in range(0, len(clip), chunk)))
    fine = np.concatenate([f for _, f in stats]).astype(np.float32)  # (N, FINE, FINE, 3)
    desc = np.concatenate([np.concatenate([d for d, _ in stats]), lite.change_descriptors(fine)], axis=1)
    rows = num_rows(len(clip)) if rows is None else rows
    win = desc[lite.window_indices(rows, 0.32, 0.96, 12.5, len(desc))]  # (T, W, D)
    return np.concatenate([win.mean(axis=1), win.std(axis=1)], axis=1)


@pytest.mark.parametrize(
    ("frames", "chunk", "block"),
    [(97, 7, 9), (61, 64, 20), (50, 3, 1), (1, 1, 9), pytest.param(1700, 64, 750, marks=pytest.mark.slow)],
)
def test_streamed_rows_equal_the_one_shot_computation(
    frames: int, chunk: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bit-identical, with background blocks forced small (several blocks, a 1-frame last block) and at the real
    size (2 blocks of 750 and a partial one)."""
    monkeypatch.setattr(lite, "BACKGROUND_BLOCK", block)
    monkeypatch.setattr(lite, "BACKGROUND_SAMPLES", min(block, lite.BACKGROUND_SAMPLES))
    clip = with_object(textured_clip(frames, seed=frames), frames // 4, frames // 2, (230, 40, 40))
    np.testing.assert_array_equal(features(clip, chunk), one_shot(clip, chunk))


def test_rows_past_the_decoded_frames() -> None:
    """A duration longer than the frames decoded (a short decode): the last rows read the last frame, as one shot
    over the video does; no frames at all read a zero frame."""
    clip = textured_clip(30)
    stream = lite.LiteVisual()(VisualInput([clip[:16], clip[16:]], fps=12.5, duration=45 / 12.5)).values
    np.testing.assert_array_equal(stream, one_shot(clip, 16, rows=num_rows(45)))
    empty = lite.LiteVisual()(VisualInput([], fps=12.5, duration=2.0)).values
    np.testing.assert_array_equal(empty, np.zeros((num_rows(25), 304), np.float32))


def peak_bytes(frames: int, chunk: int = 64) -> int:
    """Peak traced allocation of the visual extractor over `frames` generated 32x32 frames, made chunk by chunk
    (so the input never exists whole), less the rows it returns (those grow with the video by design)."""

    def chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(0)
        for start in range(0, frames, chunk):
            yield rng.integers(0, 256, size=(min(chunk, frames - start), 32, 32, 3), dtype=np.uint8)

    tracemalloc.start()
    try:
        values = lite.LiteVisual()(VisualInput(chunks(), fps=12.5, duration=frames / 12.5)).values
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - values.nbytes


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_memory_is_bounded_by_a_block_not_the_video() -> None:
    """4x the video, the same working memory: before streaming every frame's statistics and fine map were held
    (about 10 KB a frame at their peak, +45 MB here)."""
    short, long = peak_bytes(1500), peak_bytes(6000)
    assert long - short < 2_000_000, (short, long)
