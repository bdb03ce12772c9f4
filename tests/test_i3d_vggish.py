"""The `i3d_vggish` set: row counts against the reference windowing, streamed windows against a direct
computation of the reference loop, and extraction of a generated clip into released-feature shapes.

The networks are cheap stand-ins here (I3D at 224 and RAFT run seconds per window on CPU); the golden tests cover
the networks themselves.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avdet.extractors import i3d_vggish, raft
from avdet.extractors.base import AudioInput, ExtractorSet, MediaRequest, VisualInput
from avdet.extractors.vggish import VGGish, VGGishAudio
from avdet.pipeline.extract import ExtractOptions, extract_one
from avdet.pipeline.io.released import ReleasedFeatures
from avdet.pipeline.io.store import FeatureStore
from conftest import make_clip


# -- row counts ---------------------------------------------------------------------------------------------------
def reference_i3d_rows(num_frames: int, stack: int = 24, step: int = 8) -> int:
    """The reference's I3D loop: append a frame; when the stack holds stack + 1 frames run it, keep from `step`."""
    frames: list[int] = []
    rows = 0
    for f in range(num_frames):
        frames.append(f)
        if len(frames) - 1 == stack:
            rows += 1
            frames = frames[step:]
    return rows


def reference_vggish_rows(num_samples: int, hop_s: float = 0.32) -> int:
    """The reference's framing: 400-sample STFT frames every 160, then 96-frame examples every hop."""
    if num_samples < 400:
        return 0
    mel_frames = 1 + math.floor((num_samples - 400) / 160)
    if mel_frames < 96:
        return 0
    return 1 + math.floor((mel_frames - 96) / round(hop_s / 0.01))


def test_visual_row_count_is_the_reference_loop() -> None:
    for n in range(0, 400):
        assert i3d_vggish.rows_for_frames(n) == reference_i3d_rows(n), n


def test_audio_row_count_is_the_reference_framing() -> None:
    for d in np.arange(0.0, 61.0, 0.013):
        samples = int(round(d * 16000))
        assert i3d_vggish.unav_audio_rows(d) == max(1, reference_vggish_rows(samples)), d


def test_modalities_differ_by_at_most_one_row() -> None:
    durations = np.arange(1.0, 60.0, 0.0007)
    diffs = np.array([i3d_vggish.unav_audio_rows(d) - i3d_vggish.unav_num_rows(d) for d in durations])
    assert set(np.unique(diffs)) <= {0, 1}
    # Rare (audio one row longer just before a visual window completes), as the released set shows; e.g. 1.297 s.
    assert 0.0 < np.mean(diffs != 0) < 0.05
    assert (i3d_vggish.unav_num_rows(1.297), i3d_vggish.unav_audio_rows(1.297)) == (1, 2)
    # A UnAV-100 video of 60 s: 25 fps x 60 = 1500 frames -> (1500 - 25) // 8 + 1 rows.
    assert i3d_vggish.unav_num_rows(60.0) == 185 and i3d_vggish.unav_audio_rows(60.0) == 185


# -- streamed windows against a direct computation of the reference loop ----------------------------------------
def fake_flow(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """A cheap flow stand-in: frame differences, (N, 3, H, W) x2 -> (N, 2, H, W) in 'pixels'."""
    return (second - first)[:, :2] / 4.0


def fake_net(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, 224, 224) -> (B, 1024): per-frame, per-channel means and a corner pixel, so any frame mix-up shows."""
    feats = torch.cat([x.mean(dim=(3, 4)).flatten(1), x[..., 0, 0].flatten(1), x[..., 111, 57].flatten(1)], dim=1)
    return F.pad(feats, (0, 1024 - feats.shape[1]))


def reference_windows(frames: np.ndarray, rows: int) -> np.ndarray:
    """The reference loop written directly: 25-frame stacks every 8 frames, RGB = the first 24, flow between all."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (N, H, W, 3) -> (N, 3, H, W)
    x = i3d_vggish.resize_short_side(x)
    need = i3d_vggish.STACK + 1 + i3d_vggish.STEP * (rows - 1)
    if len(x) < need:  # short clips: the last frame repeated
        x = torch.cat([x, x[-1:].expand(need - len(x), -1, -1, -1)])
    out = []
    for k in range(rows):
        stack = x[i3d_vggish.STEP * k : i3d_vggish.STEP * k + i3d_vggish.STACK + 1]
        padded = raft.pad_frames(stack)
        flow = i3d_vggish.flow_to_unit(i3d_vggish.center_crop(fake_flow(padded[:-1], padded[1:])))  # (24, 2, 224, 224)
        rgb = i3d_vggish.rgb_to_unit(i3d_vggish.center_crop(stack[:-1]))  # (24, 3, 224, 224)
        clips = rgb.transpose(0, 1)[None], flow.transpose(0, 1)[None]  # (T, C, h, w) -> (1, C, T, h, w)
        out.append(torch.cat([fake_net(clips[0]), fake_net(clips[1])], dim=1))
    return torch.cat(out).numpy()


def chunked(frames: np.ndarray, size: int) -> list[np.ndarray]:
    return [frames[i : i + size] for i in range(0, len(frames), size)]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    # 40 x 57 frames: resized to 256 x 364, whose width needs RAFT padding (364 % 8 = 4).
    return np.random.default_rng(0).integers(0, 256, (41, 40, 57, 3), dtype=np.uint8)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
@pytest.mark.parametrize(("chunk", "flow_batch", "batch_size"), [(1, 3, 1), (7, 5, 2)])
def test_streamed_windows_equal_the_reference_loop(frames: np.ndarray, chunk: int, flow_batch: int, batch_size: int):
    extractor = i3d_vggish.TwoStreamI3D(fake_net, fake_net, fake_flow, batch_size=batch_size, flow_batch=flow_batch)
    duration = len(frames) / i3d_vggish.FPS  # 41 frames -> 3 windows
    feats = extractor(VisualInput(chunked(frames, chunk), i3d_vggish.FPS, duration))
    assert feats.values.shape == (3, 2048) == (i3d_vggish.unav_num_rows(duration), extractor.dim)
    np.testing.assert_allclose(feats.values, reference_windows(frames, 3), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats.times.mean(axis=1), 0.48 + 0.32 * np.arange(3), atol=1e-9)


def test_short_clip_gets_one_row_from_its_last_frame_repeated(frames: np.ndarray) -> None:
    extractor = i3d_vggish.TwoStreamI3D(fake_net, fake_net, fake_flow)
    feats = extractor(VisualInput([frames[:10]], i3d_vggish.FPS, 0.4))
    assert feats.values.shape == (1, 2048)
    np.testing.assert_allclose(feats.values, reference_windows(frames[:10], 1), rtol=1e-6, atol=1e-6)


def test_frames_beyond_the_grid_are_consumed_but_unused(frames: np.ndarray) -> None:
    seen = []

    def chunks():
        for c in chunked(frames, 16):
            seen.append(len(c))
            yield c

    two_stream = i3d_vggish.TwoStreamI3D(fake_net, fake_net, fake_flow)
    feats = two_stream(VisualInput(chunks(), i3d_vggish.FPS, 1.0))  # 25 frames, 1 row
    assert sum(seen) == len(frames) and feats.values.shape == (1, 2048)
    np.testing.assert_allclose(feats.values, reference_windows(frames[:25], 1), rtol=1e-6, atol=1e-6)


def test_preprocessing_constants() -> None:
    flow = torch.tensor([-30.0, -20.0, 0.0, 0.1, 19.9, 20.0, 25.0])
    # clamp to [-20, 20] -> round(128 + 255/40 * f), half to even, kept as floats like the reference (no uint8
    # cast, so +20 gives 256) -> 2x/255 - 1
    expected = 2 * torch.tensor([0.0, 0.0, 128.0, 129.0, 255.0, 256.0, 256.0]) / 255 - 1
    torch.testing.assert_close(i3d_vggish.flow_to_unit(flow), expected)
    torch.testing.assert_close(i3d_vggish.rgb_to_unit(torch.tensor([0.0, 255.0])), torch.tensor([-1.0, 1.0]))
    x = torch.zeros(1, 3, 360, 640)
    assert i3d_vggish.resize_short_side(x).shape == (1, 3, 256, 455)
    assert i3d_vggish.center_crop(torch.zeros(2, 256, 455)).shape == (2, 224, 224)


# -- a generated clip through the extraction runner -> the released feature shapes ------------------------------
@pytest.mark.slow  # I3D and VGGish end to end on a clip
def test_extract_one_gives_released_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    audio = VGGishAudio(VGGish(), hop_s=i3d_vggish.STEP_S, num_rows=i3d_vggish.unav_audio_rows)
    visual = i3d_vggish.TwoStreamI3D(fake_net, fake_net, fake_flow)
    spec = {"name": "i3d_vggish_test", "version": 1}
    media = MediaRequest(fps=i3d_vggish.FPS, size=(256, 256), resize="short_side_crop", short_side=256)
    extractors = ExtractorSet("i3d_vggish", visual, audio, media, spec)
    clip = make_clip(tmp_path / "-clip id.mp4", 2.7, size="160x90")
    store = FeatureStore(tmp_path / "cache")
    result = extract_one(clip, store, extractors, ExtractOptions(extractor="i3d_vggish"))
    assert result.status == "done", result.reason
    stored = store.load("-clip id", store.register_spec(spec))
    rows_v, rows_a = i3d_vggish.unav_num_rows(stored.duration), i3d_vggish.unav_audio_rows(stored.duration)
    assert stored.visual.values.shape == (rows_v, 2048) and stored.audio.values.shape == (rows_a, 128)
    assert rows_v == reference_i3d_rows(round(2.7 * 25)) == 6
    # Written out in the released layout, the features read back like UnAV-100's own.
    folder = tmp_path / "released"
    folder.mkdir()
    np.save(folder / "-clip id_rgb.npy", stored.visual.values[:, :1024])
    np.save(folder / "-clip id_flow.npy", stored.visual.values[:, 1024:])
    np.save(folder / "-clip id_vggish.npy", stored.audio.values)
    visual_r, audio_r = ReleasedFeatures(folder, "i3d_vggish").load("-clip id")
    np.testing.assert_array_equal(visual_r.times, stored.visual.times[: len(visual_r)])
    np.testing.assert_array_equal(audio_r.values, stored.audio.values[: len(audio_r)])


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_vggish_rows_follow_the_duration_not_the_track() -> None:
    model = VGGish().eval()
    short_track = np.zeros(16000, dtype=np.float32)  # 1 s of audio in a 3 s video: the rest is silence
    feats = VGGishAudio(model, hop_s=0.32)(AudioInput(short_track, 16000, 3.0))
    assert len(feats) == i3d_vggish.unav_audio_rows(3.0) == reference_vggish_rows(48000)
    long_track = np.zeros(16000 * 5, dtype=np.float32)
    assert len(VGGishAudio(model, hop_s=0.32)(AudioInput(long_track, 16000, 3.0))) == len(feats)
