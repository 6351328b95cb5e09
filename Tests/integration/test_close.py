"""Close codes, closing steps, protocol errors, shutdown and session logs (docs/behaviour.md,
"Close codes sent by the bridge", "Closing steps", "Logs")."""

from __future__ import annotations

import os
import re
import secrets
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import reset_close, write_token_file, ws_connect
from wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RawWS,
    close_payload,
    encode_frame,
)

MiB = 1 << 20


def recv_until_closed(ws, timeout: float = 30.0) -> tuple[bytes, ConnectionClosed]:
    """All binary data received, then the ConnectionClosed exception (with .rcvd)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection not closed within {timeout}s; {len(got)} bytes received")
        try:
            msg = ws.recv(timeout=left)
        except ConnectionClosed as e:
            return bytes(got), e
        except TimeoutError:
            continue
        assert isinstance(msg, bytes), type(msg)
        got += msg


def assert_rcvd(exc: ConnectionClosed, code: int, reason: str | None) -> None:
    assert exc.rcvd is not None, f"no Close frame received from the bridge: {exc}"
    assert exc.rcvd.code == code, f"close code {exc.rcvd.code} ({exc.rcvd.reason!r}), expected {code}"
    if reason is not None:
        assert exc.rcvd.reason == reason, f"close reason {exc.rcvd.reason!r}, expected {reason!r}"


# ---------------------------------------------------------------------------------------------
# Client-initiated close


def test_client_close_flushes_then_backend_eof(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    data = [os.urandom(n) for n in (1, 1000, 300_000, MiB, 17)]
    with ws_connect(b.url()) as ws:
        for m in data:
            ws.send(m)
        ws.close(1000)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    conn = col.wait_conn()
    assert conn.wait_end(15), "backend never saw EOF after the client's Close"
    assert conn.eof, f"backend saw an error instead of EOF: {conn.error!r}"
    assert conn.received() == b"".join(data)


def test_client_close_code_is_echoed(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    with ws_connect(b.url()) as ws:
        ws.send(b"bye")
        ws.close(4001, "custom")
        assert ws.protocol.close_rcvd is not None, "no Close from the bridge"
        assert ws.protocol.close_rcvd.code == 4001
    conn = col.wait_conn()
    assert conn.wait_end(15) and conn.eof
    assert conn.received() == b"bye"


def test_client_close_without_code_answered_1000(echo_bridge):
    b, echo = echo_bridge
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_close(None)
        _, close = ws.read_until_close(timeout=3)
        assert close is not None and close.close_code == 1000, close
        assert ws.wait_eof(4), "bridge did not close the TCP connection after the Close exchange"
    assert echo.wait_conn().wait_end(10)


def test_client_close_answered_at_once_raw(bridge_factory, backends):
    """The Close is answered at once, even when the backend keeps its side open (sink)."""
    sink = backends.sink()
    b = bridge_factory(target=sink.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_binary(b"some bytes")
        t0 = time.monotonic()
        ws.send_close(1000, b"done")
        _, close = ws.read_until_close(timeout=4)
        assert close is not None and close.close_code == 1000, close
        assert time.monotonic() - t0 < 2, "Close not answered at once"
        assert ws.wait_eof(4)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_backend_closed_by_bridge_after_close_timeout(bridge_factory, backends):
    """After a client Close, a backend that never sends EOF (sink) gets the half-close at once
    and is fully closed by the bridge after --close-timeout (its fd is released)."""
    sink = backends.sink()
    b = bridge_factory("--close-timeout", "1", target=sink.addr)
    base = fd_count(b.pid)

    with ws_connect(b.url()) as ws:
        ws.send(b"x")
        ws.close()
    conn = sink.wait_conn(0)
    # the half-close arrives at once, after the data
    conn.sock.settimeout(3)
    got = b""
    while True:
        d = conn.sock.recv(65536)
        if not d:
            break
        got += d
    assert got == b"x"
    t0 = time.monotonic()
    while fd_count(b.pid) > base:
        assert time.monotonic() - t0 < 6, (
            f"bridge still holds {fd_count(b.pid) - base} extra fds 6s after the client's Close "
            "with --close-timeout 1 (backend never closed)"
        )
        time.sleep(0.1)  # sampling /proc


# ---------------------------------------------------------------------------------------------
# Backend-initiated close and backend failures


def test_backend_close_after_1mib(bridge_factory, backends):
    payload = os.urandom(MiB)
    src = backends.source(payload, after="close")
    b = bridge_factory(target=src.addr)
    with ws_connect(b.url()) as ws:
        got, exc = recv_until_closed(ws)
    assert len(got) == len(payload), f"received {len(got)} of {len(payload)} bytes before the Close"
    assert got == payload
    assert_rcvd(exc, 1000, "backend closed")


def test_backend_half_close_relays_late_client_frames(bridge_factory, backends):
    """Backend EOF: Close 1000 goes out, client frames still arriving are relayed to the backend
    until the client answers the Close."""
    src = backends.source(b"bye", after="halfclose")
    b = bridge_factory(target=src.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        data, close = ws.read_until_close()
        assert data == b"bye"
        assert close is not None and close.close_code == 1000 and close.close_reason == "backend closed", close
        ws.send_binary(b"late frame")
        ws.send_close(1000)
        assert ws.wait_eof(10)
    conn = src.wait_conn()
    assert conn.wait_end(10), "backend did not get EOF"
    assert conn.received() == b"late frame"


def test_backend_refused(bridge_factory, refused_port):
    b = bridge_factory(target=f"127.0.0.1:{refused_port}")
    with ws_connect(b.url()) as ws:  # the upgrade completes (101)
        _, exc = recv_until_closed(ws, timeout=15)
    assert_rcvd(exc, 1014, "backend refused")


def test_backend_refused_raw_101_then_1014(bridge_factory, refused_port):
    b = bridge_factory(target=f"127.0.0.1:{refused_port}")
    with RawWS.connect(b.connect_host, b.port) as ws:
        assert ws.response.status == 101
        _, close = ws.read_until_close(timeout=15)
        assert close is not None, "no Close frame"
        assert (close.close_code, close.close_reason) == (1014, "backend refused")


def test_backend_refused_token_mode(bridge_factory, refused_port, tmp_path):
    f = write_token_file(tmp_path / "t", {"tok": f"127.0.0.1:{refused_port}"})
    b = bridge_factory("--targets", f)
    with ws_connect(b.url("/?token=tok")) as ws:
        _, exc = recv_until_closed(ws, timeout=15)
    assert_rcvd(exc, 1014, "backend refused")


def test_backend_unresolvable(bridge_factory):
    b = bridge_factory(target="nonexistent.invalid:5900")
    with ws_connect(b.url()) as ws:
        _, exc = recv_until_closed(ws, timeout=20)
    assert_rcvd(exc, 1014, "backend unresolvable")


def test_backend_reset_mid_stream(bridge_factory, backends):
    def handler(c):
        c.sock.sendall(b"hello")
        d = c.sock.recv(100)
        c.add(d)
        reset_close(c.sock)

    be = backends.custom(handler, "reset")
    b = bridge_factory(target=be.addr)
    with ws_connect(b.url()) as ws:
        assert ws.recv(timeout=10) == b"hello"
        ws.send(b"x")
        _, exc = recv_until_closed(ws, timeout=15)
    assert_rcvd(exc, 1011, "backend error")


# ---------------------------------------------------------------------------------------------
# Timeouts


def test_idle_timeout(bridge_factory, backends):
    sink = backends.sink()
    b = bridge_factory("--session-idle-timeout", "1", target=sink.addr)
    with ws_connect(b.url()) as ws:
        t0 = time.monotonic()
        _, exc = recv_until_closed(ws, timeout=15)
        elapsed = time.monotonic() - t0
    assert_rcvd(exc, 1001, "idle timeout")
    assert 0.8 <= elapsed <= 5, f"idle close after {elapsed:.2f}s with --session-idle-timeout 1"


def test_idle_timeout_reset_by_traffic(echo_bridge_idle):
    b = echo_bridge_idle
    with ws_connect(b.url()) as ws:
        t0 = time.monotonic()
        # keep data moving for 2.5 s (over twice the idle timeout): the session must stay open
        while time.monotonic() - t0 < 2.5:
            ws.send(b"tick")
            assert ws.recv(timeout=5) == b"tick"
            time.sleep(0.25)  # pacing of the traffic, not synchronisation
        t1 = time.monotonic()
        _, exc = recv_until_closed(ws, timeout=15)
        elapsed = time.monotonic() - t1
    assert_rcvd(exc, 1001, "idle timeout")
    assert 0.5 <= elapsed <= 5


@pytest.fixture
def echo_bridge_idle(bridge_factory, backends):
    echo = backends.echo()
    return bridge_factory("--session-idle-timeout", "1", target=echo.addr)


def test_idle_timeout_decimal(bridge_factory, backends):
    sink = backends.sink()
    b = bridge_factory("--session-idle-timeout", "0.5", target=sink.addr)
    with ws_connect(b.url()) as ws:
        t0 = time.monotonic()
        _, exc = recv_until_closed(ws, timeout=15)
    assert_rcvd(exc, 1001, "idle timeout")
    assert time.monotonic() - t0 < 4


# ---------------------------------------------------------------------------------------------
# Protocol errors (raw frames)


PROTOCOL_CASES = {
    # name: (frames to send, expected code, expected reason or None)
    "unmasked": ([encode_frame(OP_BINARY, b"abc", mask=False)], 1002, None),
    "rsv1": ([encode_frame(OP_BINARY, b"abc", rsv=4)], 1002, None),
    "rsv2": ([encode_frame(OP_BINARY, b"abc", rsv=2)], 1002, None),
    "rsv3": ([encode_frame(OP_BINARY, b"abc", rsv=1)], 1002, None),
    "opcode-3": ([encode_frame(3, b"abc")], 1002, None),
    "opcode-0xB": ([encode_frame(0xB, b"abc")], 1002, None),
    "ping-126": ([encode_frame(OP_PING, b"p" * 126)], 1002, None),
    "ping-fragmented": ([encode_frame(OP_PING, b"p", fin=False)], 1002, None),
    "continuation-without-start": ([encode_frame(OP_CONT, b"abc")], 1002, None),
    "data-inside-fragmented": (
        [encode_frame(OP_BINARY, b"a", fin=False), encode_frame(OP_BINARY, b"b")],
        1002,
        None,
    ),
    "close-1-byte": ([encode_frame(OP_CLOSE, b"\x03")], 1002, None),
    **{
        f"close-code-{c}": ([encode_frame(OP_CLOSE, close_payload(c))], 1002, None)
        for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    },
    "text-ff": ([encode_frame(OP_TEXT, b"\xff")], 1007, "invalid UTF-8 in text message"),
    "text-truncated": ([encode_frame(OP_TEXT, b"ok\xe2\x82")], 1007, "invalid UTF-8 in text message"),
    "text-overlong": ([encode_frame(OP_TEXT, b"\xc0\xaf")], 1007, "invalid UTF-8 in text message"),
    "text-surrogate": ([encode_frame(OP_TEXT, b"\xed\xa0\x80")], 1007, "invalid UTF-8 in text message"),
    "text-bad-across-fragments": (
        [encode_frame(OP_TEXT, b"ok\xc3", fin=False), encode_frame(OP_CONT, b"(", fin=True)],
        1007,
        "invalid UTF-8 in text message",
    ),
    "close-reason-bad-utf8": ([encode_frame(OP_CLOSE, close_payload(1000, b"\xff"))], 1007, "invalid UTF-8 in close reason"),
    "length-2^63-1": ([encode_frame(OP_BINARY, b"", length=2**63 - 1)], 1009, "frame too big"),
    "length-msb-set": ([encode_frame(OP_BINARY, b"", length=2**63)], 1002, None),
    "length-2^64-1": ([encode_frame(OP_BINARY, b"", length=2**64 - 1)], 1002, None),
}


@pytest.mark.parametrize("name", list(PROTOCOL_CASES))
def test_protocol_error(bridge_factory, backends, name):
    frames, code, reason = PROTOCOL_CASES[name]
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_binary(b"before")
        conn = col.wait_conn()
        assert conn.wait_bytes(6, 10)
        try:
            for fr in frames:
                ws.send_raw(fr)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _, close = ws.read_until_close(timeout=10)
        assert close is not None, "bridge closed the connection without a Close frame"
        assert not close.masked
        assert close.close_code == code, f"{close!r}: expected code {code}"
        if reason is not None:
            assert close.close_reason == reason, f"{close!r}: expected reason {reason!r}"
        try:
            ws.send_close(code)
        except OSError:
            pass
        assert ws.wait_eof(10), "bridge did not close the TCP connection"
    assert conn.wait_end(10), "backend not closed after a protocol error"
    assert conn.received().startswith(b"before")


def test_max_frame_size(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--max-frame-size", "1024", target=echo.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        ok = os.urandom(1024)
        ws.send_binary(ok)
        got = b""
        while len(got) < 1024:
            f = ws.recv_frame()
            assert f is not None and f.opcode == OP_BINARY, f
            got += f.payload
        assert got == ok
        try:
            ws.send_raw(encode_frame(OP_BINARY, os.urandom(1025)))
        except OSError:
            pass
        _, close = ws.read_until_close(timeout=10)
        assert close is not None
        assert (close.close_code, close.close_reason) == (1009, "frame too big")


def test_max_frame_size_header_only(bridge_factory, backends):
    """The limit applies to the announced length: refused before the payload arrives."""
    echo = backends.echo()
    b = bridge_factory("--max-frame-size", "1024", target=echo.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_raw(encode_frame(OP_BINARY, b"", length=2048))
        _, close = ws.read_until_close(timeout=10)
        assert close is not None
        assert (close.close_code, close.close_reason) == (1009, "frame too big")


def test_max_message_size_counts_the_frames_of_a_message(bridge_factory, backends):
    """--max-message-size bounds a fragmented message as a whole (docs/behaviour.md): the fragments up to the
    limit reach the backend byte-exact, the frame that crosses it gets 1009 "message too big" at its header."""
    col = backends.collect()
    b = bridge_factory("--max-frame-size", "1024", "--max-message-size", "4096", target=col.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        parts = [os.urandom(1024) for _ in range(4)]
        ws.send_raw(encode_frame(OP_BINARY, parts[0], fin=False))
        for part in parts[1:]:
            ws.send_raw(encode_frame(OP_CONT, part, fin=False))
        conn = col.wait_conn()
        assert conn.wait_bytes(4096, 10)
        try:
            ws.send_raw(encode_frame(OP_CONT, b"x", fin=True))
        except OSError:
            pass
        _, close = ws.read_until_close(timeout=10)
        assert close is not None
        assert (close.close_code, close.close_reason) == (1009, "message too big")
        assert conn.wait_end(10), "backend not closed after the refused message"
        assert conn.received() == b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Shutdown


def test_sigterm_closes_sessions_1001_and_exits_0(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--shutdown-timeout", "5", target=echo.addr)
    with ws_connect(b.url()) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=10) == b"ping"
        t0 = time.monotonic()
        b.signal(signal.SIGTERM)
        _, exc = recv_until_closed(ws, timeout=10)
    assert_rcvd(exc, 1001, "server shutting down")
    rc = b.wait_exit(5 + 5)
    assert rc is not None, f"bridge still running {time.monotonic() - t0:.1f}s after SIGTERM"
    assert rc == 0, f"exit code {rc}; stderr:\n{b.log()}"


def test_sigint_closes_sessions_1001_and_exits_0(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--shutdown-timeout", "5", target=echo.addr)
    with ws_connect(b.url()) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=10) == b"ping"
        b.signal(signal.SIGINT)
        _, exc = recv_until_closed(ws, timeout=10)
    assert_rcvd(exc, 1001, "server shutting down")
    assert b.wait_exit(10) == 0


def test_sigterm_with_unresponsive_client_bounded_by_shutdown_timeout(bridge_factory, backends):
    """A client that never answers the Close cannot hold the process beyond --shutdown-timeout."""
    echo = backends.echo()
    b = bridge_factory("--shutdown-timeout", "2", target=echo.addr)
    ws = RawWS.connect(b.connect_host, b.port)
    try:
        ws.send_binary(b"x")
        f = ws.recv_frame()
        assert f is not None and f.payload == b"x"
        t0 = time.monotonic()
        b.signal(signal.SIGTERM)
        # read the Close but never answer it
        _, close = ws.read_until_close(timeout=10)
        assert close is not None and (close.close_code, close.close_reason) == (1001, "server shutting down"), close
        rc = b.wait_exit(2 + 6)
        elapsed = time.monotonic() - t0
        assert rc == 0, f"exit code {rc} after {elapsed:.1f}s (shutdown timeout 2s); stderr:\n{b.log()}"
    finally:
        ws.close()


def test_sigterm_idle_exits_0(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory(target=echo.addr)
    b.signal(signal.SIGTERM)
    assert b.wait_exit(10) == 0


# ---------------------------------------------------------------------------------------------
# Session logs


META = lambda key: re.compile(rf"\b{key}=(\S+)")


def meta(line: str, key: str) -> str | None:
    m = META(key).search(line)
    if not m:
        return None
    return m.group(1).strip("\"'")


def test_session_log_lines_and_token_redaction(bridge_factory, backends, tmp_path):
    token = secrets.token_hex(16)  # 32 characters
    assert len(token) == 32
    down_payload = os.urandom(3000)
    src = backends.source(down_payload, after="open")
    f = write_token_file(tmp_path / "tokens", {token: src.addr})
    b = bridge_factory("--targets", f)
    up_payload = os.urandom(12345)

    # a refused attempt with another unknown 32-char token: never logged in full either
    other = secrets.token_hex(16)
    from wsraw import http_exchange, upgrade_request

    resp = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, f"/?token={other}"))
    assert resp.status == 404

    with ws_connect(b.url(f"/?token={token}")) as ws:
        client_port = ws.socket.getsockname()[1]
        got = bytearray()
        while len(got) < len(down_payload):
            got += ws.recv(timeout=10)
        assert bytes(got) == down_payload
        ws.send(up_payload[:5000])
        ws.send(up_payload[5000:])
        ws.close(1000)

    m = b.stderr.wait_for(r"session closed", 15)
    assert m, f"no 'session closed' line; stderr:\n{b.log()}"
    log = b.log()
    opened = [l for l in log.splitlines() if "session open" in l]
    closed = [l for l in log.splitlines() if "session closed" in l]
    assert len(opened) == 1, log
    assert len(closed) == 1, log
    line = closed[0]
    assert meta(line, "up") == str(len(up_payload)), line
    assert meta(line, "down") == str(len(down_payload)), line
    assert meta(line, "code") == "1000", line
    assert meta(line, "closed_by") == "client", line
    duration = meta(line, "duration")
    assert duration is not None and float(duration.rstrip("s")) >= 0, line
    for l in (opened[0], line):
        client = meta(l, "client")
        assert client is not None and client.endswith(f":{client_port}") and "127.0.0.1" in client, l
        target = meta(l, "target")
        assert target is not None and target.endswith("…"), l
        prefix = target[: -len("…")]
        assert 0 < len(prefix) < len(token) and token.startswith(prefix), l
    assert token not in log, "the full token appears in the logs"
    assert other not in log, "the full unknown token appears in the logs"
    assert token not in "\n".join(b.stdout.snapshot())


def test_session_log_backend_close_and_named_target(bridge_factory, backends, tmp_path):
    src = backends.source(b"0123456789", after="close")
    f = tmp_path / "t.yaml"
    f.write_text(f"targets:\n  mydb:\n    token: {'k' * 32}\n    backend: {src.addr}\n")
    b = bridge_factory("--targets", f)
    with ws_connect(b.url("/?token=" + "k" * 32)) as ws:
        got, exc = recv_until_closed(ws)
    assert got == b"0123456789"
    assert_rcvd(exc, 1000, "backend closed")
    assert b.stderr.wait_for(r"session closed", 15), b.log()
    line = [l for l in b.log().splitlines() if "session closed" in l][0]
    assert meta(line, "target") == "mydb", line
    assert meta(line, "down") == "10", line
    assert meta(line, "up") == "0", line
    assert meta(line, "code") == "1000", line
    assert meta(line, "closed_by") == "backend", line
    assert "k" * 32 not in b.log()


def test_session_log_connection_lost_is_1006(echo_bridge):
    b, echo = echo_bridge
    ws = RawWS.connect(b.connect_host, b.port)
    ws.send_binary(b"abc")
    f = ws.recv_frame()
    assert f is not None and f.payload == b"abc"
    ws.abort()
    assert b.stderr.wait_for(r"session closed", 15), b.log()
    line = [l for l in b.log().splitlines() if "session closed" in l][0]
    assert meta(line, "code") == "1006", line
    assert meta(line, "closed_by") == "client", line
    assert meta(line, "target") == "default", line
    assert meta(line, "up") == "3" and meta(line, "down") == "3", line
    assert echo.wait_conn().wait_end(10)


def test_session_log_server_shutdown(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--shutdown-timeout", "5", target=echo.addr)
    with ws_connect(b.url()) as ws:
        b.signal(signal.SIGTERM)
        recv_until_closed(ws, timeout=10)
    assert b.wait_exit(10) == 0
    b.stderr.thread.join(5)
    closed = [l for l in b.log().splitlines() if "session closed" in l]
    assert len(closed) == 1, b.log()
    assert meta(closed[0], "code") == "1001", closed[0]
    assert meta(closed[0], "closed_by") == "server", closed[0]
