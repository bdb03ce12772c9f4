"""The error hierarchy. Every failure a user can cause is an `AvdetError` with a one-line message."""

from __future__ import annotations

from pathlib import Path


class AvdetError(Exception):
    """Base class: the CLI reports these as one line and carries on with the next item."""


class DecodeError(AvdetError):
    """ffmpeg/ffprobe could not read a media file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(AvdetError):
    """A configuration file or override is invalid."""


class WeightsError(AvdetError):
    """Pretrained weights are missing, corrupted or do not match their checksum."""


class CheckpointError(AvdetError):
    """A checkpoint cannot be read or does not fit the data it is used with."""


class StoreError(AvdetError):
    """The feature store cannot be used (unwritable folder, mismatched features, ...)."""


class StoreWriteError(StoreError):
    """The store's disk refused a write (full, read-only, I/O error): no later video can succeed either, so a
    command stops at the first one (one line naming the path and the reason) instead of failing every video."""


class DataError(AvdetError):
    """Annotations, predictions or feature files are malformed."""


class DownloadError(AvdetError):
    """A download failed: unreachable host, HTTP error, cut connection or checksum mismatch."""
