"""Weights: directory lookup, canonical files (recipe-built), corruption, checksums, download, RAFT conversion."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
from fileserver import FileServer

from avdet.errors import WeightsError
from avdet.extractors import i3d, raft, vggish, weights
from avdet.extractors.registry import build_extractor_set
from avdet.pipeline import weights as fetch_weights

SEED = 0


@pytest.fixture(autouse=True)
def no_env_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the user's weights folder: HOME points at an empty temp folder, env vars unset."""
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


_RECIPES: dict[str, dict[str, torch.Tensor]] = {}


def recipe_state(stream: str) -> dict[str, torch.Tensor]:
    """Recipe weights of one I3D stream (built once per session: 12 M parameters)."""
    if stream not in _RECIPES:
        _RECIPES[stream] = weights.seeded_state_dict(i3d.InceptionI3D(stream).state_dict(), SEED)
    return _RECIPES[stream]


# -- directory lookup and missing files -------------------------------------------------------------------------
def test_weights_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert weights.weights_dir() == tmp_path / "home" / ".cache" / "avdet" / "weights"
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "env"))
    assert weights.weights_dir() == tmp_path / "env"
    assert weights.weights_dir(tmp_path / "explicit") == tmp_path / "explicit"


@pytest.mark.parametrize(
    ("load", "missing"),
    [
        (lambda d: i3d.load_i3d("rgb", d), "i3d_rgb.pt"),
        (lambda d: i3d.load_i3d("flow", d), "i3d_flow.pt"),
        (lambda d: vggish.load_vggish(d), "vggish-10086976.pth"),
        (lambda d: raft.load_raft(d), "raft-sintel.pth"),
    ],
)
def test_missing_file_names_file_folder_and_source(load, missing: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as err:
        load(str(tmp_path))
    text = str(err.value)
    assert missing in text and str(tmp_path) in text and weights.CATALOG[missing].url in text
    assert "\n" not in text


def test_registry_i3d_vggish_without_weights_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"not found in .*--weights-dir"):
        build_extractor_set("i3d_vggish", weights_dir=str(tmp_path))


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_random_weights_never_read_the_weights_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "does-not-exist"))
    model = i3d.load_i3d("flow", random_weights=True)
    assert not model.training
    key = "conv3d_1a_7x7.batch3d.running_var"
    torch.testing.assert_close(model.state_dict()[key], weights.seeded_tensor(key, (64,), SEED))
    assert not (tmp_path / "does-not-exist").exists()


def test_seeded_tensor_follows_the_recipe() -> None:
    import zlib

    import numpy as np

    rs = np.random.RandomState(zlib.crc32(b"a.weight") ^ 3)
    expected = (rs.standard_normal((4, 2, 3)) * np.sqrt(2 / 6)).astype(np.float32)
    torch.testing.assert_close(weights.seeded_tensor("a.weight", (4, 2, 3), 3), torch.from_numpy(expected))
    norm = weights.seeded_tensor("bn.weight", (1000,), 3)
    assert abs(float(norm.mean()) - 1.0) < 0.02  # 1 + 0.1 noise
    assert float(weights.seeded_tensor("bn.running_var", (1000,), 3).min()) >= 0.5


# -- canonical files: good, corrupted, wrong, checksummed -------------------------------------------------------
@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_i3d_canonical_file_loads(tmp_path: Path) -> None:
    state = recipe_state("rgb")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # older exports lack them
    torch.save(state, tmp_path / "i3d_rgb.pt")
    model = i3d.load_i3d("rgb", str(tmp_path))
    key = "mixed_4b.branch_1.1.conv3d.weight"
    torch.testing.assert_close(model.state_dict()[key], state[key])


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_corrupted_file_is_a_one_line_error(tmp_path: Path) -> None:
    torch.save(recipe_state("flow"), tmp_path / "i3d_flow.pt")
    data = (tmp_path / "i3d_flow.pt").read_bytes()
    (tmp_path / "i3d_flow.pt").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(WeightsError, match=r"i3d_flow\.pt: cannot read it as a torch checkpoint") as err:
        i3d.load_i3d("flow", str(tmp_path))
    assert "\n" not in str(err.value)


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    torch.save(recipe_state("rgb"), tmp_path / "i3d_flow.pt")  # rgb weights under the flow name
    with pytest.raises(WeightsError, match=r"i3d_flow\.pt: not the expected checkpoint: .*wrong shape"):
        i3d.load_i3d("flow", str(tmp_path))
    torch.save({"x": torch.zeros(1)}, tmp_path / "i3d_rgb.pt")
    with pytest.raises(WeightsError, match=r"missing .*unexpected"):
        i3d.load_i3d("rgb", str(tmp_path))
    torch.save([1, 2, 3], tmp_path / "i3d_rgb.pt")
    with pytest.raises(WeightsError, match="expected a state dict"):
        i3d.load_i3d("rgb", str(tmp_path))


def test_vggish_published_prefix_mismatch(tmp_path: Path) -> None:
    """Any other file under the published name fails: its digest does not start with the name's 10086976."""
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / vggish.WEIGHTS_FILE)
    with pytest.raises(WeightsError, match=r"SHA-256 .* does not match the expected 10086976"):
        vggish.load_vggish(str(tmp_path))


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_sha256sums_file_catches_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "i3d_rgb.pt"
    torch.save(recipe_state("rgb"), path)
    weights.record_sum(tmp_path, "i3d_rgb.pt", weights.sha256_of(path))
    assert weights.verify_checksum(path, "i3d_rgb.pt") is True
    i3d.load_i3d("rgb", str(tmp_path))
    # Same size, one byte flipped inside a tensor: still a readable checkpoint, only the checksum notices.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"i3d_rgb\.pt: SHA-256 .* does not match"):
        i3d.load_i3d("rgb", str(tmp_path))
    rows = {r["name"]: r for r in weights.weights_report(tmp_path)}
    assert rows["i3d_rgb.pt"]["present"] and rows["i3d_rgb.pt"]["sha_ok"] is False


def test_malformed_sha256sums_is_reported(tmp_path: Path) -> None:
    torch.save(recipe_state("rgb"), tmp_path / "i3d_rgb.pt")
    (tmp_path / weights.SUMS_FILE).write_text("not-a-digest i3d_rgb.pt\n")
    with pytest.raises(WeightsError, match=r"SHA256SUMS:1: expected"):
        i3d.load_i3d("rgb", str(tmp_path))


def test_files_for_extractor() -> None:
    assert sorted(weights.files_for("i3d_vggish")) == sorted(
        ["vggish-10086976.pth", "vggish_pca_params-970ea276.pth", "i3d_rgb.pt", "i3d_flow.pt", "raft-sintel.pth"]
    )
    assert sorted(weights.files_for("vgg19_vggish")) == [
        "vgg19-dcbb9e9d.pth",
        "vggish-10086976.pth",
        "vggish_pca_params-970ea276.pth",
    ]
    with pytest.raises(WeightsError, match="no weights files"):
        weights.files_for("lite")


def test_weights_report(tmp_path: Path) -> None:
    torch.save(recipe_state("flow"), tmp_path / "i3d_flow.pt")
    rows = {r["name"]: r for r in weights.weights_report(tmp_path)}
    assert set(rows) == set(weights.CATALOG)
    assert rows["i3d_flow.pt"]["present"] and rows["i3d_flow.pt"]["sha_ok"] is None  # no digest known yet
    assert not rows["raft-sintel.pth"]["present"] and rows["raft-sintel.pth"]["sha_ok"] is None
    assert rows["raft-sintel.pth"]["file"] == str(tmp_path / "raft-sintel.pth")
    assert all(r["url"].startswith("https://") for r in rows.values())


# -- download (explicit only; a server on 127.0.0.1 stands in for the network) ----------------------------------
@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_download_records_digest_and_refuses_mismatch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    torch.save(recipe_state("rgb"), mirror / "i3d_rgb.pt")
    folder = tmp_path / "weights"
    with FileServer(mirror) as server, caplog.at_level(logging.WARNING):
        got = fetch_weights.download("i3d_rgb.pt", folder, url=server.url("i3d_rgb.pt"))
        assert got == folder / "i3d_rgb.pt" and got.read_bytes() == (mirror / "i3d_rgb.pt").read_bytes()
        digest = hashlib.sha256(got.read_bytes()).hexdigest()
        assert weights.read_sums(folder) == {"i3d_rgb.pt": digest}
        assert {r["name"]: r["sha_ok"] for r in weights.weights_report(folder)}["i3d_rgb.pt"] is True
        unpinned = [r.getMessage() for r in caplog.records if "unpinned" in r.getMessage()]
        assert len(unpinned) == 1 and "i3d_rgb.pt" in unpinned[0]  # one line at the first download
        with pytest.raises(WeightsError, match="SHA-256 mismatch, expected 0000"):
            fetch_weights.download("i3d_flow.pt", folder, url=server.url("i3d_rgb.pt"), expected_sha256="0" * 64)
        assert sorted(p.name for p in folder.iterdir()) == ["SHA256SUMS", "i3d_rgb.pt"]  # no partial file left
        with pytest.raises(WeightsError, match=r"raft-sintel\.pth: .*HTTP 404.*place it at"):
            fetch_weights.download("raft-sintel.pth", folder, url=server.url("nothing-here"))


def test_catalog_urls_are_pinned_not_moving_branches() -> None:
    for entry in weights.CATALOG.values():
        assert "/master/" not in entry.url and "/main/" not in entry.url, entry.url
    assert {weights.pinning(n) for n in weights.CATALOG} <= {"sha256", "prefix", "unpinned"}
    assert weights.pinning("i3d_rgb.pt") == "unpinned" and weights.pinning("vggish-10086976.pth") == "prefix"


def test_download_weights_keeps_valid_files(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save({"a": torch.ones(1)}, folder / "i3d_rgb.pt")
    weights.record_sum(folder, "i3d_rgb.pt", weights.sha256_of(folder / "i3d_rgb.pt"))
    assert fetch_weights.download_weights(["i3d_rgb.pt"], folder) == [folder / "i3d_rgb.pt"]  # nothing fetched
    with pytest.raises(WeightsError, match="unknown weights file"):
        fetch_weights.download_weights(["nope.pt"], folder)


# -- RAFT: original checkpoints -> torchvision raft_large -------------------------------------------------------
def _bn(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{p}": (n,) for p in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def original_raft_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of princeton-vl RAFT (large), written from its module structure."""
    shapes: dict[str, tuple[int, ...]] = {}
    for net, batch_norm in (("fnet", False), ("cnet", True)):  # fnet: instance norm (no parameters)
        shapes |= {f"{net}.conv1.weight": (64, 3, 7, 7), f"{net}.conv1.bias": (64,)}
        if batch_norm:
            shapes |= _bn(f"{net}.norm1", 64)
        planes = 64
        for layer, (dim, stride) in enumerate(((64, 1), (96, 2), (128, 2)), 1):
            for block, (cin, s) in enumerate(((planes, stride), (dim, 1))):
                p = f"{net}.layer{layer}.{block}"
                shapes |= {f"{p}.conv1.weight": (dim, cin, 3, 3), f"{p}.conv1.bias": (dim,)}
                shapes |= {f"{p}.conv2.weight": (dim, dim, 3, 3), f"{p}.conv2.bias": (dim,)}
                if batch_norm:
                    shapes |= _bn(f"{p}.norm1", dim) | _bn(f"{p}.norm2", dim)
                if s != 1:
                    shapes |= {f"{p}.downsample.0.weight": (dim, cin, 1, 1), f"{p}.downsample.0.bias": (dim,)}
                    if batch_norm:  # norm3 is downsample.1: the state dict holds it under both names
                        shapes |= _bn(f"{p}.norm3", dim) | _bn(f"{p}.downsample.1", dim)
            planes = dim
        shapes |= {f"{net}.conv2.weight": (256, 128, 1, 1), f"{net}.conv2.bias": (256,)}
    convs = {
        "encoder.convc1": (256, 324, 1, 1),
        "encoder.convc2": (192, 256, 3, 3),
        "encoder.convf1": (128, 2, 7, 7),
        "encoder.convf2": (64, 128, 3, 3),
        "encoder.conv": (126, 256, 3, 3),
        "flow_head.conv1": (256, 128, 3, 3),
        "flow_head.conv2": (2, 256, 3, 3),
        "mask.0": (256, 128, 3, 3),
        "mask.2": (576, 256, 1, 1),
    }
    convs |= {f"gru.conv{g}{i}": (128, 384, *k) for g in "zrq" for i, k in ((1, (1, 5)), (2, (5, 1)))}
    for name, shape in convs.items():
        shapes |= {f"update_block.{name}.weight": shape, f"update_block.{name}.bias": (shape[0],)}
    return shapes


def original_raft_state() -> dict[str, torch.Tensor]:
    """A DataParallel-saved original checkpoint (`module.` prefixes) with recipe values, norm3 == downsample.1."""
    state = {}
    for key, shape in original_raft_shapes().items():
        tied = key.replace(".norm3.", ".downsample.1.")
        value = torch.zeros((), dtype=torch.long) if not shape else weights.seeded_tensor(tied, shape, SEED)
        state[f"module.{key}"] = value
    return state


def test_raft_converter_maps_every_original_parameter() -> None:
    original = original_raft_state()
    converted = raft.convert_raft_checkpoint(original)
    reference = raft.raft_large_model().state_dict()
    assert set(converted) == set(reference)
    assert all(tuple(converted[k].shape) == tuple(reference[k].shape) for k in reference)
    pairs = {
        "module.fnet.conv1.weight": "feature_encoder.convnormrelu.0.weight",
        "module.cnet.norm1.running_var": "context_encoder.convnormrelu.1.running_var",
        "module.cnet.layer2.0.downsample.1.weight": "context_encoder.layer2.0.downsample.1.weight",
        "module.cnet.layer3.1.norm2.bias": "context_encoder.layer3.1.convnormrelu2.1.bias",
        "module.cnet.conv2.weight": "context_encoder.conv.weight",
        "module.update_block.gru.convr1.weight": "update_block.recurrent_block.convgru1.convr.weight",
        "module.update_block.gru.convq2.bias": "update_block.recurrent_block.convgru2.convq.bias",
        "module.update_block.encoder.convf2.weight": "update_block.motion_encoder.convflow2.0.weight",
        "module.update_block.encoder.convc1.bias": "update_block.motion_encoder.convcorr1.0.bias",
        "module.update_block.mask.2.weight": "mask_predictor.conv.weight",
    }
    for old, new in pairs.items():
        assert torch.equal(converted[new], original[old]), (old, new)
    with pytest.raises(ValueError, match="not a RAFT"):
        raft.convert_raft_checkpoint({"module.fnet.conv9.weight": torch.zeros(1)})


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_raft_loads_original_checkpoint_and_estimates_flow(tmp_path: Path) -> None:
    torch.save(original_raft_state(), tmp_path / raft.WEIGHTS_FILE)
    model = raft.load_raft(str(tmp_path))
    assert not model.training
    frames = torch.rand(2, 3, 128, 136) * 255
    flow = raft.estimate_flow(model, frames[:1].expand(2, -1, -1, -1), frames, iterations=2)
    assert flow.shape == (2, 2, 128, 136) and torch.isfinite(flow).all()
    # A RAFT-small (or other) checkpoint is refused with the file named.
    torch.save(
        {"module.fnet.conv1.weight": torch.zeros(32, 3, 7, 7), "x.y": torch.zeros(1)}, tmp_path / "raft-sintel.pth"
    )
    with pytest.raises(WeightsError, match=r"raft-sintel\.pth: unexpected RAFT parameter"):
        raft.load_raft(str(tmp_path))


def test_sintel_padding_matches_input_padder_rule() -> None:
    # The reference pads (((h // 8) + 1) * 8 - h) % 8 rows, half before (rounded down) and the rest after.
    for h, w in [(256, 455), (256, 256), (250, 333), (257, 263)]:
        left, right, top, bottom = raft.sintel_padding(h, w)
        pad_h, pad_w = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
        assert (left, right, top, bottom) == (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    padded = raft.pad_frames(x)
    assert padded.shape == (2, 3, 8, 8)
    torch.testing.assert_close(padded[..., 1:6, 1:7], x)  # content in the middle, edges replicated
    torch.testing.assert_close(padded[..., 0, 1:7], x[..., 0, :])
