"""The one atomic write: a temp file beside the target, then rename, so a reader never sees half a file.

Every writer of avdet (events, plots, checkpoints, feature files, HDF5 files, generated clips and their
annotations) goes through `atomic_path`. Temp files are named `<name>.tmp-<pid>-<random>`: their suffix is no
video suffix (so `extract` skips them) and the pid lets `clean_stale_temps` remove those left by killed processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from avdet.errors import AvdetError, DataError

TEMP_MARK = ".tmp-"


def temp_path(target: Path) -> Path:
    """A fresh temp name beside `target` carrying this process's pid."""
    return target.with_name(f"{target.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: Path, recursive: bool = False) -> None:
    """Remove temp files left in `folder` by processes that are gone."""
    for tmp in (folder.rglob if recursive else folder.glob)(f"*{TEMP_MARK}*"):
        pid = tmp.name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(target: str | Path, error: type[AvdetError] = DataError) -> Iterator[Path]:
    """Yield a temp path beside `target` to write to; on success it is fsynced and renamed over `target`, on any
    failure removed, leaving `target` untouched. An OSError becomes `error` (one line naming the target)."""
    target = Path(target)
    if not target.parent.is_dir():
        raise error(f"{target}: output folder {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise error(f"{target}: is a folder, not a file")
    tmp = temp_path(target)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise error(f"{target}: cannot write ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, error: type[AvdetError] = DataError) -> None:
    """Replace `path` with `text` (UTF-8, "\\n" line ends) atomically."""
    with atomic_path(path, error) as tmp, open(tmp, "x", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_bytes_atomic(path: str | Path, data: bytes, error: type[AvdetError] = DataError) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_path(path, error) as tmp, open(tmp, "xb") as f:
        f.write(data)
