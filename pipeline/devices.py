"""Which device computes: `auto` resolved, and a CUDA device that is not there refused in one line (not torch's
traceback at the first `.to("cuda")`). Shared by the CLI and the Python API (`avdet.load`)."""

from __future__ import annotations

from avdet.errors import ConfigError


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
