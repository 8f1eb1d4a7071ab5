"""A tiny raw-socket MQTT 3.1.1 probe: the broker readiness and liveness check.

Readiness is MQTT, not an open port: CONNECT/CONNACK, SUBSCRIBE/SUBACK and a QoS 1 round trip on a
health topic. A raw socket costs no thread and answers in well under a millisecond on loopback, so
the probe can poll from 1 ms without adding to the broker's own start time. A listener that
answers with bytes that are not a CONNACK is rejected at once (:class:`NotMqtt`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass

PROBE_CONNECT_TIMEOUT = 2.0  # seconds for the TCP connect of one probe
PROBE_REPLY_TIMEOUT = (
    2.0  # seconds a listener may stay silent after CONNECT before it is "not MQTT"
)

CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_counter = itertools.count()


class ProbeError(Exception):
    """One probe failed in a way that may pass on a later try (refused, closed early)."""


class NotMqtt(ProbeError):
    """The listener answered, but not as an MQTT broker: retrying will not help."""


@dataclass(frozen=True)
class ProbeTimes:
    """Seconds spent in each step of one successful probe."""

    connack: float
    suback: float
    round_trip: float
    total: float


def probe_client_id(tag: str = "hp") -> str:
    """A unique id (<= 23 characters) for probe and sentinel connections."""
    return f"{tag}{os.getpid():x}-{next(_counter):x}-{time.monotonic_ns() & 0xFFFFFF:x}"[:23]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str, keepalive: int = 10) -> bytes:
    return _packet(
        0x10, _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + _utf8(client_id)
    )


def _recv_exact(sock: socket.socket, n: int, deadline: float, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotMqtt(
                f"no {what} within {PROBE_REPLY_TIMEOUT:.0f} s (the listener stays silent)"
            )
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            continue
        if not chunk:
            raise ProbeError(f"the connection was closed before the {what}")
        buf += chunk
    return bytes(buf)


def read_packet(
    sock: socket.socket, deadline: float, what: str, expect: int | None = None
) -> tuple[int, bytes]:
    """One packet. With ``expect``, a different first byte is NotMqtt at once (a foreign
    protocol's answer is rarely a valid MQTT frame, so its "length" must not be trusted)."""
    first = _recv_exact(sock, 1, deadline, what)[0]
    if expect is not None and first != expect:
        rest = b""
        with contextlib.suppress(OSError, ProbeError):
            sock.settimeout(0.05)
            rest = sock.recv(32)
        raise NotMqtt(
            f"expected {what} (first byte 0x{expect:02x}) but the listener answered"
            f" {bytes([first]) + rest!r}"
        )
    length, shift = 0, 0
    for _ in range(4):
        byte = _recv_exact(sock, 1, deadline, what)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise NotMqtt(f"malformed remaining length while waiting for the {what}")
    return first, _recv_exact(sock, length, deadline, what)


def open_session(
    host: str,
    port: int,
    client_id: str,
    keepalive: int = 10,
    tls: ssl.SSLContext | None = None,
) -> socket.socket:
    """A TCP (or TLS) connection that got CONNACK 0; raises ProbeError/NotMqtt/OSError."""
    sock = socket.create_connection((host, port), timeout=PROBE_CONNECT_TIMEOUT)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(client_id, keepalive))
        deadline = time.monotonic() + PROBE_REPLY_TIMEOUT
        first, body = read_packet(sock, deadline, "CONNACK", expect=0x20)
        if first != 0x20 or len(body) != 2:
            raise NotMqtt(
                f"expected CONNACK (0x20, 2 bytes) but got first byte 0x{first:02x}"
                f" and {len(body)} bytes: {body[:16]!r}"
            )
        if body[1] != 0:
            reason = CONNACK_CODES.get(body[1], "unknown code")
            raise NotMqtt(f"CONNACK refused the connection: code {body[1]} ({reason})")
        return sock
    except BaseException:
        sock.close()
        raise


def probe(
    host: str,
    port: int,
    health_topic: str,
    client_id: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> ProbeTimes:
    """CONNECT/CONNACK, SUBSCRIBE/SUBACK, then publish QoS 1 and await both PUBACK and delivery."""
    start = time.perf_counter()
    client_id = client_id or probe_client_id()
    sock = open_session(host, port, client_id, tls=tls)
    try:
        t_connack = time.perf_counter()
        deadline = time.monotonic() + PROBE_REPLY_TIMEOUT
        sock.sendall(_packet(0x82, struct.pack("!H", 1) + _utf8(health_topic) + b"\x01"))
        first, body = read_packet(sock, deadline, "SUBACK")
        if first != 0x90 or len(body) < 3 or body[:2] != b"\x00\x01":
            raise NotMqtt(f"expected SUBACK for packet 1 but got 0x{first:02x} {body[:16]!r}")
        if body[2] & 0x80:
            raise NotMqtt(f"the broker refused the subscription to {health_topic!r} (SUBACK 0x80)")
        t_suback = time.perf_counter()
        token = f"{client_id}-{time.monotonic_ns()}".encode()
        sock.sendall(_packet(0x32, _utf8(health_topic) + struct.pack("!H", 2) + token))
        got_puback = got_delivery = False
        while not (got_puback and got_delivery):
            first, body = read_packet(sock, deadline, "PUBACK and the health message")
            kind = first & 0xF0
            if kind == 0x40 and body == b"\x00\x02":
                got_puback = True
            elif kind == 0x30:
                qos = (first >> 1) & 3
                (tlen,) = struct.unpack("!H", body[:2])
                rest = body[2 + tlen :]
                if qos:
                    sock.sendall(_packet(0x40, rest[:2]))
                    rest = rest[2:]
                if rest == token:
                    got_delivery = True
            else:
                raise NotMqtt(f"unexpected packet 0x{first:02x} during the QoS 1 round trip")
        end = time.perf_counter()
        sock.sendall(b"\xe0\x00")
        return ProbeTimes(t_connack - start, t_suback - t_connack, end - t_suback, end - start)
    finally:
        sock.close()


class Sentinel:
    """One idle MQTT connection (keepalive 0) held open: when the broker dies, the socket turns
    readable with EOF. Checking it is a zero-timeout ``select`` - microseconds, no thread."""

    def __init__(self, host: str, port: int) -> None:
        self.sock: socket.socket | None = open_session(host, port, probe_client_id("hs"), 0)

    def alive(self) -> bool:
        sock = self.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return True
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        return bool(data)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(b"\xe0\x00")
            self.sock.close()
            self.sock = None
