"""Fault injection (issue 8): broken and hostile peers on both legs, each with its exact outcome.

What the other modules already cover is not repeated here: every malformed frame and its close code
(test_close.py PROTOCOL_CASES: 2^63 lengths, unmasked, RSV, reserved opcodes, control frames over 125 bytes or
fragmented, continuation without start, invalid close codes, invalid UTF-8 in text and close reasons), a backend
reset after a few bytes, a backend half-close with one late frame, a client that floods and resets
(test_backpressure.py), a request head of 100 KiB and a handshake dripped byte by byte (test_handshake.py).
This module adds the faults those leave out, under load where the issue asks for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import struct
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import RSSSampler, read_loop, reset_close, write_atomic, write_token_file, ws_connect
from wsraw import OP_BINARY, OP_CLOSE, RawWS, encode_frame, read_http_response, upgrade_request

KiB = 1 << 10
MiB = 1 << 20

SESSION_CLOSED = re.compile(r"code=(\d+).*closed_by=(\w+).*session closed|session closed")


def session_closed_lines(bridge) -> list[str]:
    return [line for line in bridge.stderr.snapshot() if "session closed" in line]


def wait_session_closed(bridge, count: int, timeout: float) -> list[str]:
    """Waits until the bridge has logged `count` 'session closed' lines; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = session_closed_lines(bridge)
        if len(lines) >= count or time.monotonic() >= deadline:
            return lines
        bridge.stderr.wait_for("session closed", max(0.0, deadline - time.monotonic()), start=len(bridge.stderr.snapshot()))


def metadata(line: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=(\S+)", line)
    return m.group(1) if m else None


def pattern(n: int, seed: int) -> bytes:
    """n deterministic bytes, different for each seed (so a prefix check means something)."""
    block = bytes((seed * 31 + i * 7) & 0xFF for i in range(251))
    return (block * (n // len(block) + 1))[:n]


def round_trip(ws, payload: bytes, timeout: float = 10) -> None:
    """Sends `payload` through an echo and checks that the same bytes come back (in one or more messages)."""
    ws.send(payload)
    got = b""
    while len(got) < len(payload):
        got += ws.recv(timeout=timeout)
    assert got == payload


def recv_all_until_closed(ws, timeout: float) -> tuple[bytes, ConnectionClosed]:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not closed within {timeout}s ({len(got)} bytes received)")
        try:
            msg = ws.recv(timeout=left)
        except ConnectionClosed as e:
            return bytes(got), e
        except TimeoutError:
            continue
        got += msg


# ---------------------------------------------------------------------------------------------
# Backend faults


def test_backend_reset_while_data_flows_both_ways(bridge_factory, backends):
    """The backend resets in the middle of a download while the client uploads: the client gets what the bridge
    had relayed (a prefix of the download), then Close 1011 `backend error`; the session is logged as closed by
    the backend with 1011."""
    download = pattern(4 * MiB, 1)

    def handler(c):
        sender = threading.Thread(target=lambda: c.sock.sendall(download), daemon=True)
        sender.start()
        received = 0
        while received < 256 * KiB:  # reset once the upload is well under way
            chunk = c.sock.recv(64 * KiB)
            if not chunk:
                break
            received += len(chunk)
            c.add(chunk)
        reset_close(c.sock)

    be = backends.custom(handler, "reset-midstream")
    b = bridge_factory(target=be.addr)
    stop = threading.Event()
    with ws_connect(b.url()) as ws:

        def upload():
            try:
                while not stop.is_set():
                    ws.send(pattern(16 * KiB, 2))
            except ConnectionClosed:
                pass

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        got, exc = recv_all_until_closed(ws, timeout=30)
        stop.set()
        uploader.join(10)
    assert exc.rcvd is not None, f"no Close frame: {exc}"
    assert (exc.rcvd.code, exc.rcvd.reason) == (1011, "backend error")
    assert got == download[: len(got)], "the client received bytes that are not a prefix of the download"
    assert len(be.wait_conn().received()) >= 256 * KiB
    (line,) = wait_session_closed(b, 1, 10)
    assert (metadata(line, "code"), metadata(line, "closed_by")) == ("1011", "backend"), line


def hold_handler(release: threading.Event):
    """Accepts and reads nothing until `release`, then reads (recording) to the end."""

    def handler(c):
        release.wait(120)
        read_loop(c)
        c.sock.close()

    return handler


def test_backend_that_never_reads_a_flooding_client_is_bounded_and_ends_within_close_timeout(
    bridge_factory, backends, tmp_path
):
    """A backend accepts and never reads; the client floods without reading replies. The bridge pushes back (the
    client's sends block), its memory stays bounded, other sessions are served meanwhile (no wedge), and when the
    flooding client vanishes the session ends within --close-timeout. What the backend finally reads is a prefix
    of what the client sent: nothing reordered or invented."""
    release = threading.Event()
    hold = backends.custom(hold_handler(release), "hold", rcvbuf=64 * KiB)
    echo = backends.echo()
    targets = write_token_file(tmp_path / "targets.cfg", {"hold": hold.addr, "echo": echo.addr})
    b = bridge_factory("--targets", str(targets), "--close-timeout", "1")
    with ws_connect(b.url("/?token=echo")) as warm:
        round_trip(warm, b"w" * 4096)
    idle = b.rss_kib()

    ws = RawWS.connect(b.connect_host, b.port, "/?token=hold", rcvbuf=64 * KiB)
    stream = bytearray()
    frames = 0
    with RSSSampler(b) as rss:
        ws.sock.settimeout(2)  # a send blocked this long: the bridge is pushing back
        pushed_back = False
        try:
            while len(stream) < 256 * MiB:
                payload = pattern(64 * KiB, frames)
                ws.sock.sendall(encode_frame(OP_BINARY, payload))
                stream += payload
                frames += 1
        except (socket.timeout, TimeoutError):
            pushed_back = True
        assert pushed_back, "256 MiB went into a backend that reads nothing: no backpressure"

        # No wedge: another session is served while this one is stuck. The echo is the event; its deadline is
        # generous (a loaded 2-core machine is slow, a wedged bridge never answers).
        with ws_connect(b.url("/?token=echo"), open_timeout=15) as other:
            round_trip(other, b"still here", timeout=15)

        vanished = time.monotonic()
        ws.abort()
        lines = wait_session_closed(b, 3, 15)  # warm-up, other, and the flooding session
    flood_line = [line for line in lines if metadata(line, "target") == "h…"]
    assert flood_line, lines
    # The flush to a backend that does not read waits --close-timeout (1 s), not the default 5 s: the bound leaves
    # 3.5 s for a loaded machine and still tells the two apart; the lower bound shows the flush was waited for.
    ended = time.monotonic() - vanished
    assert 0.9 <= ended < 4.5, f"session ended {ended:.2f}s after the client vanished, with --close-timeout 1"
    assert metadata(flood_line[0], "code") == "1006", flood_line[0]
    # The bridge holds at most its write buffer's high water mark (256 KiB) and a few reads; the rest waits in
    # kernel buffers. RSS also keeps what the allocator does not give back, so the bound is loose (as in
    # test_backpressure.py) but far below the 256 MiB offered.
    growth = rss.peak - idle
    assert growth < 32 * 1024, f"RSS grew {growth} KiB while a client flooded a backend that does not read"

    release.set()
    conn = hold.wait_conn()
    assert conn.wait_end(15), "the backend never saw the end of its connection"
    got = conn.received()
    assert got == bytes(stream[: len(got)]), "bytes at the backend are not a prefix of the client's stream"


def filled_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener whose accept queue is full, so that a new connect is never answered (its SYNs are
    dropped). Returns the listener and the connections that fill it (keep them open)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(16):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
        _, writable, _ = select.select([], [s], [], 0.5)
        if not writable:  # this one is left unanswered: the queue is full
            return listener, fillers
    raise AssertionError("could not fill the listener's accept queue")


def test_connect_timeout_to_a_backend_that_never_answers(bridge_factory):
    listener, fillers = filled_listener()
    try:
        host, port = listener.getsockname()
        b = bridge_factory("--connect-timeout", "1", target=f"{host}:{port}")
        t0 = time.monotonic()
        with RawWS.connect(b.connect_host, b.port, timeout=15) as ws:  # the 101 comes after the attempt
            data, close = ws.read_until_close(timeout=15)
            elapsed = time.monotonic() - t0
            assert data == b""
            assert close is not None, "no Close frame"
            assert (close.close_code, close.close_reason) == (1014, "backend connect timeout")
            ws.send_close(1014)
            assert ws.wait_eof(10)
        # --connect-timeout 1, not the default 10: 6 s of margin for a loaded machine still tells them apart.
        assert 0.9 <= elapsed <= 7, f"Close 1014 after {elapsed:.2f}s with --connect-timeout 1"
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_backend_half_close_after_a_megabyte_client_keeps_sending(bridge_factory, backends):
    """The backend sends 1 MiB and shuts down its write side only: the client gets every byte, then Close 1000
    `backend closed`, and what it sends before answering the Close (another 1 MiB) still reaches the backend,
    which then sees EOF."""
    down = pattern(MiB, 3)
    up = pattern(MiB, 4)
    src = backends.source(down, after="halfclose")
    b = bridge_factory(target=src.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        data, close = ws.read_until_close(timeout=30)
        assert data == down
        assert close is not None and (close.close_code, close.close_reason) == (1000, "backend closed"), close
        for i in range(0, len(up), 64 * KiB):
            ws.send_binary(up[i : i + 64 * KiB])
        ws.send_close(1000)
        assert ws.wait_eof(10), "the bridge did not close the connection after the closing handshake"
    conn = src.wait_conn()
    assert conn.wait_end(10), "backend got no EOF"
    assert conn.received() == up


# ---------------------------------------------------------------------------------------------
# Client faults


def test_client_that_goes_silent_is_dead_and_its_backend_is_closed(bridge_factory, backends):
    """A client that neither reads nor answers pings (vanished without FIN or RST): after --pong-timeout the
    bridge drops it, delivers what it had accepted, and closes the backend (which sees EOF)."""
    col = backends.collect()
    b = bridge_factory("--ping-interval", "1", "--pong-timeout", "1", target=col.addr)
    ws = RawWS.connect(b.connect_host, b.port)
    try:
        ws.send_binary(b"last words")
        conn = col.wait_conn()
        assert conn.wait_bytes(10, 10)
        t0 = time.monotonic()
        assert conn.wait_end(10), "backend still open 10 s after the client went silent"
        elapsed = time.monotonic() - t0
        # A ping after 1 s, dead 1 s later (--ping-interval 1, --pong-timeout 1; the defaults are 30 and 30): the
        # upper bound leaves a loaded machine 13 s and still tells these from the defaults.
        assert 1.0 <= elapsed <= 15, f"backend closed {elapsed:.2f}s after the client went silent"
        assert conn.received() == b"last words"
        (line,) = wait_session_closed(b, 1, 10)
        assert (metadata(line, "code"), metadata(line, "closed_by")) == ("1006", "server"), line
        # What the silent client would find: pings, then the connection closed without a Close frame.
        data, close = ws.read_until_close(timeout=5)
        assert close is None and data == b""
    finally:
        ws.close()


@pytest.mark.parametrize("kind", ["relay", "echo"])
def test_frames_sent_in_the_same_segment_as_the_request_are_not_lost(bridge_factory, backends, tmp_path, kind):
    """A client that does not wait for the 101 (RFC 6455 says it must; nothing stops one): its first frames arrive
    with the request. They reach the session. (Found by fuzzing: the relay lost them, the echo target crashed the
    process.)"""
    echo = backends.echo()
    targets = tmp_path / "targets.yaml"
    write_atomic(targets, f"targets:\n  relay: {echo.addr}\n  echo: {{ echo: true }}\n")
    b = bridge_factory("--targets", str(targets))
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        frames = encode_frame(OP_BINARY, b"early") + encode_frame(OP_BINARY, b" bird")
        s.sendall(upgrade_request(b.connect_host, b.port, f"/?token={kind}") + frames)
        resp = read_http_response(s, timeout=10)
        assert resp.status == 101, str(resp)
        ws = RawWS(s, resp)
        got = b""
        while len(got) < len(b"early bird"):
            f = ws.recv_frame(timeout=10)
            assert f is not None and f.opcode == OP_BINARY, f
            got += f.payload
        assert got == b"early bird"
        ws.send_close(1000)
        _, close = ws.read_until_close(timeout=10)
        assert close is not None and close.close_code == 1000
    assert b.proc.poll() is None, "the bridge died"


# ---------------------------------------------------------------------------------------------
# Hostile request heads


def send_request_expect_refusal(b, request: bytes) -> None:
    with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole request was read
        resp = read_http_response(s, timeout=15)
    assert resp.status in (431, 400), str(resp)
    assert resp.closed, "the connection stays open after the refusal"


@pytest.mark.parametrize(
    "name,extra",
    [
        ("one-64KiB-header", [("X-Big", "x" * (64 * KiB))]),
        ("10000-header-lines", [(f"X-H{i}", "v") for i in range(10_000)]),
        ("10000-empty-values", [("X-E", "") for _ in range(10_000)]),
    ],
)
def test_hostile_request_heads_are_refused_and_the_bridge_stays_up(echo_bridge, name, extra):
    b, echo = echo_bridge
    request = upgrade_request(b.connect_host, b.port, extra=extra)
    assert len(request) >= 60 * KiB
    send_request_expect_refusal(b, request)
    assert echo.conns == [], "a backend was connected for a refused request"
    with ws_connect(b.url()) as ws:  # still serving
        round_trip(ws, b"ok")


def test_refused_connections_leave_nothing_behind(echo_bridge):
    """Thousands of refused requests (unknown path, garbage): the bridge's memory stays flat from one round to the
    next. (It grew about 5 KiB per refused connection: the fallback handler and the connection state held each
    other.)"""
    b, echo = echo_bridge
    requests = [b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01 garbage\r\n\r\n"]

    def round_of(n: int) -> int:
        for i in range(n):
            with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
                s.sendall(requests[i % 2])
                resp = read_http_response(s, timeout=10)
                assert resp.status in (400, 404), str(resp)
        return b.rss_kib()

    round_of(600)  # warm-up: the allocator's pools
    first = round_of(600)
    last = round_of(1200)
    assert last - first < 1024, f"RSS grew {last - first} KiB over 1,200 refused connections"
    assert echo.conns == []


# ---------------------------------------------------------------------------------------------
# Under load


class Streamer:
    """A raw client that streams numbered frames to the bridge until it receives a Close, then answers it."""

    def __init__(self, b, index: int, frame_size: int = 4 * KiB):
        self.index = index
        self.tag = b"S%05d:" % index
        self.ws = RawWS.connect(b.connect_host, b.port)
        self.frame_size = frame_size
        self.sent = bytearray()
        self.stop = threading.Event()
        self.close = None
        self.data = b""
        self.error: BaseException | None = None
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.sender.start()
        self.reader.start()

    def _send(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                payload = self.tag if n == 0 else pattern(self.frame_size, self.index + n)
                self.ws.sock.sendall(encode_frame(OP_BINARY, payload))
                self.sent += payload
                n += 1
                if n % 8 == 0:
                    time.sleep(0.01)  # pace the load so that 2 cores also run the bridge
        except OSError as e:
            self.error = e

    def _read(self) -> None:
        """Reads until the bridge's Close, then stops the sender and answers the Close after its last data frame,
        at once (the bridge waits --close-timeout for it)."""
        try:
            self.data, self.close = self.ws.read_until_close(timeout=60)
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self.stop.set()
        self.sender.join(10)
        if self.close is not None:
            try:
                self.ws.send_raw(encode_frame(OP_CLOSE, struct.pack("!H", self.close.close_code)))
            except OSError as e:
                self.error = e


def test_sigterm_under_load_every_session_gets_1001_and_no_accepted_byte_is_lost(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory("--shutdown-timeout", "15", target=col.addr)
    streamers = [Streamer(b, i) for i in range(40)]
    for s in streamers:
        s.start()
    conns = [col.wait_conn(i) for i in range(len(streamers))]
    for c in conns:
        assert c.wait_bytes(64 * KiB, 20), "a session did not get going"

    b.signal(signal.SIGTERM)
    for s in streamers:
        s.reader.join(40)
        assert not s.reader.is_alive(), f"session {s.index}: no Close within 40 s"
        assert s.error is None, f"session {s.index}: {s.error!r}"
        assert s.close is not None, f"session {s.index}: no Close frame"
        assert (s.close.close_code, s.close.close_reason) == (1001, "server shutting down")
    by_tag = {}
    for c in conns:
        assert c.wait_end(20), "a backend connection was not closed after its client's Close"
        got = c.received()
        by_tag[got[:7]] = got
    for s in streamers:
        got = by_tag.get(bytes(s.tag))
        assert got is not None, f"session {s.index}: no backend connection carries its bytes"
        assert len(got) == len(s.sent), f"session {s.index}: backend got {len(got)} of {len(s.sent)} bytes"
        assert got == bytes(s.sent), f"session {s.index}: bytes differ"
    assert b.wait_exit(20) == 0
    for s in streamers:
        s.ws.close()


def test_targets_reload_under_load_changes_nothing_for_live_sessions(bridge_factory, backends, tmp_path):
    """Sessions echo through backend A while the file is rewritten to send their token to backend B and SIGHUP
    reloads it: with `on_revoke: keep`, every live session keeps its backend, loses no byte and stays open; a new
    session goes to B. (Without it the retargeted sessions are closed with 1008: test_routing.py.)"""
    echo_a = backends.echo()
    echo_b = backends.echo()
    targets = tmp_path / "targets.yaml"
    write_atomic(targets, f"targets:\n  live:\n    backend: {echo_a.addr}\n    on_revoke: keep\n")
    b = bridge_factory("--targets", str(targets))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(b.url("/?token=live"))) for _ in range(20)]
        _reload_under_load(b, clients, targets, echo_a, echo_b)


def _reload_under_load(b, clients, targets, echo_a, echo_b) -> None:
    reloaded = threading.Event()
    errors: list[str] = []
    rounds = [0] * len(clients)

    def traffic(i: int, ws) -> None:
        try:
            n = 0
            while not reloaded.is_set() or n < rounds_after_reload(i):
                round_trip(ws, pattern(16 * KiB, i * 1000 + n), timeout=20)
                n += 1
                rounds[i] = n
        except Exception as e:  # noqa: BLE001
            errors.append(f"session {i}: {e!r}")

    marks: dict[int, int] = {}

    def rounds_after_reload(i: int) -> int:
        return marks.setdefault(i, rounds[i] + 20)

    threads = [threading.Thread(target=traffic, args=(i, ws), daemon=True) for i, ws in enumerate(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while min(rounds) < 5 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)  # polling the other threads' progress
    assert min(rounds) >= 5, f"traffic did not get going: {rounds} {errors}"

    start = len(b.stderr.snapshot())
    write_atomic(targets, f"targets:\n  live:\n    backend: {echo_b.addr}\n    on_revoke: keep\n  fresh: {echo_b.addr}\n")
    b.signal(signal.SIGHUP)
    assert b.stderr.wait_for("targets reloaded", 10, start=start), b.log()
    reloaded.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(r >= 25 for r in rounds), rounds
    assert len(echo_a.conns) == len(clients)
    assert echo_b.conns == [], "a live session moved to the new backend"
    assert session_closed_lines(b) == [], "a live session was closed by the reload"

    with ws_connect(b.url("/?token=live")) as fresh:
        round_trip(fresh, b"new route")
    assert len(echo_b.conns) == 1 and len(echo_a.conns) == len(clients)
