"""A fake Hugging Face Hub for `avdet data fetch` tests: the routes `huggingface_hub.snapshot_download` calls for a
dataset, served by `FileServer` on 127.0.0.1 (point `HF_ENDPOINT` at `server.base`).

    GET  /api/datasets/<repo>/revision/<rev>         repo info: the commit sha and the file list ("siblings")
    GET  /api/datasets/<repo>/tree/<rev>[/<path>]    the recursive file listing (paths, sizes, blob ids)
    HEAD /datasets/<repo>/resolve/<rev>/<path>       file metadata: X-Repo-Commit, ETag, Content-Length
    GET  /datasets/<repo>/resolve/<rev>/<path>       the bytes (Range requests answered: resumable)

The dataset is a folder (`root/<repo>/...`); every revision resolves to one fixed commit.
"""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from fileserver import FileServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _blob_id(path: Path) -> str:
    """git's blob id (sha1 of "blob <size>\\0" + content), as the Hub reports it."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()  # noqa: S324 (git's id, not security)


class FakeHub:
    def __init__(self, server: FileServer, root: Path) -> None:
        self.server, self.root = server, root
        server.routes["api/datasets/"] = self._api
        server.routes["datasets/"] = self._resolve

    def _files(self, repo: str) -> list[Path]:
        folder = self.root / repo
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def _json(self, handler: BaseHTTPRequestHandler, value: object, body: bool) -> bool:
        data = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
        return True

    def _split_repo(self, rest: str) -> tuple[str, str] | None:
        """("<owner>/<name>", what follows) for a served repo, None otherwise."""
        parts = rest.split("/", 2)
        if len(parts) < 3 or not (self.root / parts[0] / parts[1]).is_dir():
            return None
        return f"{parts[0]}/{parts[1]}", parts[2]

    def _api(self, handler: BaseHTTPRequestHandler, rel: str, body: bool) -> bool:
        found = self._split_repo(rel.removeprefix("api/datasets/"))
        if found is None:
            handler.send_error(404, "Repository Not Found")
            return True
        repo, rest = found
        folder = self.root / repo
        if rest.startswith("revision/"):
            siblings = [{"rfilename": p.relative_to(folder).as_posix()} for p in self._files(repo)]
            return self._json(handler, {"id": repo, "sha": COMMIT, "private": False, "siblings": siblings}, body)
        if rest.startswith("tree/"):
            sub = rest.removeprefix("tree/").split("/", 1)
            prefix = sub[1] if len(sub) > 1 else ""
            entries = [
                {"type": "file", "oid": _blob_id(p), "size": p.stat().st_size, "path": p.relative_to(folder).as_posix()}
                for p in self._files(repo)
                if p.relative_to(folder).as_posix().startswith(prefix)
            ]
            return self._json(handler, entries, body)
        handler.send_error(404, "Not Found")
        return True

    def _resolve(self, handler: BaseHTTPRequestHandler, rel: str, body: bool) -> bool:
        found = self._split_repo(rel.removeprefix("datasets/"))
        if found is None or not found[1].startswith("resolve/"):
            return False
        repo, rest = found
        path_in_repo = rest.removeprefix("resolve/").split("/", 1)[1]
        path = self.root / repo / path_in_repo
        if not path.is_file():
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_blob_id(path)}"'}
        self.server.send_file(handler, path, rel, body, headers)
        return True
