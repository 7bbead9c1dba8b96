"""A local HTTP server for the download tests: it serves `files` (path -> bytes), speaks
HTTP ranges (206 with Content-Range, 416 past the end; an ETag per content, and a Range whose
If-Range names another answered with the whole file, as RFC 9110 says; or a weak ETag and a
Last-Modified date, If-Range then matching the date only) and can be told to drop the
connection after some bytes, as a real network does, to stall after some bytes (a
slow network), or to send the next answer as raw bytes (a malformed or cut-short
answer). The `server` fixture (tests/conftest.py) yields (Handler, "http://127.0.0.1:PORT")
and `Handler.log` lists (path, Range header)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import zlib
from typing import Iterator


LAST_MODIFIED = "Wed, 02 Dec 2026 10:00:00 GMT"


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: int | None = None  # send only this many bytes of the next answer, then hang up
    raw: bytes | None = None  # the next answer, status line and headers included, as it is
    stall_after: int | None = None  # send this many bytes of the next answer, then wait until `resume` is set
    weak_etag = False  # answer with a weak ETag (W/"..."), which If-Range cannot take, and a Last-Modified
    resume = threading.Event()
    log: list[tuple[str, str | None]] = []

    def do_GET(self):
        data = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if type(self).raw is not None:
            self.wfile.write(type(self).raw)
            type(self).raw = None
            return
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        etag = f'"{zlib.crc32(data):08x}"'
        if_range = self.headers.get("If-Range")
        matches = if_range == LAST_MODIFIED if self.weak_etag else if_range == etag  # (never a weak one)
        if self.headers.get("Range") and (if_range is None or matches):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("ETag", "W/" + etag if self.weak_etag else etag)
        if self.weak_etag:
            self.send_header("Last-Modified", LAST_MODIFIED)
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if type(self).cut_after is not None:
            body, type(self).cut_after = body[: type(self).cut_after], None
        if type(self).stall_after is not None:
            stall, type(self).stall_after = type(self).stall_after, None
            self.wfile.write(body[:stall])
            self.wfile.flush()
            type(self).resume.wait(30)
            body = body[stall:]
        try:
            self.wfile.write(body)
        except OSError:  # the client went away (a stalled answer it stopped waiting for)
            pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving() -> Iterator[tuple[type[Handler], str]]:
    Handler.files, Handler.log, Handler.cut_after, Handler.raw, Handler.stall_after = {}, [], None, None, None
    Handler.weak_etag = False
    Handler.resume = threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        Handler.resume.set()  # (a stalled answer ends)
        httpd.shutdown()
        httpd.server_close()
