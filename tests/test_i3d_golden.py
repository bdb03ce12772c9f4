"""Two-stream I3D reproduces the reference (v-iashin/video_features `I3D(..., features=True)`): golden/i3d.pt.

Each stream's checkpoint is written by the test under its canonical name from the golden recipe, then loaded
through `load_i3d` (which checks names and shapes against the public `i3d_rgb.pt` / `i3d_flow.pt` layout).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from avdet.extractors import weights
from avdet.extractors.i3d import WEIGHTS_FILES, InceptionI3D, load_i3d, same_padding


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "i3d.pt", weights_only=True)


def recipe_input(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    rs = np.random.RandomState(zlib.crc32(name.encode()) ^ seed)
    return torch.from_numpy(rs.uniform(-1, 1, shape).astype(np.float32))


def test_parameter_names_match_public_checkpoints(golden: dict) -> None:
    for stream in ("rgb", "flow"):
        ours = InceptionI3D(stream).state_dict()
        ref = golden[stream]["state_dict_shapes"]
        assert list(ours) == list(ref)
        assert all(tuple(ours[k].shape) == tuple(ref[k]) for k in ref)


@pytest.mark.slow  # golden: a full I3D forward per stream
@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_i3d_matches_reference(golden: dict, stream: str, tmp_path: Path) -> None:
    ref = golden[stream]
    seed = ref["weights_seed"]
    state = {
        k: torch.zeros((), dtype=torch.long)
        if k.endswith("num_batches_tracked")
        else weights.seeded_tensor(k, tuple(s), seed)
        for k, s in ref["state_dict_shapes"].items()
    }
    torch.save(state, tmp_path / WEIGHTS_FILES[stream])
    model = load_i3d(stream, str(tmp_path))
    name, shape_text = ref["input_recipe"].split(" (")
    shape = tuple(int(v) for v in shape_text.split(")")[0].split(", "))
    x = recipe_input(name, shape, seed)
    with torch.no_grad():
        features, logits = model.features_and_logits(x)  # one trunk pass: I3D at 224 is slow on CPU
    assert features.shape == (1, 1024)
    scale = float(ref["features"].abs().max())
    torch.testing.assert_close(features, ref["features"], rtol=1e-4, atol=1e-4 * scale)
    softmax, ref_logits = ref["logits"]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4 * float(ref_logits.abs().max()))
    # The recipe's logits are ~1e3: float32 rounding there (~4e-4) moves probabilities by up to ~5e-5.
    torch.testing.assert_close(logits.softmax(dim=1), softmax, rtol=1e-3, atol=1e-4)


def test_same_padding_is_tensorflow_rule() -> None:
    # F.pad order: (w_left, w_right, h_top, h_bottom, t_front, t_back); TF puts the odd pixel at the end.
    assert same_padding((7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    assert same_padding((1, 3, 3), (1, 2, 2)) == (0, 1, 0, 1, 0, 0)
    assert same_padding((3, 3, 3), (1, 1, 1)) == (1, 1, 1, 1, 1, 1)
    assert same_padding((2, 2, 2), (2, 2, 2)) == (0, 0, 0, 0, 0, 0)
