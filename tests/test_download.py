"""The downloader (pipeline/io/download.py) against a file server on 127.0.0.1: download, resume after a cut
connection, checksum mismatch refused, offline message, Google Drive's confirm page."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fileserver import FileServer

from avdet.errors import DownloadError
from avdet.pipeline.io.download import (
    direct_url,
    drive_confirm_url,
    drive_file_id,
    fetch,
    read_sums,
    record_sum,
    verify_recorded,
)

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a little over 3 chunks
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.pth").write_bytes(PAYLOAD)
    with FileServer(root) as srv:
        yield srv


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_download_checks_the_digest_and_leaves_no_part_file(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "model.pth"
    assert fetch(server.url("model.pth"), dest, sha256=DIGEST, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["model.pth"]


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_a_cut_connection_is_resumed_with_a_range_request(server: FileServer, tmp_path: Path) -> None:
    server.cut_once["model.pth"] = 1_000_000
    dest = tmp_path / "model.pth"
    fetch(server.url("model.pth"), dest, sha256=DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD
    gets = [r for r in server.requests if r[0] == "GET"]
    assert gets[0][2] is None and gets[1][2] == "bytes=1000000-"  # the second request asks for the rest only
    assert len(gets) == 2


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_a_part_file_left_by_an_earlier_run_is_resumed(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:2_000_000])
    fetch(server.url("model.pth"), dest, sha256=DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1][2] == "bytes=2000000-"


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_a_server_that_ignores_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    server.ranges = False
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(b"stale bytes from another file")
    fetch(server.url("model.pth"), dest, sha256=DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_checksum_mismatch_is_refused_and_the_part_file_removed(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        fetch(server.url("model.pth"), dest, sha256=wrong, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert server.url("model.pth") in message and wrong in message and DIGEST in message
    assert not dest.exists() and not (tmp_path / "model.pth.part").exists()


def test_offline_message_names_the_url_and_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused, as offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.pth"
    dest = tmp_path / "models" / "model.pth"
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, progress=False, timeout=5)
    message = str(err.value)
    assert "\n" not in message and url in message and str(dest) in message and "by hand" in message
    assert not dest.exists()


@pytest.mark.slow  # over half a second: .ci/run runs it, the inner loop does not
def test_http_error_is_one_line_with_the_manual_route(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"HTTP 404 .*by hand and place it at"):
        fetch(server.url("missing.pth"), tmp_path / "missing.pth", progress=False)


def test_sums_file_records_and_verifies(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert verify_recorded(f) is None
    record_sum(tmp_path, "a.bin", hashlib.sha256(b"abc").hexdigest())
    assert read_sums(tmp_path) == {"a.bin": hashlib.sha256(b"abc").hexdigest()}
    assert verify_recorded(f) is True
    f.write_bytes(b"abd")
    with pytest.raises(DownloadError, match="recorded when it was downloaded"):
        verify_recorded(f)


def test_google_drive_share_links_and_the_confirm_page() -> None:
    share = "https://drive.google.com/file/d/1qiC2osEaBSH8HFvF0WY_535F21CM3JXj/view?usp=share_link"
    assert drive_file_id(share) == "1qiC2osEaBSH8HFvF0WY_535F21CM3JXj"
    assert direct_url(share).startswith("https://drive.usercontent.google.com/download?id=1qiC2osEaBSH8HFvF0WY_535F")
    assert drive_file_id("https://example.org/file/d/abc") is None
    page = (
        '<html><body><form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="submit" value="Download anyway"/><input type="hidden" name="id" value="ABC">'
        '<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">'
        '<input type="hidden" name="uuid" value="u-1"></form></body></html>'
    )
    assert drive_confirm_url(page, "https://drive.usercontent.google.com/download?id=ABC") == (
        "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=u-1"
    )
    assert drive_confirm_url("<html>Quota exceeded</html>", "https://drive.google.com/") is None
