"""Plain-socket WebSocket helpers for the cases a real client library refuses to produce.

Everything here works on a blocking ``socket.socket`` and explicit deadlines, so that tests
control exactly which bytes go out and can read the server's bytes one frame at a time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


# ---------------------------------------------------------------------------------------------
# HTTP


def upgrade_request(
    host: str,
    port: int,
    path: str = "/",
    *,
    key: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    omit: tuple[str, ...] = (),
    method: str = "GET",
    version: str = "HTTP/1.1",
    ws_version: str = "13",
) -> bytes:
    """A complete, valid upgrade request; ``omit`` drops headers (lower-case names),
    ``extra`` adds or overrides (a name given in ``extra`` replaces the default one)."""
    key = key if key is not None else new_key()
    headers: list[tuple[str, str]] = [
        ("Host", f"{host}:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", ws_version),
    ]
    extra = list(extra or [])
    overridden = {name.lower() for name, _ in extra}
    headers = [(n, v) for n, v in headers if n.lower() not in omit and n.lower() not in overridden]
    headers += extra
    lines = [f"{method} {path} {version}"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class HTTPResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    rest: bytes = b""  # bytes after the head that are not body (frames after a 101)
    closed: bool = False  # the server closed the connection after the response

    def header(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def __str__(self) -> str:  # useful in assertion messages
        head = "\n".join(f"{n}: {v}" for n, v in self.headers)
        return f"{self.version} {self.status} {self.reason}\n{head}\n\n{self.body!r}"


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def _recv_some(sock: socket.socket, deadline: Deadline, n: int = 65536) -> bytes:
    left = deadline.left()
    if left <= 0:
        raise TimeoutError("deadline expired while reading from the bridge")
    sock.settimeout(left)
    return sock.recv(n)


def read_http_response(sock: socket.socket, timeout: float = 10.0, *, to_eof: bool | None = None) -> HTTPResponse:
    """Read one HTTP response head (and body). For non-101 responses the body is read by
    Content-Length, then, when ``to_eof`` (default: for non-101), until the server closes."""
    deadline = Deadline(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = _recv_some(sock, deadline)
        except ConnectionResetError:
            chunk = b""
            if not buf:
                raise
        if not chunk:
            raise ConnectionError(f"connection closed before a complete response head; got {buf!r}")
        buf += chunk
        if len(buf) > 1 << 20:
            raise AssertionError("response head larger than 1 MiB")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    resp = HTTPResponse(version, int(status), reason[0] if reason else "", headers, b"", b"")
    if resp.status == 101:
        resp.rest = rest
        return resp
    if to_eof is None:
        to_eof = True
    length = resp.header("Content-Length")
    body = rest
    closed = False
    if length is not None:
        n = int(length)
        while len(body) < n:
            try:
                chunk = _recv_some(sock, deadline)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
                break
            body += chunk
        resp.body, extra = body[:n], body[n:]
        if to_eof and not closed:
            while True:
                try:
                    chunk = _recv_some(sock, deadline)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                extra += chunk
        resp.rest = extra
    else:
        while True:
            try:
                chunk = _recv_some(sock, deadline)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed = True
                break
            body += chunk
        resp.body = body
    resp.closed = closed
    return resp


def http_exchange(host: str, port: int, request: bytes, timeout: float = 10.0) -> HTTPResponse:
    """Open a connection, send ``request``, read the response (to EOF for non-101), close."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        return read_http_response(s, timeout)


# ---------------------------------------------------------------------------------------------
# Frames


def mask_bytes(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """Encode a frame. ``length`` overrides the announced payload length (the payload bytes
    given are still appended as they are)."""
    b0 = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return head + key + mask_bytes(payload, key)
    return head + payload


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    if code is None:
        return b""
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0]
        return None

    @property
    def close_reason(self) -> str:
        assert self.opcode == OP_CLOSE
        return self.payload[2:].decode("utf-8")

    def __repr__(self) -> str:
        p = self.payload if len(self.payload) <= 64 else self.payload[:64] + b"..."
        extra = ""
        if self.opcode == OP_CLOSE:
            extra = f" code={self.close_code} reason={self.payload[2:]!r}"
        return f"Frame(op={self.opcode} fin={self.fin} rsv={self.rsv} masked={self.masked} len={len(self.payload)}{extra} {p!r})"


class FrameReader:
    """Incremental parser of server frames from a socket."""

    def __init__(self, sock: socket.socket, initial: bytes = b""):
        self.sock = sock
        self.buf = bytearray(initial)
        self.pos = 0
        self.eof = False

    def _fill(self, need: int, deadline: Deadline) -> bool:
        while len(self.buf) - self.pos < need:
            if self.eof:
                return False
            try:
                chunk = _recv_some(self.sock, deadline, 1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            if self.pos > (1 << 22):
                del self.buf[: self.pos]
                self.pos = 0
            self.buf += chunk
        return True

    def next_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None at EOF. Raises TimeoutError at the deadline."""
        deadline = Deadline(timeout)
        if not self._fill(2, deadline):
            return None
        b0, b1 = self.buf[self.pos], self.buf[self.pos + 1]
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            hl = 4
        elif n == 127:
            hl = 10
        masked = bool(b1 & 0x80)
        if masked:
            hl += 4
        if not self._fill(hl, deadline):
            return None
        if n == 126:
            n = struct.unpack_from("!H", self.buf, self.pos + 2)[0]
        elif n == 127:
            n = struct.unpack_from("!Q", self.buf, self.pos + 2)[0]
        key = bytes(self.buf[self.pos + hl - 4 : self.pos + hl]) if masked else None
        if n > 1 << 30:
            raise AssertionError(f"server announced an absurd frame length {n}")
        if not self._fill(hl + n, deadline):
            return None
        payload = bytes(self.buf[self.pos + hl : self.pos + hl + n])
        self.pos += hl + n
        if key:
            payload = mask_bytes(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked, payload)


class RawWS:
    """A hand-driven WebSocket client connection."""

    def __init__(self, sock: socket.socket, response: HTTPResponse):
        self.sock = sock
        self.response = response
        self.reader = FrameReader(sock, response.rest)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        path: str = "/",
        *,
        extra: list[tuple[str, str]] | None = None,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
    ) -> "RawWS":
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((host, port))
        key = new_key()
        s.sendall(upgrade_request(host, port, path, key=key, extra=extra))
        resp = read_http_response(s, timeout)
        if resp.status != 101:
            s.close()
            raise AssertionError(f"expected 101, got:\n{resp}")
        assert resp.header("Sec-WebSocket-Accept") == accept_for(key), str(resp)
        return cls(s, resp)

    def send_raw(self, data: bytes, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.send_raw(encode_frame(opcode, payload, **kw))

    def send_binary(self, payload: bytes) -> None:
        self.send_frame(OP_BINARY, payload)

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def recv_frame(self, timeout: float = 10.0) -> Frame | None:
        return self.reader.next_frame(timeout)

    def read_until_close(self, timeout: float = 10.0, max_data: int = 1 << 30) -> tuple[bytes, Frame | None]:
        """Read frames until a Close frame (returned) or EOF (None); returns the
        concatenated data payloads received before it. Pings are not answered."""
        deadline = Deadline(timeout)
        data = bytearray()
        while True:
            f = self.reader.next_frame(deadline.left())
            if f is None:
                return bytes(data), None
            assert not f.masked, f"server frame is masked: {f!r}"
            if f.opcode in (OP_BINARY, OP_TEXT, OP_CONT):
                data += f.payload
                if len(data) > max_data:
                    raise AssertionError("more data than expected")
            elif f.opcode == OP_CLOSE:
                return bytes(data), f

    def wait_eof(self, timeout: float = 10.0) -> bool:
        """After a Close exchange: True when the server closes the TCP connection in time."""
        deadline = Deadline(timeout)
        while True:
            try:
                f = self.reader.next_frame(deadline.left())
            except TimeoutError:
                return False
            if f is None:
                return True

    def abort(self) -> None:
        """Close with RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawWS":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
