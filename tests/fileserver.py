"""A small HTTP file server on 127.0.0.1 for the download tests: serves a folder, answers Range requests, and can
cut a file's body once (to test resume) or refuse Range (a server that cannot resume).

    with FileServer(root) as server:
        server.url("models/x.pt")      # http://127.0.0.1:PORT/models/x.pt
        server.cut_once["models/x.pt"] = 1000   # the next GET of it stops after 1000 bytes
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cut_once: dict[str, int] = {}  # path -> bytes sent before the connection is dropped (once)
        self.ranges = True  # False: ignore Range headers (always 200 + the whole file)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.routes: dict[str, object] = {}  # extra handlers: path prefix -> callable(handler) -> bool
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                server._serve(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                server._serve(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        rel = handler.path.split("?", 1)[0].lstrip("/")
        self.requests.append((handler.command, rel, handler.headers.get("Range")))
        for prefix, route in self.routes.items():
            if rel.startswith(prefix) and route(handler, rel, body):
                return
        path = self.root / rel
        if not path.is_file() or ".." in rel.split("/"):
            handler.send_error(404, "Not Found")
            return
        self.send_file(handler, path, rel, body)

    def send_file(
        self, handler: BaseHTTPRequestHandler, path: Path, rel: str, body: bool, headers: dict | None = None
    ) -> None:
        data = path.read_bytes()
        start = 0
        wanted = handler.headers.get("Range")
        if wanted and self.ranges and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Accept-Ranges", "bytes")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if not body:
            return
        cut = self.cut_once.pop(rel, None) if handler.command == "GET" else None
        chunk = data[start:] if cut is None else data[start : start + cut]
        handler.wfile.write(chunk)
        handler.wfile.flush()
        if cut is not None:  # drop the connection mid-body, as a flaky network does
            handler.close_connection = True
            import socket

            handler.connection.shutdown(socket.SHUT_RDWR)
