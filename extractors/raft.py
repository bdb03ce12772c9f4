"""RAFT optical flow through torchvision's `raft_large`, loading the original RAFT checkpoints.

The UnAV-100 recipe (v-iashin/video_features) runs the original princeton-vl RAFT with the Sintel weights
(`raft-sintel.pth`, saved from `nn.DataParallel`, hence `module.` prefixes), 20 refinement iterations, on
frames padded to a multiple of 8 by edge replication split around both sides ("sintel" mode). torchvision's
`raft_large` is the same network under other parameter names; `convert_raft_checkpoint` maps them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avdet.extractors import weights
from avdet.extractors.tv_compat import import_torchvision

WEIGHTS_FILE = "raft-sintel.pth"
ITERATIONS = 20  # the reference's refinement steps at inference

# Original RAFT name -> torchvision raft_large name, the encoders still under their original `fnet.` / `cnet.`
# prefix (`_ENCODERS` renames it); the first matching rule wins and a name no rule matches is refused.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile("^" + pattern), repl)
    for pattern, repl in (
        (r"(fnet|cnet)\.conv1\.", r"\1.convnormrelu.0."),
        (r"(fnet|cnet)\.norm1\.", r"\1.convnormrelu.1."),
        (r"(fnet|cnet)\.conv2\.", r"\1.conv."),
        (r"(fnet|cnet)\.(layer\d\.\d)\.conv([12])\.", r"\1.\2.convnormrelu\3.0."),
        (r"(fnet|cnet)\.(layer\d\.\d)\.norm([12])\.", r"\1.\2.convnormrelu\3.1."),
        (r"(fnet|cnet)\.(layer\d\.\d)\.downsample\.([01])\.", r"\1.\2.downsample.\3."),
        (r"update_block\.encoder\.convc([12])\.", r"update_block.motion_encoder.convcorr\1.0."),
        (r"update_block\.encoder\.convf([12])\.", r"update_block.motion_encoder.convflow\1.0."),
        (r"update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
        (r"update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
        (r"update_block\.flow_head\.(conv[12])\.", r"update_block.flow_head.\1."),
        (r"update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
        (r"update_block\.mask\.2\.", "mask_predictor.conv."),
    )
)
_ENCODERS = {"fnet": "feature_encoder", "cnet": "context_encoder"}
# In the original ResidualBlock `norm3` is the same module as `downsample.1`: saved twice, loaded once.
_DUPLICATE = re.compile(r"^(fnet|cnet)\.layer\d\.\d\.norm3\.")


def _rename(key: str) -> str | None:
    """torchvision's name for an original RAFT parameter; None for one it does not know."""
    for pattern, repl in _RULES:
        if pattern.match(key):
            new = pattern.sub(repl, key)
            prefix, _, rest = new.partition(".")
            return f"{_ENCODERS[prefix]}.{rest}" if prefix in _ENCODERS else new
    return None


def convert_raft_checkpoint(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original RAFT state dict (princeton-vl, maybe DataParallel-wrapped) -> torchvision `raft_large` names.

    Unknown keys raise `ValueError`, so a checkpoint of another model (e.g. RAFT-small) is not half-loaded.
    """
    out: dict[str, Tensor] = {}
    for raw_key, value in state.items():
        key = raw_key.removeprefix("module.")
        if _DUPLICATE.match(key):
            continue
        new = _rename(key)
        if new is None:
            raise ValueError(f"unexpected RAFT parameter {raw_key!r}: not a RAFT (large) checkpoint")
        out[new] = value
    return out


def raft_large_model() -> nn.Module:
    """torchvision's raft_large architecture, no weights (never downloads)."""
    import_torchvision()
    from torchvision.models.optical_flow import raft_large

    return raft_large(weights=None, progress=False)


def load_raft(
    weights_dir: str | None = None, *, random_weights: bool = False, expected_sha256: str | None = None
) -> nn.Module:
    """raft_large in eval mode with the converted Sintel weights (or seeded random ones)."""
    # The file first: a missing one is reported before the (slower) model construction.
    original = None if random_weights else weights.load_file(WEIGHTS_FILE, weights_dir, expected_sha256=expected_sha256)
    model = raft_large_model()
    if original is None:
        return weights.seeded_model(model)
    try:
        state = convert_raft_checkpoint(original)
    except ValueError as err:
        raise weights.WeightsError(f"{WEIGHTS_FILE}: {err}") from None
    return weights.load_checked(model, state, WEIGHTS_FILE)


def sintel_padding(height: int, width: int, multiple: int = 8) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate padding to a multiple of 8, split around both sides."""
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def pad_frames(frames: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, H', W') with H', W' multiples of 8 (edge replication)."""
    return F.pad(frames, sintel_padding(frames.shape[-2], frames.shape[-1]), mode="replicate")


@torch.inference_mode()
def estimate_flow(model: nn.Module, first: Tensor, second: Tensor, iterations: int = ITERATIONS) -> Tensor:
    """Flow first -> second: (N, 3, H, W) RGB in 0..255, H and W multiples of 8 -> (N, 2, H, W) in pixels."""
    image1 = 2.0 * (first / 255.0) - 1.0
    image2 = 2.0 * (second / 255.0) - 1.0
    return model(image1.contiguous(), image2.contiguous(), num_flow_updates=iterations)[-1]
