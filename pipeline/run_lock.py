"""One training run per run folder: `train` holds an exclusive `flock` on `<run_dir>/.avdet-train.lock` from before
it checks the folder until it returns. A second `train` into the same folder is refused in one line naming the folder
and the holder (pid, host and start time, written into the lock file). The operating system drops the lock when the
holder's process ends, however it ends (crash, kill -9), so a stale lock file never blocks a later run. Under
torchrun only rank 0 takes the lock (the ranks of one run share the folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from avdet.errors import DataError

LOCK_NAME = ".avdet-train.lock"


def holder_text(pid: int, host: str, started: float) -> str:
    """What the lock file says about its holder: `pid 123 on host, started 2026-01-02 03:04:05 UTC`."""
    return f"pid {pid} on {host}, started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started))}"


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the block (creating the folder); DataError at once when another process
    holds it. `enabled=False` (torchrun ranks other than 0) does nothing."""
    if not enabled:
        yield
        return
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise DataError(f"{run_dir}: cannot use the run folder ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "holder unknown"
            raise DataError(
                f"{run_dir}: another `avdet train` is writing this run folder ({holder}); wait for it to end or "
                "choose another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_text(os.getpid(), socket.gethostname(), time.time()) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock; the file stays (removing it would race a waiter)
