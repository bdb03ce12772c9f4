"""VGGish reproduces the reference (v-iashin/video_features torchvggish port): shared/golden/vggish.pt.

The weights follow the golden recipe and are written by the test in the canonical torchvggish formats (a
state dict for the network, a dict of numpy arrays for the PCA file), then loaded through `load_vggish`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avdet.extractors import weights
from avdet.extractors.base import AudioInput
from avdet.extractors.vggish import PCA_FILE, WEIGHTS_FILE, VGGishAudio, load_vggish, num_examples, waveform_to_examples

pytestmark = pytest.mark.slow  # golden over 5 s: its module fixture builds VGGish and runs the reference clips


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "vggish.pt", weights_only=True)


@pytest.fixture(scope="module")
def weights_dir(golden: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Canonical files built from the golden recipe, with their SHA-256 (the published ones are prefixes)."""
    root = tmp_path_factory.mktemp("vggish_weights")
    seed = golden["weights_seed"]
    shapes = golden["state_dict_shapes"]
    net = {k: weights.seeded_tensor(k, tuple(s), seed) for k, s in shapes.items() if not k.startswith("pproc.")}
    torch.save(net, root / WEIGHTS_FILE)
    vectors = weights.seeded_tensor("pproc.pca_eigen_vectors", (128, 128), seed)
    means = weights.seeded_tensor("pproc.pca_means", (128, 1), seed)
    # The released PCA file holds numpy arrays, the means as a flat (128,) vector.
    torch.save({"pca_eigen_vectors": vectors.numpy(), "pca_means": means.numpy().reshape(-1)}, root / PCA_FILE)
    sums = {name: weights.sha256_of(root / name) for name in (WEIGHTS_FILE, PCA_FILE)}
    return root, sums


@pytest.fixture(scope="module")
def model(weights_dir: tuple[Path, dict[str, str]]):
    root, sums = weights_dir
    return load_vggish(str(root), expected_sha256=sums)


def waveform(golden: dict) -> torch.Tensor:
    return golden["waveform_int16"].to(torch.float64) / 32768.0


def postprocessed_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Quantised outputs: exact except rare rounding-boundary ties (at most 1 % of entries, off by one)."""
    diff = (ours - ref).abs()
    assert diff.max() <= 1
    assert (diff > 0).float().mean() <= 0.01


@pytest.mark.parametrize("hop", ["0.96", "0.32"])
def test_vggish_matches_reference(golden: dict, model, hop: str) -> None:
    ref = golden["by_hop_seconds"][hop]
    examples = waveform_to_examples(waveform(golden), golden["sample_rate"], float(hop))
    assert examples.shape == ref["examples"].shape
    torch.testing.assert_close(examples, ref["examples"], rtol=1e-5, atol=1e-5)
    assert num_examples(len(golden["waveform_int16"]), float(hop)) == len(examples)
    with torch.no_grad():
        emb = model(examples)
        post = model.postprocess(emb)
    scale = float(ref["embeddings"].abs().max())
    torch.testing.assert_close(emb, ref["embeddings"], rtol=1e-4, atol=1e-4 * scale)
    postprocessed_close(post, ref["postprocessed"])


@pytest.mark.parametrize("postprocess", [False, True])
def test_vggish_extractor_rows_and_grid(golden: dict, model, postprocess: bool) -> None:
    ref = golden["by_hop_seconds"]["0.32"]
    samples = waveform(golden).numpy().astype(np.float32)
    extractor = VGGishAudio(model, hop_s=0.32, postprocess=postprocess, batch_size=7)
    feats = extractor(AudioInput(samples, 16000, len(samples) / 16000))
    assert feats.values.shape == (20, 128) and feats.values.dtype == np.float32
    np.testing.assert_allclose(feats.times[:, 0], 0.32 * np.arange(20), atol=1e-9)
    np.testing.assert_allclose(feats.times[:, 1] - feats.times[:, 0], 0.96, atol=1e-9)
    if postprocess:
        postprocessed_close(torch.from_numpy(feats.values), ref["postprocessed"])
    else:
        scale = float(ref["embeddings"].abs().max())
        np.testing.assert_allclose(feats.values, ref["embeddings"].numpy(), rtol=1e-4, atol=1e-4 * scale)


def test_vggish_extractor_fixed_row_count_pads_and_crops(golden: dict, model) -> None:
    samples = waveform(golden).numpy().astype(np.float32)
    ref = golden["by_hop_seconds"]["0.32"]["embeddings"].numpy()
    scale = float(np.abs(ref).max())
    longer = VGGishAudio(model, hop_s=0.32, num_rows=lambda duration: 23)(AudioInput(samples, 16000, 7.37))
    assert longer.values.shape == (23, 128)
    # Rows that had whole audio are unchanged by the silence appended after them.
    np.testing.assert_allclose(longer.values[:20], ref, rtol=1e-4, atol=1e-4 * scale)
    shorter = VGGishAudio(model, hop_s=0.32, num_rows=lambda duration: 5)(AudioInput(samples, 16000, 7.37))
    np.testing.assert_allclose(shorter.values, ref[:5], rtol=1e-4, atol=1e-4 * scale)
