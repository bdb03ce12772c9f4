"""`avdet weights --download`: fetch the canonical extractor weights (`extractors.weights.CATALOG`) through the one
downloader (progress bar, resume after a cut connection, SHA-256, atomic rename).

A file with a published digest (torchvggish's name prefix, torchvision's) is checked against it; a file nobody
publishes a digest for ("unpinned": the I3D and RAFT checkpoints) says so in one warning line at its first download,
and its computed digest goes into the weights folder's `SHA256SUMS`, which every later load checks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from avdet.errors import DownloadError, WeightsError
from avdet.extractors.weights import (
    CATALOG,
    SUMS_FILE,
    _entry,
    record_sum,
    sha256_of,
    verify_checksum,
    weights_dir,
)
from avdet.pipeline.io.download import fetch

log = logging.getLogger(__name__)


def download(
    name: str,
    directory: str | Path | None = None,
    *,
    url: str | None = None,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = False,
) -> Path:
    """Fetch one canonical file into the weights directory and record its digest. Explicit calls only.

    `url` overrides the canonical location (a mirror). A fresh download is checked against published digests only
    (`expected_sha256`, the catalog's), never against a stale `SHA256SUMS` line."""
    entry = _entry(name)
    folder = weights_dir(directory)
    source = url or entry.url
    full = (expected_sha256 or entry.sha256 or "").lower() or None
    prefix = None if full else (entry.sha256_prefix or "").lower() or None
    if full is None and prefix is None:
        log.warning("%s: no published SHA-256 (unpinned); its digest is recorded in %s", name, folder / SUMS_FILE)
    log.info("downloading %s from %s", name, source)
    try:
        path = fetch(source, folder / name, sha256=full, progress=progress, timeout=timeout, label=name)
    except DownloadError as err:
        raise WeightsError(f"{name}: {err}") from None
    digest = sha256_of(path)
    if prefix and not digest.startswith(prefix):
        path.unlink(missing_ok=True)
        raise WeightsError(
            f"{name}: {source}: SHA-256 mismatch, expected {prefix}... (the published prefix), got {digest}; "
            "the download was removed"
        )
    record_sum(folder, name, digest)
    return path


def download_weights(
    names: Iterable[str] | None = None, directory: str | Path | None = None, *, progress: bool = False
) -> list[Path]:
    """Download the named canonical files (all of them when `names` is None) unless present and valid."""
    folder = weights_dir(directory)
    paths = []
    for name in list(names) if names is not None else list(CATALOG):
        path = folder / name
        if path.is_file():
            try:
                verify_checksum(path, name)
                paths.append(path)
                continue
            except WeightsError as err:
                log.warning("%s; downloading it again", err)
                path.unlink()
        paths.append(download(name, folder, progress=progress))
    return paths
