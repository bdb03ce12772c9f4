"""Make torchvision (and so timm) importable on a CPU-only torch.

PyPI's torchvision wheels are CUDA builds; on a CPU torch their C++ ops library does not load, and
`import torchvision` dies in its fake-tensor registrations with "operator torchvision::nms does not exist".
We catch exactly that, define the missing op schemas (no kernels: `ops.nms` stays unusable, avdet never calls
it), and import again. Where the real ops load, this is a no-op.
"""

from __future__ import annotations

import re
import sys
from types import ModuleType

import torch

# Schemas of the ops torchvision registers fake implementations for at import time.
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING = re.compile(r"operator torchvision::(\w+) does not exist")
_lib: torch.library.Library | None = None


def _define(op: str) -> None:
    global _lib
    if _lib is None:
        _lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - kept alive for the process
    _lib.define(_SCHEMAS.get(op, f"{op}(Tensor self) -> Tensor"))


def import_torchvision() -> ModuleType:
    """Import torchvision, defining missing op schemas first if (and only if) that import fails for them."""
    for _ in range(len(_SCHEMAS) + 4):
        try:
            import torchvision

            return torchvision
        except RuntimeError as err:
            match = _MISSING.search(str(err))
            if match is None:
                raise
            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]
            _define(match.group(1))
    raise ImportError("torchvision could not be imported even after defining its missing op schemas")
