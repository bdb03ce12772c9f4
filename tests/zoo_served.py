"""What the model-zoo tests serve on 127.0.0.1: the golden recipe models as reference-format checkpoints (the file
layout the UnAV and CCNet repositories publish: `{"epoch", "state_dict_ema": {"module.<name>": tensor}}`) and an
index (`$AVDET_MODEL_INDEX`) that names them.

- `golden-unav`, `golden-ccnet`: golden/unav_model.pt and golden/ccnet_model.pt exactly (48 + 24 feature dims,
  5 classes), pinned by SHA-256; their outputs on the golden inputs are known, so conversion is checked end to end.
  No extractor computes 48 + 24 dims from video, so they are indexed with the released I3D-VGGish features they
  stand for and are used for conversion only.
- `tiny-unav-lite`: the golden UnAV model with its two input projections (the only parameters whose shapes depend
  on the feature dims) re-drawn by the golden weight recipe (golden/README.md) for the `lite` extractor's dims, so
  `detect` can compute its features from a clip; unpinned, as a published file without a digest is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from avdet.extractors.registry import build_extractor_set
from avdet.extractors.weights import seeded_tensor

CLASSES = ["dog barking", "car horn", "guitar", "speech", "bell"]
_INPUT_PROJECTIONS = {"backbone.embd_V.0.conv.weight": "visual", "backbone.embd_A.0.conv.weight": "audio"}


def _reference_file(state: dict[str, torch.Tensor], path: Path) -> str:
    """Save `state` as the references save their checkpoints (DataParallel prefix, EMA weights); its SHA-256."""
    torch.save({"epoch": 39, "state_dict_ema": {f"module.{k}": v for k, v in state.items()}}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json_config(config: dict) -> dict:
    return json.loads(json.dumps(config))  # tuples (regression_range) as lists, as a JSON index holds them


def lite_dims() -> tuple[int, int]:
    return build_extractor_set("lite").dims


def build_served_zoo(root: Path, golden_dir: Path) -> dict[str, dict]:
    """Write the served files and `index.json` into `root`; returns the index entries by name."""
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict] = {}
    for name, detector in (("golden-unav", "unav"), ("golden-ccnet", "ccnet")):
        golden = torch.load(golden_dir / f"{detector}_model.pt", weights_only=True)
        digest = _reference_file(golden["state_dict"], root / f"{name}.pth.tar")
        entries[name] = {
            "name": name,
            "detector": detector,
            "features": "i3d_vggish",
            "released_features": True,
            "num_classes": 5,
            "class_names": CLASSES,
            "url": f"{name}.pth.tar",
            "file": f"{name}.pth.tar",
            "size": (root / f"{name}.pth.tar").stat().st_size,
            "sha256": digest,
            "reference_config": _json_config(golden["model_config"]),
            "license": "test fixture",
            "published_map": None,
        }
    golden = torch.load(golden_dir / "unav_model.pt", weights_only=True)
    visual_dim, audio_dim = lite_dims()
    state = dict(golden["state_dict"])
    for key, stream in _INPUT_PROJECTIONS.items():
        out_ch, _, kernel = state[key].shape
        state[key] = seeded_tensor(key, (out_ch, visual_dim if stream == "visual" else audio_dim, kernel), 0)
    _reference_file(state, root / "tiny-unav-lite.pth.tar")
    entries["tiny-unav-lite"] = {
        "name": "tiny-unav-lite",
        "detector": "unav",
        "features": "lite",
        "released_features": False,
        "num_classes": 5,
        "class_names": CLASSES,
        "url": "tiny-unav-lite.pth.tar",
        "file": "tiny-unav-lite.pth.tar",
        "sha256": None,
        "reference_config": {
            **_json_config(golden["model_config"]),
            "input_dim_V": visual_dim,
            "input_dim_A": audio_dim,
        },
        "license": "test fixture",
        "published_map": None,
    }
    (root / "index.json").write_text(json.dumps({"models": list(entries.values())}, indent=1))
    return entries
