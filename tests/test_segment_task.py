"""The segment task (AVE) on the shared pipeline: LoCo-AVEL, config checks, `avdet train` / `eval` / `detect` on
the AVE HDF5 layout and on raw generated clips through the feature store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avdet.cli import app
from avdet.errors import ConfigError
from avdet.models.loco import LoCo, LoCoConfig
from avdet.models.segment_losses import segment_logits
from avdet.pipeline.config import load_config
from avdet.pipeline.data import ave, segments
from avdet.pipeline.metrics import cross_modal
from avdet.pipeline.metrics.accuracy import background_only_accuracy
from avdet.pipeline.synth.ave_features import write_synthetic_ave
from avdet.pipeline.train import Reporter, train

pytestmark = pytest.mark.slow  # its module fixtures train CCLN and LoCo-AVEL models and run the CLI end to end

runner = CliRunner()

CCLN_SMALL = {
    "model.num_classes": 4,
    "model.audio_dim": 16,
    "model.visual_dim": 32,
    "model.d_model": 32,
    "model.ffn_dim": 64,
    "model.agva_hidden": 32,
    "model.agva_att": 8,
    "train.batch_size": 16,
    "train.lr": 0.003,
    "train.device": "cpu",
    # The paper's 150 / 25 let the FEE term dominate a set this small (tuned on the real AVE).
    "segment_loss.fee_weight": 1.0,
    "segment_loss.wccl_weight": 1.0,
}
LOCO_SMALL = {
    "model.num_classes": 4,
    "model.audio_dim": 16,
    "model.visual_dim": 32,
    "model.embed_dim": 32,
    "model.head_dim": 32,
    "model.encoder_layers": 1,
    "train.warmup_epochs": 1,
    "train.batch_size": 16,
    "train.lr": 0.002,
    "train.ema_decay": 0.9,
    "train.device": "cpu",
}


def _overrides(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def h5_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learnable AVE-style set in the release's HDF5 layout (small maps and dims), with noisy videos."""
    root = tmp_path_factory.mktemp("ave_h5")
    return write_synthetic_ave(
        root, num_videos=120, num_classes=4, num_noisy=16, visual_shape=(2, 2, 32), audio_dim=16, seed=1
    )


@pytest.fixture
def one_thread():
    """Small models train faster on one thread than fighting over shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- data


def test_pool_segments() -> None:
    rows = np.arange(8, dtype=np.float32)[:, None].repeat(2, axis=1)  # (8, 2), row i holds i
    centres = (np.arange(8) + 0.5) * 0.5  # two rows per 1 s segment
    assert segments.pool_segments(rows, centres, 4, 1.0)[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5]
    one_per_second = np.arange(3, dtype=np.float32)[:, None]
    same = segments.pool_segments(one_per_second, np.arange(3) + 0.5, 3, 1.0)
    assert same[:, 0].tolist() == [0.0, 1.0, 2.0]
    coarse = segments.pool_segments(np.array([[1.0], [5.0]], np.float32), np.array([0.5, 2.5]), 3, 1.0)
    assert coarse[:, 0].tolist() == [1.0, 1.0, 5.0]  # segment 1 has no row centre: nearest row
    assert segments.num_segments(9.98, 1.0) == 10 and segments.num_segments(0.2, 1.0) == 1


def test_collate_pads_shorter_videos() -> None:
    def item(n: int) -> dict:
        return {
            "video_id": f"v{n}",
            "audio": torch.ones(n, 3),
            "visual": torch.ones(n, 2, 2, 4),
            "mask": torch.ones(n, dtype=torch.bool),
            "video": torch.zeros(5),
            "segment": torch.zeros(n, dtype=torch.long),
        }

    batch = segments.collate_segments([item(3), item(5)])
    assert batch["video_id"] == ["v3", "v5"]
    assert batch["visual"].shape == (2, 5, 2, 2, 4) and batch["mask"].sum(dim=1).tolist() == [3, 5]
    assert batch["segment"][0].tolist() == [0, 0, 0, -1, -1] and batch["audio"][0, 3:].abs().sum() == 0


def test_weak_store_dataset_yields_no_segment_label() -> None:
    class Source:
        def load(self, vid: str):
            from avdet.pipeline.data.sources import VideoFeatures
            from avdet.pipeline.types import TimeGrid

            return VideoFeatures(
                vid, 4.0, np.ones((12, 2), np.float32), np.ones((12, 3), np.float32), TimeGrid(0.16, 0.32)
            )

    ann = {"database": {"a": {"subset": "train", "duration": 4.0, "annotations": [{"segment": [1, 3], "label_id": 1}]}}}
    weak = segments.SegmentDataset(Source(), ann, ["a"], 3, weak_training=True)[0]
    assert "segment" not in weak and weak["video"].tolist() == [0, 1, 0] and weak["audio"].shape == (4, 2)
    full = segments.SegmentDataset(Source(), ann, ["a"], 3)[0]
    assert full["segment"].tolist() == [2, 1, 1, 2]


# ---------------------------------------------------------------------------------------------- LoCo-AVEL


@pytest.mark.parametrize("spatial", ["mean", "audio_attention"])
def test_loco_avel_shapes_masks_gradients(spatial: str) -> None:
    torch.manual_seed(0)
    cfg = LoCoConfig(
        visual_dim=8, audio_dim=6, num_classes=3, max_seq_len=12, num_levels=3, window_size=4, embed_dim=16,
        num_heads=2, lac_heads=2, head_dim=16, encoder_layers=1, drop_path=0.0, head="segment", spatial=spatial,
    )  # fmt: skip
    model = LoCo(cfg)
    assert model.reg_head is None and (model.spatial is not None) == (spatial == "audio_attention")
    audio, visual = torch.randn(2, 12, 6), torch.randn(2, 12, 2, 2, 8)
    mask = torch.arange(12)[None] < torch.tensor([[10], [7]])
    out = model(audio, visual, mask)
    assert [x.shape for x in out.cls_logits] == [(2, 12, 4), (2, 6, 4), (2, 3, 4)] and out.offsets == []
    logits = segment_logits(out, 10)
    assert logits.shape == (2, 10, 4)
    # the flattened layout (how the store keeps vgg19_vggish rows) gives the same outputs
    flat = model(audio, visual.reshape(2, 12, -1), mask)
    assert torch.allclose(segment_logits(flat, 10), logits, atol=1e-6)
    # padded steps do not leak into valid ones, whatever they hold
    model.eval()
    noisy_v, noisy_a = visual.clone(), audio.clone()
    noisy_v[~mask], noisy_a[~mask] = 100.0, -100.0
    ref = segment_logits(model(audio, visual, mask), 10)
    moved = segment_logits(model(noisy_a, noisy_v, mask), 10)
    assert torch.allclose(ref[mask[:, :10]], moved[mask[:, :10]], atol=1e-5)
    # every parameter gets a gradient from the segment loss (+ LCF) in training
    model.train()
    from avdet.models.loss_config import SegmentLossConfig
    from avdet.models.segment_losses import SegmentTargets, segment_loss

    labels = torch.randint(0, 4, (2, 10)).masked_fill(~mask[:, :10], -1)
    video = torch.nn.functional.one_hot(labels.clamp(min=0), 4).float().amax(dim=1)
    loss, parts = segment_loss(model(audio, visual, mask), SegmentTargets(video, labels), SegmentLossConfig())
    assert "lcf" in parts
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="does not support task 'dense'"):
        load_config("ccln_ave", ["task=dense"])
    with pytest.raises(ConfigError, match="needs model.head: segment"):
        load_config("loco_ave", ["model.head=detection"])
    with pytest.raises(ConfigError, match="needs model.head: detection"):
        load_config("tiny", ["model.head=segment"])
    with pytest.raises(ConfigError, match="must agree"):
        load_config("ccln_ave", ["segment_loss.setting=weak"])
    with pytest.raises(ConfigError, match="use it with task: segment"):
        load_config("tiny", ["data.source=ave_h5", "data.ave_root=x"])
    assert load_config("loco_ave").model_config().num_levels == 3


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def ccln_run(h5_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ccln_run")
    cfg = load_config("ccln_ave", _overrides({**CCLN_SMALL, "data.ave_root": h5_set, "train.epochs": 15}))
    result = train(cfg, run)
    (run / "result.json").write_text(json.dumps({"best": result.best_metric, "metric": result.metric}))
    return run


def test_tiny_ccln_learns_full(ccln_run: Path, h5_set: Path) -> None:
    result = json.loads((ccln_run / "result.json").read_text())
    assert result["metric"] == "val_accuracy"
    labels = ave.read_h5_array(h5_set / ave.LABELS_FILE).argmax(-1)
    floor = background_only_accuracy(labels[ave.read_h5_array(h5_set / "val_order.h5", "order")], 4)
    assert result["best"] > floor + 30, (result, floor)


def test_tiny_ccln_learns_weak(h5_set: Path, tmp_path: Path, one_thread: None) -> None:
    """Weak training sees video-level labels only; segment accuracy still clears always-background."""
    overrides = {**CCLN_SMALL, "data.ave_root": h5_set, "train.epochs": 15}
    result = train(load_config("ccln_ave_weak", _overrides(overrides)), tmp_path)
    labels = ave.read_h5_array(h5_set / ave.LABELS_FILE).argmax(-1)
    floor = background_only_accuracy(labels[ave.read_h5_array(h5_set / "val_order.h5", "order")], 4)
    assert result.best_metric > floor + 10, (result.best_metric, floor)


@pytest.fixture(scope="module")
def loco_run(h5_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoCo-AVEL (mean-pooled maps, so its embeddings also serve cross-modal localization)."""
    run = tmp_path_factory.mktemp("loco_run")
    overrides = {**LOCO_SMALL, "data.ave_root": h5_set, "train.epochs": 40, "train.eval_start": 30}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(load_config("loco_ave", _overrides({**overrides, "model.spatial": "mean"})), run)
    finally:
        torch.set_num_threads(before)
    (run / "result.json").write_text(json.dumps({"best": result.best_metric}))
    return run


def test_tiny_loco_avel_learns(loco_run: Path, h5_set: Path) -> None:
    best = json.loads((loco_run / "result.json").read_text())["best"]
    labels = ave.read_h5_array(h5_set / ave.LABELS_FILE).argmax(-1)
    floor = background_only_accuracy(labels[ave.read_h5_array(h5_set / "val_order.h5", "order")], 4)
    assert best > floor + 30, (best, floor)


def test_cml_hand_cases() -> None:
    assert cross_modal.event_span(np.array([4, 1, 1, 4, -1]), 4) == (1, 3)
    assert cross_modal.event_span(np.array([1, 1, -1]), 4) is None  # fills every valid segment
    assert cross_modal.event_span(np.array([4, 4]), 4) is None
    candidates = torch.eye(5)  # step t is the unit vector e_t
    assert cross_modal.best_window(torch.eye(5)[2:4], candidates) == 2
    assert cross_modal.best_window(torch.zeros(2, 5), candidates) == 0  # ties: the earliest window


def test_cml_with_exact_and_blind_embeddings() -> None:
    """Embeddings that identify each segment's content localize every event; constant ones pick window 0."""

    class Exact(torch.nn.Module):
        def correspondence_embeddings(self, audio, visual, mask):
            return torch.nn.functional.normalize(audio, dim=-1), torch.nn.functional.normalize(visual, dim=-1)

    class Blind(Exact):
        def correspondence_embeddings(self, audio, visual, mask):
            ones = torch.ones(*audio.shape[:2], 3)
            return ones, ones

    def item(start: int, end: int) -> dict:
        content = torch.randn(10, 6)
        labels = torch.full((10,), 2)
        labels[start:end] = 0
        return {"audio": content, "visual": content.clone(), "mask": torch.ones(10, dtype=torch.bool),
                "video": torch.tensor([1.0, 0.0, 0.0]), "segment": labels}  # fmt: skip

    torch.manual_seed(0)
    data = [item(3, 6), item(0, 4), item(0, 10), item(7, 9)]  # the third fills the clip: left out
    exact = cross_modal.evaluate_cml(Exact(), data)
    assert (exact.a2v, exact.v2a, exact.videos) == (100.0, 100.0, 3)
    assert exact.chance == pytest.approx(100 * (1 / 8 + 1 / 7 + 1 / 9) / 3)
    blind = cross_modal.evaluate_cml(Blind(), data)
    assert blind.a2v == pytest.approx(100 / 3) and blind.v2a == pytest.approx(100 / 3)


def test_cli_eval_cml(loco_run: Path, ccln_run: Path, tmp_path: Path) -> None:
    res = _invoke("eval", "--checkpoint", loco_run / "best.ckpt", "--cml", "--json", tmp_path / "cml.json")
    assert res.exit_code == 0, res.output
    assert "Cross-modal localization" in res.output
    scores = json.loads((tmp_path / "cml.json").read_text())
    assert max(scores["a2v"], scores["v2a"]) > scores["chance"] + 10, scores
    res = _invoke("eval", "--checkpoint", ccln_run / "best.ckpt", "--cml")
    assert res.exit_code == 1 and "no cross-modal embedding space" in res.output


def test_segment_resume_is_exact(h5_set: Path, tmp_path: Path) -> None:
    """Constant schedule: 1 epoch + --resume to 2 epochs ends with the weights of a straight 2-epoch run."""
    base = {**CCLN_SMALL, "data.ave_root": h5_set}
    straight = train(load_config("ccln_ave", _overrides({**base, "train.epochs": 2})), tmp_path / "a")
    train(load_config("ccln_ave", _overrides({**base, "train.epochs": 1})), tmp_path / "b")
    ran: list[int] = []
    resumed = train(
        load_config("ccln_ave", _overrides({**base, "train.epochs": 2})),
        tmp_path / "b",
        resume=True,
        reporter=Reporter(epoch=lambda epoch, metrics: ran.append(epoch)),
    )
    assert ran == [1]  # it continued (a silent restart would run epoch 0 again and end with the same weights)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    a = torch.load(straight.run_dir / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed.run_dir / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_eval_segment_checkpoint(ccln_run: Path, tmp_path: Path) -> None:
    res = _invoke(
        "eval", "--checkpoint", ccln_run / "best.ckpt", "--json", tmp_path / "s.json", "--confusion", tmp_path / "c.png"
    )
    assert res.exit_code == 0, res.output
    assert "Segment accuracy" in res.output and "always background" in res.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["accuracy"] > scores["background_only"] + 20
    assert set(scores["per_class"]) == {*(f"class {i}, synthetic" for i in range(4)), "Background"}
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    missing = _invoke("eval", "--checkpoint", ccln_run / "best.ckpt", "--ave-root", tmp_path)
    assert missing.exit_code == 1 and "not found" in missing.output


# ---------------------------------------------------------------------------------------------- raw clips


@pytest.fixture(scope="module")
def ave_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated AVE-style clips (make-sample --ave) with `lite` features in a store."""
    root = tmp_path_factory.mktemp("ave_clips")
    res = _invoke("make-sample", root, "--ave", "--videos", 40, "--seed", 3)
    assert res.exit_code == 0, res.output
    res = _invoke("extract", root / "videos", "--cache", root / "cache", "--workers", 2)
    assert res.exit_code == 0, res.output
    return root


def test_cli_train_eval_detect_from_raw_clips(ave_clips: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = {"data.annotations": ave_clips, "data.classes": ave_clips / "classes.tsv", "data.cache": ave_clips / "cache"}
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    res = _invoke("train", "--config", "tiny_ave", "--run-dir", run, "--set", "train.device=cpu", *args)
    assert res.exit_code == 0, res.output
    assert "best validation accuracy" in res.output

    res = _invoke("eval", "--checkpoint", run / "best.ckpt", "--split", "validation", "--json", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    scores = json.loads((tmp_path / "v.json").read_text())
    assert scores["accuracy"] > scores["background_only"] + 15, scores

    video = next(iter(sorted((ave_clips / "videos").glob("*.mp4"))))
    out = tmp_path / "events.json"
    res = _invoke("detect", video, "--checkpoint", run / "best.ckpt", "--cache", ave_clips / "cache", "--out", out)
    assert res.exit_code == 0, res.output
    events = json.loads(out.read_text())["events"]
    classes = [line.split("\t")[1] for line in (ave_clips / "classes.tsv").read_text().splitlines()[1:]]
    for e in events:  # merged runs of whole 1 s segments, named by the class list
        assert e["label"] == classes[e["label_id"]] and 0 < e["score"] <= 1
        assert float(e["start"]).is_integer() and float(e["end"]).is_integer() and 0 <= e["start"] < e["end"] <= 10
    res = _invoke(
        "detect", video, "--checkpoint", run / "best.ckpt", "--cache", ave_clips / "cache", "--out", tmp_path / "e.vtt"
    )
    assert res.exit_code == 0 and (tmp_path / "e.vtt").read_text().startswith("WEBVTT")
