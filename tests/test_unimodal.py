"""Audio-only and visual-only detection (`model.modality`): models, ground truth per modality, and the CLI end to end
(train, eval, detect) on generated data; audio-only detection never decodes a frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avdet.cli import app
from avdet.models.ccnet import CCNetConfig
from avdet.models.loco import LoCo, LoCoConfig
from avdet.models.unav import UnAV, UnAVConfig
from avdet.pipeline.io import media
from avdet.pipeline.synth.clips import SampleConfig, annotations, plan_dataset
from conftest import SampleSet, make_clip

pytestmark = pytest.mark.slow  # its module fixture trains an audio-only model on the sample set

runner = CliRunner()
TINY = {"visual_dim": 12, "audio_dim": 8, "num_classes": 3, "max_seq_len": 32, "embed_dim": 16, "num_heads": 2}
TINY = {**TINY, "num_levels": 3, "head_dim": 16, "drop_path": 0.0}


def _inputs(length: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    audio, visual = torch.randn(2, length, 8, generator=g), torch.randn(2, length, 12, generator=g)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 20:] = False
    return audio, visual, mask


def _models(modality: str) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    loco = LoCo(LoCoConfig(**TINY, modality=modality, lcf="none", window_size=4, lac_heads=2, encoder_layers=1))
    unav = UnAV(UnAVConfig(**TINY, modality=modality, self_attn_layers=1))
    return [loco.eval(), unav.eval()]


@pytest.mark.parametrize("modality", ["audio", "visual"])
def test_unimodal_models_read_only_their_stream(modality: str) -> None:
    other = "visual" if modality == "audio" else "audio"
    audio, visual, mask = _inputs()
    for model in _models(modality):
        names = {n.split(".")[0] for n, _ in model.named_parameters()}
        assert not any(n.startswith(other) for n in names), names  # no encoder, stem or pyramid of the other one
        assert "lcf" not in names
        out = model(audio, visual, mask)
        # the other stream changes nothing, and may be left out (zero channels)
        noise = torch.randn_like(visual if other == "visual" else audio)
        swapped = model(audio, noise, mask) if other == "visual" else model(noise, visual, mask)
        empty = model(audio, visual[..., :0], mask) if other == "visual" else model(audio[..., :0], visual, mask)
        for a, b, c in zip(out.cls_logits, swapped.cls_logits, empty.cls_logits, strict=True):
            assert torch.equal(a, b) and torch.equal(a, c)
        # and its own stream matters
        changed = model(audio * 2, visual, mask) if modality == "audio" else model(audio, visual * 2, mask)
        assert not torch.equal(out.cls_logits[0], changed.cls_logits[0])
        assert out.cls_logits[0].shape == (2, 32, 3) and len(out.cls_logits) == 3


def test_audio_visual_models_read_both_streams() -> None:
    """The default modality keeps every cross-modal part, and each stream changes the output."""
    audio, visual, mask = _inputs()
    torch.manual_seed(0)
    unav = UnAV(UnAVConfig(**TINY, self_attn_layers=1)).eval()
    torch.manual_seed(0)
    loco = LoCo(LoCoConfig(**TINY, window_size=4, lac_heads=2, encoder_layers=1)).eval()
    assert {"visual_embed", "audio_embed", "visual_cross", "audio_cross"} <= {
        n.split(".")[0] for n, _ in unav.named_parameters()
    }
    assert loco.lcf is not None and type(loco.pyramid).__name__ == "LACPyramid"
    for model in (unav, loco):
        out = model(audio, visual, mask).cls_logits[0]
        assert not torch.equal(out, model(audio * 2, visual, mask).cls_logits[0])
        assert not torch.equal(out, model(audio, visual * 2, mask).cls_logits[0])


def test_cross_modal_parts_are_refused_for_one_stream() -> None:
    # LCF aligns two streams: a one-stream LoCo drops it (one switch, `modality`, is enough; issue 27)
    assert LoCoConfig(**TINY, modality="audio").lcf == "none"  # lcf defaults to adaptive_gaussian
    with pytest.raises(ValueError, match="modality must be audio_visual"):
        CCNetConfig(**TINY, modality="visual")
    with pytest.raises(ValueError, match="modality must be one of"):
        UnAVConfig(**TINY, modality="sound")


def test_ground_truth_per_modality_is_what_was_placed() -> None:
    cfg = SampleConfig(num_videos=20, seed=3)
    plans = plan_dataset(cfg)
    av, audio, visual = (annotations(plans, cfg, m)["database"] for m in ("audio_visual", "audio", "visual"))
    kinds = {o.kind for p in plans for o in p.occurrences}
    assert {"audio_only", "visual_only"} <= kinds  # the generator places distractors of both kinds
    for plan in plans:

        def spans(db: dict, vid: str = plan.video_id) -> list[tuple]:
            return [(tuple(e["segment"]), e["label_id"]) for e in db[vid]["annotations"]]

        def placed(keep, plan=plan) -> list[tuple]:
            return [((round(o.start, 4), round(o.end, 4)), o.label_id) for o in plan.occurrences if keep(o)]

        assert spans(audio) == placed(lambda o: o.kind in ("event", "audio_only"))
        assert spans(visual) == placed(lambda o: o.kind in ("event", "visual_only"))
        assert set(spans(av)) == set(spans(audio)) & set(spans(visual))


@pytest.fixture(scope="module")
def audio_run(sample_set: SampleSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny audio-only LoCo trained through the CLI on the audible ground truth of the shared sample set."""
    run_dir = tmp_path_factory.mktemp("audio_run")
    overrides = sample_set.overrides(train__epochs=3, train__eval_start=0, train__warmup_epochs=1)
    overrides = [o for o in overrides if not o.startswith("data.annotations=")]
    overrides += [f"data.annotations={sample_set.root / 'annotations_audio.json'}", "model.modality=audio"]
    overrides += ["model.lcf=none"]
    args = ["train", "--config", "tiny", "--run-dir", str(run_dir)]
    for o in overrides:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return run_dir


def test_unimodal_train_eval_detect_through_the_cli(
    audio_run: Path, sample_set: SampleSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = tmp_path / "scores.json"
    res = runner.invoke(app, ["eval", "--checkpoint", str(audio_run / "best.ckpt"), "--json", str(scores)])
    assert res.exit_code == 0, res.output
    assert 0.0 <= json.loads(scores.read_text())["average_mAP"] <= 1.0

    # audio-only detection on a fresh cache decodes no frame at all
    def no_frames(*args, **kwargs):
        raise AssertionError("an audio-only model decoded video frames")

    monkeypatch.setattr(media, "read_frames", no_frames)
    clip = sorted((sample_set.root / "videos").glob("*.mp4"))[0]
    out = tmp_path / "events.json"
    args = ["detect", str(clip), "--checkpoint", str(audio_run / "best.ckpt"), "--out", str(out)]
    res = runner.invoke(app, [*args, "--cache", str(tmp_path / "fresh_cache")])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["video"] == clip.stem and isinstance(doc["events"], list)


def test_an_audio_model_reuses_full_features_and_takes_audio_files(audio_run: Path, sample_set: SampleSet) -> None:
    from avdet.pipeline.detect import Detector
    from avdet.pipeline.io.store import FeatureStore

    clip = sorted((sample_set.root / "videos").glob("*.mp4"))[1]
    det = Detector(audio_run / "best.ckpt", cache=sample_set.cache)
    (found,) = det.detect([clip])
    assert found.error is None
    store = FeatureStore(sample_set.cache)
    (audio_key,) = [key for key, spec in store.specs("lite") if spec.get("modality") == "audio"]
    assert not list((sample_set.cache / audio_key).rglob("*.npz"))  # served from the full extraction

    audio_file = make_clip(sample_set.root / "sound_only.m4a", 6.0, video=False)
    (found,) = det.detect([audio_file])
    assert found.error is None, found.error  # an audio model detects in a file without video


def test_combined_timeline_marks_each_events_modality(
    audio_run: Path, trained_run: Path, sample_set: SampleSet, tmp_path: Path
) -> None:
    from avdet.pipeline.detect import CombinedDetector, Detector
    from avdet.pipeline.io.writers import read_events_file, sorted_events, write_events_file

    clip = sorted((sample_set.root / "videos").glob("*.mp4"))[2]
    detectors = [Detector(run / "best.ckpt", cache=sample_set.cache) for run in (trained_run, audio_run)]
    (combined,) = CombinedDetector(detectors).run([clip])
    alone = [next(d.run([clip])) for d in detectors]
    assert {e.modality for e in combined.events} == {"audio_visual", "audio"}
    assert len(combined.events) == sum(len(d.events) for d in alone)
    assert sorted((e.label, e.start, e.score) for e in combined.events if e.modality == "audio") == sorted(
        (e.label, e.start, e.score) for e in alone[1].events
    )
    srt, doc = tmp_path / "both.srt", tmp_path / "both.json"
    for target in (srt, doc):
        write_events_file(target, combined.events[:5], video=clip.stem, duration=combined.duration, model="x")
    assert "(audio only, " in srt.read_text() or "(audio-visual, " in srt.read_text()
    _, _, back = read_events_file(doc)
    assert [e.modality for e in back] == [e.modality for e in sorted_events(combined.events[:5])]


def test_detect_with_several_checkpoints_writes_one_marked_timeline(
    audio_run: Path, trained_run: Path, sample_set: SampleSet, tmp_path: Path
) -> None:
    clip = sorted((sample_set.root / "videos").glob("*.mp4"))[3]
    out = tmp_path / "both.srt"
    args = ["detect", str(clip), "--checkpoint", str(trained_run / "best.ckpt")]
    args += ["--checkpoint", str(audio_run / "best.ckpt"), "--threshold", "0", "--out", str(out)]
    res = runner.invoke(app, [*args, "--cache", str(sample_set.cache)])
    assert res.exit_code == 0, res.output
    cues = out.read_text()
    assert "(audio-visual, " in cues and "(audio only, " in cues
