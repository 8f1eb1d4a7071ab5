"""A fault-injecting HTTP proxy for the Docker API on a unix socket (tests only).

Requests go to the real daemon (``/var/run/docker.sock``) unless a rule matches: a rule answers
with a status and a Docker-style ``{"message": ...}`` body, either instead of forwarding
(``forward=False``) or after forwarding (``forward=True``: the daemon did the work, the client sees
an error - the way a partially created container comes about). Responses are buffered, so
hijacked/streaming endpoints (exec, attach, follow logs) are not supported through the proxy.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

UPSTREAM = "/var/run/docker.sock"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    times: int | None  # None: always
    forward: bool = False
    hits: int = 0


@dataclass
class Seen:
    method: str
    path: str
    time: float
    answered: int


@dataclass
class FaultProxy:
    socket_path: Path
    upstream: str = UPSTREAM
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def fail(
        self,
        method: str,
        path: str,
        status: int = 500,
        message: str = "injected fault",
        times: int | None = 1,
        forward: bool = False,
    ) -> Rule:
        rule = Rule(method.upper(), re.compile(path), status, message, times, forward)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def requests(self, method: str, path: str) -> list[Seen]:
        pattern = re.compile(path)
        with self._lock:
            return [s for s in self.seen if s.method == method and pattern.search(s.path)]

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path.search(path):
                    if rule.times is not None and rule.hits >= rule.times:
                        continue
                    rule.hits += 1
                    return rule
        return None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = re.sub(r"^/v[0-9.]+", "", self.path)
                rule = proxy._match(self.command, path)
                status = 0
                if rule is None or rule.forward:
                    conn = _UnixConnection(proxy.upstream)
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS
                    }
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    conn.close()
                    status = response.status
                    if rule is None:
                        self._reply(status, data, response.getheaders())
                if rule is not None:
                    status = rule.status
                    payload = json.dumps({"message": rule.message}).encode()
                    self._reply(status, payload, [("Content-Type", "application/json")])
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, path, time.monotonic(), status))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = False
            block_on_close = True  # server_close() joins the request threads

        self._server = Server(str(self.socket_path), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="docker-fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.socket_path.unlink(missing_ok=True)
