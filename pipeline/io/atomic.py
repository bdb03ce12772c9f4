"""The one atomic write: a temp file beside the target, then rename, so a reader never sees half a file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

from avdet.errors import DataError


def _atomic_write(path: str | Path, binary: bool, fill: Callable[[IO], None]) -> None:
    """Write `path` through `fill(stream)` into a temp file beside it, then rename over it: readers see the old
    file or the new one, never half of one. Any failure removes the temp file and leaves `path` untouched."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"{path}: output folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        # "x": never clobber; open() honours the umask, unlike mkstemp's 0600
        with open(tmp, "xb" if binary else "x", **({} if binary else {"encoding": "utf-8", "newline": "\n"})) as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise DataError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically; a missing or unwritable folder is a DataError."""
    _atomic_write(path, False, lambda f: f.write(text))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; a missing or unwritable folder is a DataError."""
    _atomic_write(path, True, lambda f: f.write(data))
