"""The one atomic write: a temp file beside the target, then rename, so a reader never sees half a file.

Every writer of avdet (events, plots, checkpoints, feature files, HDF5 files, generated clips and their annotations)
goes through `atomic_path` (a path to write) or `atomic_open` (an open file). A symlink keeps pointing at its file: the
file it resolves to is replaced. What is not a regular file (a terminal, a pipe, a fifo, /dev/stdout, /dev/null) is
never renamed over: `atomic_open` writes into it in place and `atomic_path` refuses it. Temp files are named
`<name>.tmp-<pid>-<random>`: their suffix is no video suffix (so `extract` skips them) and the pid lets
`clean_stale_temps` remove those left by killed processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from avdet.errors import AvdetError, DataError

TEMP_MARK = ".tmp-"


NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, tmpfs)


def temp_path(target: Path) -> Path:
    """A fresh temp name beside `target` carrying this process's pid; the target's name is cut (at a character
    boundary) so the temp name stays within NAME_MAX bytes even when the target's own name nearly fills it."""
    mark = f"{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    room = NAME_MAX - len(mark.encode())
    name = target.name.encode()[:room].decode("utf-8", "ignore")
    return target.with_name(f"{name}{mark}")


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


def _through_descriptor(path: str) -> bool:
    """Whether a chain of symlinks leads through /proc/<pid>/fd or /dev/fd (as /dev/stdout does): a descriptor
    the caller opened, which may be a regular file the shell opened for appending."""
    for _ in range(40):  # the kernel's own limit on nested links
        if path.startswith(("/proc/", "/dev/fd/")):
            return True
        if not os.path.islink(path):
            return False
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return False


def is_special(target: str | Path) -> bool:
    """True for an existing target that must be written in place, never renamed over: anything not a regular file
    (terminal, pipe, fifo, socket, device), directly or behind symlinks, and /dev/stdout-like descriptor links."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False  # absent (or a dangling link): a new file
    return (not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)) or _through_descriptor(str(target))


def _file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the process's umask (read by setting it and putting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: str | Path, error: type[AvdetError] = DataError) -> Iterator[Path]:
    """Yield a temp path beside `target` to write to; on success it is fsynced and renamed over `target` (over the
    file a symlink resolves to, so the link stays), on any failure removed, leaving `target` untouched. An OSError
    becomes `error` (one line naming the target). Targets that are not regular files are refused (`atomic_open`
    writes into them)."""
    target = Path(target)
    if is_special(target):
        raise error(f"{target}: not a regular file (a device, pipe or descriptor); give a file path")
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if not target.parent.is_dir():
        raise error(f"{target}: output folder {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise error(f"{target}: is a folder, not a file")
    tmp = temp_path(target)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())  # whatever the writer used (safetensors: 0600), a normal file's mode
        os.replace(tmp, target)
    except OSError as err:
        raise error(f"{target}: cannot write ({err.strerror or err})") from None
    finally:
        _remove_temp(tmp)


def _remove_temp(tmp: Path) -> None:
    """Remove a temp file that may never have been made. Its removal must not replace the error that ended the
    write: on a read-only filesystem unlink fails (EROFS) even for a missing file; a temp left behind (never the
    target) is removed by `clean_stale_temps` once this process is gone."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: str | Path, binary: bool = False, error: type[AvdetError] = DataError) -> Iterator[IO]:
    """An open file (text: UTF-8, "\\n" line ends) whose content replaces `target` atomically when the block ends
    without error; a target that is not a regular file (/dev/stdout, a pipe, a terminal) is written in place."""
    kind = {"encoding": "utf-8", "newline": "\n"} if not binary else {}
    if not is_special(target):
        with atomic_path(target, error) as tmp, open(tmp, "xb" if binary else "x", **kind) as f:
            yield f
        return
    try:
        with open(target, "wb" if binary else "w", **kind) as f:
            yield f
    except OSError as err:
        raise error(f"{target}: cannot write ({err.strerror or err})") from None


def write_text_atomic(path: str | Path, text: str, error: type[AvdetError] = DataError) -> None:
    """Replace `path` with `text` (UTF-8, "\\n" line ends) atomically."""
    with atomic_open(path, False, error) as f:
        f.write(text)


def write_bytes_atomic(path: str | Path, data: bytes, error: type[AvdetError] = DataError) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_open(path, True, error) as f:
        f.write(data)
