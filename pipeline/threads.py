"""Where a process computes: how many intra-op threads torch gets (one policy for every command), and which
device (`resolve_device_name`: `auto` resolved, a CUDA device that is not there refused in one line, not torch's
traceback at the first `.to("cuda")`; shared by the CLI, the Python API and training).

torch's default (one thread per core) assumes the process has the machine to itself. With several worker
processes, or on a machine other jobs share, the threads wait on each other: on a shared 2-core machine the
default made extraction 2-7x and model forwards 2-3x slower than one thread. So each process takes its share of
the cores that are idle now:

    threads = --threads if given, else clamp(floor((cores - load) / workers), 1, cores // workers)

cores = the CPUs this process may run on (affinity), load = the 1-minute load average (other jobs), workers = the
processes this command runs at once (extraction workers, DDP ranks on this node). A 64-core idle server with one
process gets 64 threads, with 8 workers 8 each; a 2-core machine already running two jobs gets 1. DataLoader
workers always run one thread each (torch sets that). torch is imported only when threads are applied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from avdet.errors import ConfigError

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def decide_threads(
    workers: int = 1, requested: int | None = None, *, cores: int | None = None, load: float | None = None
) -> int:
    """Intra-op threads for each of `workers` processes (see the module docstring); `requested` wins."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads must be >= 1, got {requested}")
        return requested
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cores = usable_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    share = max(1, cores // workers)
    idle = int((cores - load) // workers)
    return max(1, min(share, idle))


def apply_threads(workers: int = 1, requested: int | None = None) -> int:
    """Set torch's intra-op threads of this process by the policy; returns the number."""
    import torch

    threads = decide_threads(workers, requested)
    torch.set_num_threads(threads)
    log.debug("torch intra-op threads: %d (%d worker process(es))", threads, workers)
    return threads


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` intra-op threads, then restore the previous setting (loops of tiny ops, such
    as the soft-NMS and decoding, run faster on one thread whatever the policy gives the model)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the device --------------------------------------------------------------------------------------------------
def resolve_device_name(value: str, where: str = "--device") -> str:
    """auto -> "cuda" when a GPU is visible, else "cpu"; cpu / cuda / cuda:N as given when usable, else
    ConfigError naming `where` (the option or config key) and why."""
    import torch  # only here: parsing a command line never needs it

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = value.partition(":")
    if kind != "cuda":
        return value
    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(f"{where} {value}: CUDA is not available ({why}); use --device cpu")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"{where} {value}: there {'is' if count == 1 else 'are'} only {count} CUDA device(s)")
    return value
