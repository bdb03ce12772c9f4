"""`avdet convert` (released reference checkpoints) and `avdet weights` through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from avdet.cli import app
from avdet.pipeline.checkpoint import load_checkpoint

runner = CliRunner()


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_convert_reference_unav_checkpoint_reproduces_golden(golden_dir: Path, tmp_path: Path) -> None:
    golden = torch.load(golden_dir / "unav_model.pt", weights_only=True)
    src = tmp_path / "unav_reference.pth.tar"
    torch.save({"epoch": 7, "state_dict_ema": {f"module.{k}": v for k, v in golden["state_dict"].items()}}, src)
    ref_cfg = {
        **golden["model_config"],
        "regression_range": [list(r) for r in golden["model_config"]["regression_range"]],
    }
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump({"model": ref_cfg}))
    (tmp_path / "classes.tsv").write_text("".join(f"{i}\tclass {i}\n" for i in range(5)))
    res = runner.invoke(
        app,
        [
            "convert",
            str(src),
            str(tmp_path / "unav.ckpt"),
            "--model",
            "unav",
            "--classes",
            str(tmp_path / "classes.tsv"),
            "--config",
            str(tmp_path / "ref.yaml"),
        ],
    )
    assert res.exit_code == 0, res.output
    loaded = load_checkpoint(tmp_path / "unav.ckpt")
    video, want = golden["inputs"][0], golden["outputs"][0]
    visual, audio = video["visual"][None].float(), video["audio"][None].float()  # (1, T, C)
    length = loaded.model.padded_length(visual.shape[1])
    pad = length - visual.shape[1]
    mask = torch.arange(length)[None] < visual.shape[1]
    with torch.no_grad():
        out = loaded.model(
            torch.nn.functional.pad(audio, (0, 0, 0, pad)), torch.nn.functional.pad(visual, (0, 0, 0, pad)), mask
        )
    torch.testing.assert_close(out.cls_logits[0][0], want["cls_logits"][0].float(), rtol=1e-4, atol=1e-4)


def test_convert_without_classes_is_one_line_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["convert", str(tmp_path / "x.pth"), str(tmp_path / "y.ckpt")])
    assert res.exit_code == 1 and "--classes" in res.output


def test_weights_lists_missing_files_with_their_source(tmp_path: Path) -> None:
    res = runner.invoke(app, ["weights", "--weights-dir", str(tmp_path), "--extractor", "i3d_vggish"])
    assert res.exit_code == 0, res.output
    assert "missing" in res.output and "i3d_rgb.pt" in res.output
