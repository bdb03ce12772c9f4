"""AVE data (pipeline/data/ave.py) in the release's text and HDF5 layouts, metrics, a tiny model that learns, and the
`vgg19_vggish` extractor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from avdet.errors import DataError, WeightsError
from avdet.extractors import vgg19_vggish
from avdet.extractors.base import VisualInput
from avdet.pipeline.data import ave, segments
from avdet.pipeline.io.plots import save_confusion_png
from avdet.pipeline.metrics.accuracy import background_only_accuracy, segment_report
from avdet.pipeline.synth.ave_features import write_synthetic_ave
from avdet.pipeline.tasks.segment import batch_targets

ANNOTATIONS = (
    "Category&VideoID&Quality&StartTime&EndTime\r\n"
    "Church bell&RUhOCu3LNXM&good&0&10\r\n"
    "Bark&-0A9suni5YA&good&2&7\r\n"
    "\r\n"
    "Male speech, man speaking&--abc_DEF12&bad&5&8\r\n"
)


def test_read_annotations_header_dash_ids(tmp_path: Path) -> None:
    path = tmp_path / "Annotations.txt"
    path.write_bytes(ANNOTATIONS.encode())
    entries = ave.read_ave_annotations(path)
    assert [e.video_id for e in entries] == ["RUhOCu3LNXM", "-0A9suni5YA", "--abc_DEF12"]
    assert entries[2].category == "Male speech, man speaking" and (entries[2].start, entries[2].end) == (5, 8)
    # Without the header the same entries come back.
    path.write_text("\n".join(ANNOTATIONS.splitlines()[1:]))
    assert ave.read_ave_annotations(path) == entries
    assert ave.ave_classes(entries) == list(ave.AVE_CATEGORIES)
    labels = ave.segment_labels(entries[1], 2, 28)
    assert labels.tolist() == [28, 28, 2, 2, 2, 2, 2, 28, 28, 28]


@pytest.mark.parametrize(
    ("line", "problem"),
    [("Bark&abc&good&2", "expected 5"), ("Bark&abc&good&x&7", "integer seconds"), ("Bark&abc&good&7&7", "empty")],
)
def test_bad_annotation_lines(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "trainSet.txt"
    path.write_text("Church bell&RUhOCu3LNXM&good&0&10\n" + line + "\n")
    with pytest.raises(DataError, match=rf"trainSet.txt:2: .*{problem}"):
        ave.read_ave_annotations(path)
    with pytest.raises(DataError, match="cannot read"):
        ave.read_ave_annotations(tmp_path / "missing.txt")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small set in the real layout: (N, 10, 7, 7, 512) visual, (N, 10, 128) audio, (N, 10, K) labels."""
    return write_synthetic_ave(tmp_path_factory.mktemp("ave_real"), num_videos=10, num_classes=3, num_noisy=2)


def test_annotations_conversion(release: Path) -> None:
    annotations, classes = ave.load_ave_annotations(release)
    assert classes == ["class 0, synthetic", "class 1, synthetic", "class 2, synthetic"]
    db = annotations["database"]
    assert len(db) == 10 and "-vid0000" in db
    assert {v["subset"] for v in db.values()} == {"train", "validation", "test"}
    labels = ave.read_h5_array(release / ave.LABELS_FILE)
    for row, entry in enumerate(ave.read_ave_annotations(release / "Annotations.txt")):
        (event,) = db[entry.video_id]["annotations"]
        start, end = event["segment"]
        expected = ave.segment_labels(entry, event["label_id"], 3)
        assert labels[row].argmax(-1).tolist() == expected.tolist()
        assert db[entry.video_id]["duration"] == 10.0 and labels[row, int(start), event["label_id"]] == 1
        assert 0 <= start < end <= 10


def test_hdf5_dataset_real_layout(release: Path) -> None:
    test = ave.AVEFeatureDataset(release, "test")
    order = ave.read_h5_array(release / ave.ORDER_FILES["test"], "order")
    item = test[0]
    assert item["visual"].shape == (10, 7, 7, 512) and item["audio"].shape == (10, 128)
    row = int(order[0])
    assert int(item["row"]) == row
    assert np.allclose(item["audio"].numpy(), ave.read_h5_array(release / ave.AUDIO_FILE)[row])
    assert item["segment"].tolist() == ave.read_h5_array(release / ave.LABELS_FILE)[row].argmax(-1).tolist()
    batch = segments.collate_segments([test[i] for i in range(len(test))])
    assert batch["audio"].shape == (len(test), 10, 128) and batch["mask"].all()


def test_hdf5_errors(release: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        ave.AVEFeatureDataset(tmp_path, "train")
    bad = tmp_path / "bad.h5"
    ave.write_h5_array(bad, np.zeros(3), key="features")
    with pytest.raises(DataError, match="no dataset 'avadataset'"):
        ave.read_h5_array(bad)
    with pytest.raises(DataError, match="split must be"):
        ave.AVEFeatureDataset(release, "dev")


def test_weak_training_reads_no_segment_label(release: Path, tmp_path: Path) -> None:
    """Weak training works with labels.h5 gone: only mil_labels.h5 and the noisy files are read."""
    weak_root = tmp_path / "weak"
    weak_root.mkdir()
    for f in release.iterdir():
        if f.name != ave.LABELS_FILE:
            (weak_root / f.name).symlink_to(f)
    train = ave.AVEFeatureDataset(weak_root, "train", setting="weak")
    clean = len(ave.read_h5_array(release / ave.ORDER_FILES["train"], "order"))
    assert len(train) == clean + 2  # the background-only videos are appended
    for i in range(len(train)):
        assert "segment" not in train[i]
    assert train[len(train) - 1]["video"].tolist() == [0, 0, 0, 1]
    assert batch_targets(segments.collate_segments([train[0], train[1]])).segment is None
    with pytest.raises(DataError, match="not found"):
        ave.AVEFeatureDataset(weak_root, "test")  # evaluation needs the segment labels


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_report_and_confusion_png(tmp_path: Path) -> None:
    target = np.array([[0, 0, 1, 2], [2, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 2], [2, 2, 0, 1]])
    report = segment_report(pred, target, ["a", "b", "Background"])
    assert report.accuracy == pytest.approx(75.0)
    assert report.table() == [("a", 2, 50.0), ("b", 2, 100.0), ("Background", 4, 75.0)]
    png = save_confusion_png(report.confusion, report.class_names, report.accuracy, tmp_path / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert background_only_accuracy(target, 2) == pytest.approx(50.0)


# ---------------------------------------------------------------------------------------------- extractor


def _fake_net(frames: torch.Tensor) -> torch.Tensor:
    """Stand-in frame network: the (normalised) red-channel mean of each frame on every map cell."""
    return frames[:, 0].mean(dim=(1, 2))[:, None, None, None].expand(-1, 512, 7, 7).clone()


def _video(values: list[int], chunk: int = 5) -> VisualInput:
    frames = np.stack([np.full((224, 224, 3), v, dtype=np.uint8) for v in values])
    return VisualInput(
        chunks=[frames[i : i + chunk] for i in range(0, len(frames), chunk)], fps=16.0, duration=len(values) / 16
    )


def _expected(value: float) -> float:
    return (value - 0.485 * 255) / (0.229 * 255)


def test_vgg19_segments_average_16_frames() -> None:
    values = [10] * 16 + [200] * 8 + [100] * 8
    extractor = vgg19_vggish.VGG19Segments(_fake_net, batch_size=7)
    feats = extractor(_video(values))
    assert feats.values.shape == (2, vgg19_vggish.DIM) and feats.times.tolist() == [[0.0, 1.0], [1.0, 2.0]]
    maps = feats.values.reshape(2, 7, 7, 512)
    assert np.allclose(maps[0], _expected(10), atol=1e-4)
    assert np.allclose(maps[1], (_expected(200) + _expected(100)) / 2, atol=1e-4)


def test_vgg19_segments_pad_short_videos() -> None:
    """A clip whose decode ends early: missing frames repeat the last one; extra frames are ignored."""
    extractor = vgg19_vggish.VGG19Segments(_fake_net, num_rows=lambda d: 2)
    feats = extractor(_video([50] * 16 + [150] * 4))
    assert np.allclose(feats.values[1], _expected(150), atol=1e-4)
    feats = vgg19_vggish.VGG19Segments(_fake_net, num_rows=lambda d: 1)(_video([50] * 16 + [250] * 16))
    assert np.allclose(feats.values[0], _expected(50), atol=1e-4)
    with pytest.raises(DataError):
        extractor(VisualInput(chunks=[], fps=16.0, duration=2.0))
    assert [vgg19_vggish.segment_rows(d) for d in (9.98, 10.0, 10.02, 0.3)] == [10, 10, 10, 1]


@pytest.mark.slow  # builds the full VGG19 twice
def test_vgg19_architecture_and_weights(tmp_path: Path) -> None:
    model = vgg19_vggish.load_vgg19(random_weights=True)
    convs = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]  # torchvision's features.N indices
    assert sorted(model.state_dict()) == sorted(f"features.{i}.{p}" for i in convs for p in ("weight", "bias"))
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 512, 7, 7)
    # A torchvision-style checkpoint (features + classifier) loads; the classifier is ignored.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / vgg19_vggish.WEIGHTS_FILE
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = vgg19_vggish.load_vgg19(str(tmp_path), expected_sha256=digest)
    assert torch.equal(loaded.features[0].weight, model.features[0].weight)
    with pytest.raises(WeightsError, match="SHA-256"):
        vgg19_vggish.load_vgg19(str(tmp_path))  # not the canonical file: its checksum prefix differs
    with pytest.raises(WeightsError, match="not found"):
        vgg19_vggish.load_vgg19(str(tmp_path / "empty"))


@pytest.mark.slow  # builds the full VGG19 (random weights)
def test_build_spec() -> None:
    ext = vgg19_vggish.build(random_weights=True)
    assert ext.name == "vgg19_vggish" and ext.dims == (25088, 128)
    assert ext.media.fps == 16.0 and ext.media.size == (224, 224)
    assert ext.audio.step_s == 1.0 and ext.spec["visual_map"] == [7, 7, 512]


def test_grid_labels_and_run_merging() -> None:
    anns = [{"segment": [2.0, 5.0], "label_id": 1}, {"segment": [7.0, 10.0], "label_id": 0}]
    labels = ave.grid_segment_labels(anns, 10, background=3)
    assert labels.tolist() == [3, 3, 1, 1, 1, 3, 3, 0, 0, 0]
    scores = np.full((10, 4), 0.1)
    scores[2:5, 1] = [0.9, 0.6, 0.9]
    events = ave.merge_segment_runs(labels, scores, ["a", "b", "c", "bg"], background=3)
    assert [(e.label, e.start, e.end) for e in events] == [("b", 2.0, 5.0), ("a", 7.0, 10.0)]
    assert events[0].score == pytest.approx(0.8) and events[1].score == pytest.approx(0.1)
    assert ave.merge_segment_runs(np.array([3, 3]), np.zeros((2, 4)), ["a", "b", "c", "bg"], 3) == []
