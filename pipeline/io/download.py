"""The one downloader: HTTP(S) with progress, resume, SHA-256 check and an atomic final rename (torch-free).

    fetch(url, dest, sha256=..., progress=True) -> dest

- Bytes go to `<dest>.part`; a cut connection is resumed with an HTTP Range request (in the same call, a few
  times, and in the next call: the part file stays), so a 300 MB model is never fetched twice.
- Once complete, the part file's SHA-256 is checked against `sha256` (when pinned): a mismatch removes the part
  file and is one line naming the URL, the expected and the computed digest. Only then is it renamed to `dest`.
- Unreachable hosts (offline, DNS, refused, timeout) and HTTP errors are one line naming the URL and exactly
  where to place the file by hand.
- Google Drive share links (`drive.google.com/file/d/ID/view`, `open?id=ID`) are fetched from the direct download
  endpoint, through the confirm page Drive shows for files too large to scan for viruses.

`SHA256SUMS` files (`<hex>  <name>` lines, `sha256sum` format) record the digests of what was fetched next to it,
so a later load of a file no one could pin detects corruption or replacement.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from avdet.errors import DownloadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read: big enough to be fast, small enough for a smooth progress bar
ATTEMPTS = 5  # connections per call before giving up (each resumes where the last one stopped)
SUMS_FILE = "SHA256SUMS"
PART_SUFFIX = ".part"
USER_AGENT = "avdet-downloader/1"


# -- checksums ------------------------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def read_sums(folder: Path) -> dict[str, str]:
    """`SHA256SUMS` of a folder as {file name: hex digest} (`*` binary marks and `#` comments allowed)."""
    path = folder / SUMS_FILE
    if not path.is_file():
        return {}
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        digest = parts[0].lower()
        if len(parts) != 2 or not _is_digest(digest):
            raise DownloadError(f"{path}:{number}: expected '<64 hex digits>  <file name>', found {line.strip()!r}")
        sums[parts[1].strip().lstrip("*")] = digest
    return sums


def record_sum(folder: Path, name: str, digest: str) -> None:
    """Add or replace `name`'s line in the folder's `SHA256SUMS` (atomically)."""
    sums = read_sums(folder)
    sums[name] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    fd, tmp = tempfile.mkstemp(prefix=f".{SUMS_FILE}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, folder / SUMS_FILE)


def verify_recorded(path: Path) -> bool | None:
    """Check `path` against its line in the `SHA256SUMS` beside it: True, None (no line), or a `DownloadError`."""
    expected = read_sums(path.parent).get(path.name)
    if expected is None:
        return None
    actual = sha256_of(path)
    if actual != expected:
        raise DownloadError(
            f"{path}: SHA-256 {actual} differs from the {expected} recorded when it was downloaded; the file is "
            f"corrupted or was replaced: delete it to download it again"
        )
    return True


# -- Google Drive ---------------------------------------------------------------------------------------------------
_DRIVE_ID = (re.compile(r"/file/d/([\w-]+)"), re.compile(r"[?&]id=([\w-]+)"))
DRIVE_DIRECT = "https://drive.usercontent.google.com/download"


def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive share link, None for any other URL."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in ("drive.google.com", "docs.google.com", "drive.usercontent.google.com"):
        return None
    for pattern in _DRIVE_ID:
        found = pattern.search(url)
        if found:
            return found[1]
    return None


def direct_url(url: str) -> str:
    """Where the bytes of `url` are: a Drive share link becomes its direct download URL; others are unchanged."""
    file_id = drive_file_id(url)
    if file_id is None:
        return url
    return f"{DRIVE_DIRECT}?{urllib.parse.urlencode({'id': file_id, 'export': 'download'})}"


class _FormParser(HTMLParser):
    """The first <form> of a page: its action and its hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done and self.action is None:
            self.action, self._in_form = values.get("action", ""), True
        elif tag == "input" and self._in_form and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def drive_confirm_url(page: str, base: str) -> str | None:
    """The URL behind the "Download anyway" button of Drive's large-file page (None: not such a page).

    Drive answers a file it cannot scan for viruses with an HTML page whose form carries the file id and a confirm
    token (and a uuid); submitting it (a GET) returns the file."""
    parser = _FormParser()
    parser.feed(page)
    if not parser.action or "id" not in parser.fields:
        return None
    action = urllib.parse.urljoin(base, parser.action)
    return f"{action}?{urllib.parse.urlencode(parser.fields)}"


# -- progress -------------------------------------------------------------------------------------------------------
ProgressHook = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


@contextmanager
def _progress_bar(label: str, enabled: bool) -> Iterator[ProgressHook]:
    """A Rich progress bar on stderr (bytes, speed, time left), or nothing when disabled."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- fetching -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Attempt:
    """What one connection achieved."""

    complete: bool
    total: int | None  # the full size, when the server said


def _manual_hint(url: str, dest: Path) -> str:
    return f"download {url} by hand and place it at {dest}"


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http/https only, checked by fetch)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    """The full file size from Content-Range (a resumed answer) or Content-Length (a whole one)."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return None
    return int(length) + (offset if response.status == 206 else 0)


def _resolve_drive_page(url: str, response: http.client.HTTPResponse, dest: Path) -> str:
    """Drive answered a page instead of bytes: the confirm URL behind it, or a one-line error."""
    page = response.read(1 << 20).decode("utf-8", "replace")
    confirm = drive_confirm_url(page, response.geturl())
    if confirm is None or confirm == url:  # no form, or the confirmed request answered the page again
        raise DownloadError(
            f"{url}: Google Drive answered a web page, not the file (quota exceeded or access restricted); "
            f"{_manual_hint(url, dest)}"
        )
    return confirm


def _transfer(url: str, part: Path, dest: Path, timeout: float, hook: ProgressHook) -> tuple[_Attempt, str]:
    """One connection: append to `part` from where it ends. Returns what it achieved and the URL to use next
    (Drive's confirm URL once it is known)."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left past what we have: the part file is complete
            return _Attempt(True, offset), url
        raise
    with response:
        if drive_file_id(url) and "text/html" in response.headers.get("Content-Type", ""):
            return _Attempt(False, None), _resolve_drive_page(url, response, dest)
        if response.status != 206 and offset:  # the server ignored the Range header: start over
            log.info("%s does not resume downloads; starting %s again", url, dest.name)
            offset = 0
        total = _total_size(response, offset)
        done = offset
        hook(done, total)
        with open(part, "ab" if offset else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                hook(done, total)
            out.flush()
            os.fsync(out.fileno())
    return _Attempt(total is None or done >= total, total), url


def _short(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    text = str(reason).strip().splitlines()
    return f"{type(reason).__name__}: {text[0]}"[:160] if text else type(reason).__name__


def fetch(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    label: str | None = None,
    timeout: float = 60.0,
    attempts: int = ATTEMPTS,
) -> Path:
    """Download `url` to `dest` (resumable, checked, atomic) and return `dest`; every failure is a one-line
    `DownloadError`.

    `sha256`: the full hex digest the file must have (None: not pinned; the caller records the computed one).
    `progress`: a Rich progress bar on stderr. A cut connection is resumed up to `attempts` times."""
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded; {_manual_hint(url, dest)}")
    if sha256 is not None and not _is_digest(sha256.lower()):
        raise DownloadError(f"{url}: {sha256!r} is not a SHA-256 digest (64 hex digits)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the folder {dest.parent}: {err.strerror or err}") from None
    part = dest.with_name(dest.name + PART_SUFFIX)
    source = direct_url(url)
    complete = False
    with _progress_bar(label or dest.name, progress) as hook:
        for _ in range(attempts + 1):  # + 1: Drive's confirm page costs one connection
            try:
                attempt, source = _transfer(source, part, dest, timeout, hook)
            except urllib.error.HTTPError as err:
                raise DownloadError(
                    f"{url}: HTTP {err.code} {err.reason}; the file moved or is not public: {_manual_hint(url, dest)}"
                ) from None
            except (OSError, http.client.HTTPException) as err:  # cut mid-body, or no connection at all
                if part.is_file() and part.stat().st_size and not _refused(err):
                    log.info("%s: connection lost (%s); resuming", url, _short(err))
                    continue
                raise DownloadError(f"cannot reach {url} ({_short(err)}): offline? {_manual_hint(url, dest)}") from None
            if attempt.complete:
                complete = True
                break
    if not complete:
        raise DownloadError(
            f"{url}: the connection kept breaking ({attempts} tries; {part} keeps what arrived and the next run "
            f"resumes it); or {_manual_hint(url, dest)}"
        )
    return _finish(url, part, dest, sha256)


def _refused(err: BaseException) -> bool:
    reason = getattr(err, "reason", err)
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError))


def _finish(url: str, part: Path, dest: Path, sha256: str | None) -> Path:
    """Check the complete part file and rename it to `dest`; a wrong digest removes it."""
    if not part.is_file():
        raise DownloadError(f"{url}: nothing was received; {_manual_hint(url, dest)}")
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url}: SHA-256 mismatch, expected {sha256.lower()}, got {got}; the download was removed"
            )
    os.replace(part, dest)
    return dest
