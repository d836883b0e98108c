"""A faulty network in front of moto's S3 server, for storage-fault tests.

Every request is forwarded to the real S3 endpoint, except a seeded share that
is answered ``503 SlowDown`` (what S3 says when throttling) or cut off with
no answer at all (a dropped connection). ``outage`` answers everything 503.
The clients under test (boto3 and pyarrow's AWS SDK) see real HTTP failures.
"""

from __future__ import annotations

import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultyS3Proxy:
    def __init__(self, upstream: str, error_rate: float = 0.0, drop_rate: float = 0.0, seed: int = 7):
        self.upstream = urlparse(upstream)
        self.error_rate, self.drop_rate = error_rate, drop_rate
        self.outage = False
        self.counts = {"forwarded": 0, "errors": 0, "drops": 0}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fate = proxy._fate(self.command, self.path)
                if fate == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fate == "error":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOWDOWN)))
                    self.end_headers()
                    if (
                        self.command != "HEAD"
                    ):  # a HEAD answer has no body: one would be read as the next answer
                        self.wfile.write(_SLOWDOWN)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"  # a HEAD answer states the object's length, with no body
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_HEADERS and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _fate(self, method: str = "", path: str = "") -> str:
        """What happens to this request (``method`` and ``path`` are for
        subclasses that fail on a particular one)."""
        with self._lock:
            if self.outage:
                self.counts["errors"] += 1
                return "error"
            roll = self._rng.random()
            if roll < self.drop_rate:
                self.counts["drops"] += 1
                return "drop"
            if roll < self.drop_rate + self.error_rate:
                self.counts["errors"] += 1
                return "error"
            self.counts["forwarded"] += 1
            return "forward"

    @property
    def url(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
