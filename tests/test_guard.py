"""Nothing a user made is overwritten (outputs never replace inputs; avdet replaces only files it wrote unless
--overwrite), one training run per run folder (a lock held by the process), pre-flight checks of configs,
checkpoints and annotations, and inputs that used to stop or mislead a batch (unreadable files, still images, long
and odd file names, closed pipes, a missing GPU, a silent video)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_detect_fixed import _fixed_checkpoint
from typer.testing import CliRunner

from avdet.cli import app
from avdet.errors import CheckpointError, ConfigError, DataError
from conftest import make_clip

runner = CliRunner()
AVDET = [sys.executable, "-m", "avdet"]


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkpoint, a 3 s clip with sound, feature cache): a seeded tiny LoCo, no training."""
    root = tmp_path_factory.mktemp("guard")
    return _fixed_checkpoint(root / "fixed.ckpt"), make_clip(root / "clip.mp4", 3.0), root / "cache"


def _detect(fixed: tuple[Path, Path, Path], *args: object):
    ckpt, _, cache = fixed
    argv = ["detect", *map(str, args), "--checkpoint", str(ckpt), "--cache", str(cache), "--device", "cpu"]
    return runner.invoke(app, argv)


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


# -- item 1: outputs never replace inputs, nor files avdet did not make -----------------------------------------------
@pytest.mark.parametrize("option", [["--format", "json", "--out"], ["--format", "srt", "--out"], ["--plot"]])
def test_detect_refuses_to_write_over_its_video(fixed, tmp_path: Path, option: list[str]) -> None:
    video = _copy(fixed[1], tmp_path / "clip.mp4")
    before = video.read_bytes()
    res = _detect(fixed, video, *option, video)
    assert res.exit_code == 1
    assert "would replace the video" in res.output
    assert video.read_bytes() == before


def test_detect_refuses_to_write_over_its_checkpoint_even_through_a_link(fixed, tmp_path: Path) -> None:
    ckpt = fixed[0]
    before = ckpt.read_bytes()
    link = tmp_path / "events.json"
    link.symlink_to(ckpt)
    for target in (ckpt, link):
        res = _detect(fixed, fixed[1], "--out", target, "--format", "json")
        assert res.exit_code == 1, res.output
        assert "would replace the checkpoint" in res.output
    hard = tmp_path / "hard.json"
    os.link(ckpt, hard)  # another name for the same inode: still the checkpoint
    assert _detect(fixed, fixed[1], "--out", hard).exit_code == 1
    assert ckpt.read_bytes() == before


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_detect_replaces_its_own_outputs_but_not_a_users_file(fixed, tmp_path: Path) -> None:
    for name in ("events.json", "events.srt", "events.vtt"):
        out = tmp_path / name
        assert _detect(fixed, fixed[1], "--out", out).exit_code == 0
        assert _detect(fixed, fixed[1], "--out", out).exit_code == 0, f"a second run may replace its own {name}"
    png = tmp_path / "timeline.png"
    assert _detect(fixed, fixed[1], "--plot", png).exit_code == 0
    assert _detect(fixed, fixed[1], "--plot", png).exit_code == 0
    mine = {
        "notes.json": '{"my": "notes"}',
        "film.srt": "1\n00:00:01,000 --> 00:00:02,000\nHello there\n\n",
        "film.vtt": "WEBVTT\n\n1\n00:00:01.000 --> 00:00:02.000\nHello\n\n",
    }
    for name, text in mine.items():
        path = tmp_path / name
        path.write_text(text)
        res = _detect(fixed, fixed[1], "--out", path)
        assert res.exit_code == 1 and "not a file avdet wrote" in res.output, res.output
        assert path.read_text() == text
        assert _detect(fixed, fixed[1], "--out", path, "--overwrite").exit_code == 0
    photo = _copy(png, tmp_path / "photo.png")
    photo.write_bytes(photo.read_bytes().replace(b"Software\x00avdet", b"Software\x00gimp!"))
    assert _detect(fixed, fixed[1], "--plot", photo).exit_code == 1


def test_detect_into_a_folder_keeps_a_users_file_of_the_same_name(fixed, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    mine = folder / "clip.json"
    mine.write_text("[1, 2, 3]")
    other = _copy(fixed[1], tmp_path / "other.mp4")
    res = _detect(fixed, fixed[1], other, "--out", folder)
    assert res.exit_code == 1 and "clip.json" in res.output
    assert mine.read_text() == "[1, 2, 3]"


def test_eval_refuses_to_write_predictions_over_its_annotations(fixed, tmp_path: Path) -> None:
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({"database": {"clip": {"subset": "test", "duration": 3.0, "annotations": []}}}))
    before = ann.read_text()
    argv = ["eval", "--checkpoint", str(fixed[0]), "--annotations", str(ann), "--device", "cpu"]
    res = runner.invoke(app, [*argv, "--save-predictions", str(ann)])
    assert res.exit_code == 1 and "would replace the annotations" in res.output, res.output
    res = runner.invoke(app, [*argv, "--json", str(ann)])
    assert res.exit_code == 1 and "would replace the annotations" in res.output, res.output
    assert ann.read_text() == before
    user = tmp_path / "mine.json"
    user.write_text('{"database": {"clip": {"annotations": []}}}')  # ground truth-like: not predictions
    res = runner.invoke(app, [*argv, "--save-predictions", str(user)])
    assert res.exit_code == 1 and "not a file avdet wrote" in res.output, res.output


def test_eval_predictions_json_report_never_replaces_the_predictions(tmp_path: Path) -> None:
    from avdet.entry import fast_eval_args

    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"database": {"v": []}}))
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"database": {"v": {"subset": "test", "duration": 5.0, "annotations": []}}}))
    assert fast_eval_args(["eval", "--predictions", str(preds), "--annotations", str(ann), "--json", str(preds)])
    res = subprocess.run(
        [*AVDET, "eval", "--predictions", str(preds), "--annotations", str(ann), "--json", str(preds)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "would replace the predictions" in res.stderr, res.stderr
    assert json.loads(preds.read_text()) == {"database": {"v": []}}


def test_make_sample_keeps_a_users_annotations_and_classes(tmp_path: Path) -> None:
    from avdet.pipeline.synth.clips import SampleConfig, check_sample_dir, make_sample, plan_dataset

    cfg = SampleConfig(num_videos=2, seed=0, min_duration=2.0, max_duration=2.5, workers=1)
    ids = [p.video_id for p in plan_dataset(cfg)]
    names = ["classes.tsv", "annotations.json"]
    user = tmp_path / "user"
    user.mkdir()
    (user / "annotations.json").write_text('{"database": {}}')
    with pytest.raises(DataError, match="annotations.json.*not made by make-sample"):
        make_sample(user, cfg)
    assert (user / "annotations.json").read_text() == '{"database": {}}'
    assert not (user / "videos").exists(), "refused before any clip is rendered"
    classes = tmp_path / "classes_only"
    classes.mkdir()
    (classes / "classes.tsv").write_text("0\tmine\n")
    with pytest.raises(DataError, match="classes.tsv"):
        check_sample_dir(classes, ids, names, overwrite=False)
    (classes / "videos").mkdir()
    (classes / "videos" / f"{ids[0]}.mp4").write_bytes(b"my holiday")
    (classes / "classes.tsv").unlink()
    with pytest.raises(DataError, match=ids[0]):
        check_sample_dir(classes, ids, names, overwrite=False)
    check_sample_dir(classes, ids, names, overwrite=True)  # told to: passes
    ours = tmp_path / "ours"
    make_sample(ours, cfg)
    make_sample(ours, cfg)  # its own files: replaced (resumed) without a word


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_make_sample_cli_refuses_and_overwrite_replaces(tmp_path: Path) -> None:
    (tmp_path / "classes.tsv").write_text("0\tmine\n")
    argv = ["make-sample", str(tmp_path), "--videos", "2", "--min-duration", "2", "--max-duration", "2.5"]
    res = runner.invoke(app, argv)
    assert res.exit_code == 1 and "not made by make-sample" in res.output, res.output
    assert (tmp_path / "classes.tsv").read_text() == "0\tmine\n"
    assert runner.invoke(app, [*argv, "--overwrite"]).exit_code == 0
    assert (tmp_path / "classes.tsv").read_text() != "0\tmine\n"


def test_guard_helpers() -> None:
    from avdet.pipeline.io.guard import made_by_avdet, refuse_inputs, same_file

    assert same_file("a/../b.txt", "b.txt")
    with pytest.raises(DataError, match="--out would replace the video"):
        refuse_inputs([("--out", Path("x/../v.mp4"))], [("video", Path("v.mp4"))])
    refuse_inputs([("--out", Path("-"))], [("video", Path("-"))])  # standard output is no file
    assert not made_by_avdet("/nonexistent/file.json")


# -- item 2: one training run per run folder -------------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from avdet.pipeline.run_lock import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_second_train_into_a_locked_run_folder_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = _hold(run_dir)
    try:
        res = subprocess.run(
            [*AVDET, "train", "-c", "tiny", "--run-dir", str(run_dir), "--set", "train.device=cpu"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 1, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]  # (after the empty progress bar)
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert str(run_dir) in lines[0] and f"pid {holder.pid}" in lines[0] and "started" in lines[0]
        assert not any(run_dir.glob("*.ckpt")) and not (run_dir / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died (kill -9): the OS dropped its lock, so a new run gets past it (to its own next check)
    res = subprocess.run(
        [*AVDET, "train", "-c", "tiny", "--run-dir", str(run_dir), "--resume", "--set", "train.device=cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "nothing to resume" in res.stderr, res.stderr


def test_lock_is_released_when_the_run_ends(tmp_path: Path) -> None:
    from avdet.pipeline.run_lock import run_folder_lock

    with run_folder_lock(tmp_path):
        pass
    holder = _hold(tmp_path)  # another process can take it at once
    holder.send_signal(signal.SIGTERM)
    holder.wait()


def test_train_takes_the_lock_before_anything_else(tmp_path: Path, monkeypatch) -> None:
    from avdet.pipeline import train as train_module
    from avdet.pipeline.config import load_config

    holder = _hold(tmp_path)
    try:
        with pytest.raises(DataError, match=f"pid {holder.pid}"):
            train_module.train(load_config("tiny", ["train.device=cpu"]), tmp_path)
    finally:
        holder.kill()
        holder.wait()


# -- item 5: pre-flight checks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override", ["model.embed_dim=-64", "model.num_heads=0", "model.head_dim=-1", "model.encoder_layers=-1"]
)
def test_impossible_model_sizes_are_config_errors(override: str) -> None:
    from avdet.pipeline.config import load_config

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config("tiny", [override])


def test_eval_start_past_the_last_epoch_is_refused() -> None:
    from avdet.pipeline.config import load_config

    with pytest.raises(ConfigError, match="train.eval_start 50 is past the last epoch"):
        load_config("tiny", ["train.eval_start=50"])  # 5 warm-up + 45 epochs: the last is 49
    load_config("tiny", ["train.eval_start=49"])


def test_checkpoint_with_non_finite_weights_is_refused_at_load(fixed, tmp_path: Path) -> None:
    import torch

    from avdet.pipeline.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    payload = read_checkpoint(fixed[0])
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name] = payload["state_dict"][name].clone().fill_(float("nan"))
    bad = tmp_path / "nan.ckpt"
    save_checkpoint(bad, {k: v for k, v in payload.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match=f"weight {name} holds NaN"):
        load_checkpoint(bad)
    payload["state_dict"][name] = payload["state_dict"][name].fill_(float("inf"))
    save_checkpoint(bad, {k: v for k, v in payload.items() if k not in ("format", "version")})
    res = runner.invoke(app, ["detect", str(fixed[1]), "--checkpoint", str(bad), "--device", "cpu"])
    assert res.exit_code == 1 and "NaN or infinite" in res.output, res.output
    assert torch.isinf(read_checkpoint(bad)["state_dict"][name]).all()


def test_duplicate_class_names_are_refused(fixed, tmp_path: Path) -> None:
    from avdet.pipeline.checkpoint import read_checkpoint, save_checkpoint
    from avdet.pipeline.data.annotations import read_classes

    ann = {"database": {"v": {"subset": "train", "annotations": [{"label_id": 1, "label": "b", "segment": [0, 1]}]}}}
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("0\tdog\n1\tdog\n")
    with pytest.raises(DataError, match="class name 'dog' is given to label_id 0 and 1"):
        read_classes(ann, tsv)
    payload = read_checkpoint(fixed[0])
    payload["classes"] = ["dog", "guitar", "dog", "engine", "bell"]
    twice = tmp_path / "twice.ckpt"
    save_checkpoint(twice, {k: v for k, v in payload.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="'dog' appears twice"):
        read_checkpoint(twice)


def _annotations(tmp_path: Path, events: list[dict], duration: float = 10.0) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"database": {"v1": {"subset": "train", "duration": duration, "annotations": events}}}))
    return path


def test_doubtful_annotations_warn_once_per_file(tmp_path: Path, caplog) -> None:
    from avdet.pipeline.data.annotations import load_annotations, read_classes

    events = [
        {"label_id": 0, "label": "dog", "segment": [0.0, 2.0]},
        {"label_id": 0, "label": "cat", "segment": [3.0, 4.0]},  # same id, other text
        {"label_id": 1, "label": "bell", "segment": [5.0, 13.0]},  # past the 10 s video
        {"label_id": 1, "label": "bell", "segment": [5.0, 14.0]},
    ]
    path = _annotations(tmp_path, events)
    with caplog.at_level("WARNING"):
        ann = load_annotations(path)
        load_annotations(path)
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 2, texts  # once per kind and file, however often it is read
    assert any("ends at 13 s, past the video's duration 10 s" in t for t in texts)
    assert any("label_id 0 is labelled 'cat', but 'dog'" in t for t in texts)
    caplog.clear()
    tsv = tmp_path / "classes.tsv"
    tsv.write_text("0\tdog\n1\tchime\n")
    with caplog.at_level("WARNING"):
        read_classes(ann, tsv)
    assert any("labels label_id 0 'cat', but the class list calls it 'dog'" in r.getMessage() for r in caplog.records)


def test_clean_annotations_do_not_warn(tmp_path: Path, caplog) -> None:
    from avdet.pipeline.data.annotations import load_annotations

    path = _annotations(tmp_path, [{"label_id": 0, "label": "dog", "segment": [0.0, 10.2]}])  # within the slack
    with caplog.at_level("WARNING"):
        load_annotations(path)
    assert not caplog.records


def test_eval_annotations_that_do_not_exist_is_an_error(fixed, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    res = runner.invoke(app, ["eval", "--checkpoint", str(fixed[0]), "--annotations", str(missing)])
    assert res.exit_code == 1 and "missing.json: annotations file not found" in res.output, res.output


# -- item 6: inputs and streams ---------------------------------------------------------------------------------------
@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_an_unreadable_file_fails_alone_and_the_batch_goes_on(fixed, tmp_path: Path, monkeypatch) -> None:
    import builtins

    bad = _copy(fixed[1], tmp_path / "locked.mp4")
    real_open = builtins.open

    def guarded(file, *args, **kwargs):  # as a file without read permission behaves (tests may run as root)
        if str(file) == str(bad):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    out = tmp_path / "out"
    res = _detect(fixed, bad, fixed[1], "--out", out)
    assert res.exit_code == 1
    assert "failed" in res.output and "locked.mp4: cannot read (Permission denied)" in res.output, res.output
    assert "Usage" not in res.output
    assert (out / "clip.json").is_file()


def test_a_still_image_named_mp4_is_not_a_video(fixed, tmp_path: Path) -> None:
    from avdet.errors import DecodeError
    from avdet.pipeline.io.media import probe

    image = tmp_path / "photo.mp4"
    args = ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1"]
    subprocess.run([*args, "-f", "image2", "-c:v", "png", str(image)], check=True)
    with pytest.raises(DecodeError, match="a still image .*not a video"):
        probe(image)
    res = _detect(fixed, image)
    assert res.exit_code == 1 and "not a video" in res.output


def test_a_250_byte_file_name_works(fixed, tmp_path: Path) -> None:
    from avdet.pipeline.io.atomic import NAME_MAX, temp_path

    stem = "é" * 60 + "v" * 126  # 246 bytes: with .mp4 / .json, 250 bytes
    video = _copy(fixed[1], tmp_path / f"{stem}.mp4")
    assert len(video.name.encode()) == 250
    res = _detect(fixed, video, "--out", tmp_path / f"{stem}.json")
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"{stem}.json").is_file()
    long_target = tmp_path / ("é" * 127)  # 254 bytes
    tmp = temp_path(long_target)
    assert len(tmp.name.encode()) <= NAME_MAX and tmp.name.startswith("é" * 100)
    tmp.write_text("x")  # the kernel takes it


def test_control_characters_in_names_are_escaped_in_error_lines(fixed, tmp_path: Path) -> None:
    from avdet.console import visible

    assert visible("a\nb\x1b[31m\tc") == "a\\nb\\x1b[31m\\tc"
    assert visible("ünïcode ok") == "ünïcode ok"
    bad = tmp_path / "two\nlines.mp4"
    bad.write_bytes(b"not a video at all")
    res = _detect(fixed, bad)
    failed = [ln for ln in res.output.splitlines() if "failed" in ln]
    assert len(failed) == 1 and "two\\nlines.mp4" in failed[0], res.output
    res = runner.invoke(app, ["eval", "--predictions", str(bad), "--annotations", str(bad)])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_a_non_checkpoint_is_refused_in_one_line_without_torchs_warning(tmp_path: Path) -> None:
    import pickle

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(pickle.dumps({"weights": {1, 2}}, protocol=4))  # torch warns about the protocol, then fails
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"x")
    res = subprocess.run([*AVDET, "detect", str(clip), "--checkpoint", str(junk)], capture_output=True, text=True)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "junk.ckpt" in lines[0], res.stderr


@pytest.mark.slow  # subprocesses / real servers: not for the inner loop
def test_out_to_a_closed_pipe_stops_at_once_quietly(fixed, tmp_path: Path) -> None:
    ckpt, clip, cache = fixed
    videos = [str(_copy(clip, tmp_path / f"v{i}.mp4")) for i in range(4)]
    argv = [*AVDET, "detect", *videos, "--checkpoint", str(ckpt), "--cache", str(cache), "--device", "cpu"]
    proc = subprocess.Popen([*argv, "--out", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line: every write would meet EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Broken pipe" not in err and "failed" not in err and "Traceback" not in err, err


def test_cuda_without_cuda_is_one_line(fixed, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = runner.invoke(app, ["detect", str(fixed[1]), "--checkpoint", str(fixed[0]), "--device", "cuda"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [lines[0]] and "--device cuda: CUDA is not available" in lines[0], res.output
    import avdet

    with pytest.raises(ConfigError, match="CUDA is not available"):
        avdet.load(fixed[0], device="cuda")


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_an_audio_visual_model_on_a_silent_video_warns_once(fixed, tmp_path: Path, caplog) -> None:
    import avdet

    silent = [make_clip(tmp_path / f"silent{i}.mp4", 2.0, audio=False) for i in range(2)]
    detector = avdet.load(fixed[0], cache=fixed[2])
    with caplog.at_level("WARNING"):
        detector.detect([fixed[1], *silent])
    told = [r.getMessage() for r in caplog.records if "no audio track" in r.getMessage()]
    assert len(told) == 1 and "silent0.mp4" in told[0], told
    caplog.clear()
    with caplog.at_level("WARNING"):
        detector.detect(fixed[1])
    assert not caplog.records


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_plot_convert_and_export_never_write_over_their_inputs(fixed, tmp_path: Path) -> None:
    events = tmp_path / "events.json"
    assert _detect(fixed, fixed[1], "--out", events).exit_code == 0
    before = events.read_text()
    res = runner.invoke(app, ["plot", str(events), "--out", str(events)])
    assert res.exit_code == 1 and "would replace the events file" in res.output, res.output
    assert events.read_text() == before
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n my own picture")
    res = runner.invoke(app, ["plot", str(events), "--out", str(photo)])
    assert res.exit_code == 1 and "not a file avdet wrote" in res.output
    assert runner.invoke(app, ["plot", str(events), "--out", str(photo), "--overwrite"]).exit_code == 0
    src = _copy(fixed[0], tmp_path / "ref.safetensors")
    res = runner.invoke(app, ["export", str(src), str(src), "--force"])
    assert res.exit_code == 1 and "would replace the checkpoint" in res.output, res.output
    res = runner.invoke(app, ["convert", str(src), str(src), "--classes", str(events)])
    assert res.exit_code == 1 and "would replace the checkpoint" in res.output, res.output
    assert src.read_bytes() == fixed[0].read_bytes()
