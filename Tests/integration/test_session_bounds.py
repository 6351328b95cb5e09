"""After the 101, and on every listener, what a peer can make the bridge hold is bounded (issue 13):

- a client that pings and never reads holds at most one pending Pong (RFC 6455 §5.5.3: answer the latest);
- a live client whose reads the bridge itself holds back (a slow backend) is not closed as a dead peer;
- an HTTP answer (a large static file) to a client that stops reading is closed after the stall deadline, while a
  slow reader that keeps reading gets the whole file;
- half a request to the metrics listener is closed at the handshake deadline, and that listener holds at most
  128 connections at once (one over the cap is closed at once);
- password hashing has a bounded queue: beyond it, 503 with Retry-After, at once.

docs/behaviour.md, "Session bounds".
"""

from __future__ import annotations

import crypt  # noqa: deprecated in 3.11, still the way to make a bcrypt hash without a PyPI package
import hashlib
import os
import select
import selectors
import socket
import threading
import time

import pytest

from conftest import Conn
from test_handshake_bounds import FD_SLACK, MARGIN, closed_by_peer, fd_count, wait_fds_at_most
from test_operability import metrics_port
from wsraw import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, RawWS, encode_frame, read_http_response, upgrade_request


def test_a_client_that_pings_and_never_reads_holds_one_pong(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory(target=echo.addr)
    baseline_rss = b.rss_kib()
    ws = RawWS.connect(b.connect_host, b.port, rcvbuf=4096)
    pings = 200_000
    payload_size = 125
    last = b""
    try:
        # Never read: the bridge's answers back up into its own buffers. 200,000 Pongs of 125 bytes are 25 MiB.
        batch = []
        for i in range(pings):
            payload = hashlib.sha256(i.to_bytes(4, "big")).digest() * 4
            last = payload[:payload_size]
            batch.append(encode_frame(OP_PING, last))
            if len(batch) == 1000:
                ws.send_raw(b"".join(batch), timeout=30)
                batch = []
        if batch:
            ws.send_raw(b"".join(batch), timeout=30)
        # A marker the bridge can only relay once it has read every ping before it.
        ws.send_binary(b"marker")
        assert echo.wait_conn(timeout=10).wait_bytes(len(b"marker"), 30), "the bridge stopped reading the client"
        grown = b.rss_kib() - baseline_rss
        print(f"\nping flood without reading: RSS grew by {grown} KiB for {pings} pings")
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB: Pongs are queued without bound"
        # Now read: the Pongs written while the client could take them, the echoed marker (data kept flowing while
        # a Pong waited), then the one Pong that waited, answering the latest Ping.
        pongs, data = [], b""
        while not (data == b"marker" and pongs and pongs[-1] == last):
            frame = ws.recv_frame(timeout=10)
            assert frame is not None, f"the session ended; {len(pongs)} pongs, data {data!r}"
            if frame.opcode == OP_PONG:
                pongs.append(frame.payload)
            else:
                assert frame.opcode == OP_BINARY, frame
                data += frame.payload
        print(f"; {len(pongs)} Pongs came back")
        assert len(pongs) < pings, "every Ping was answered although the client did not read"
        ws.send_close(1000)
        _, close = ws.read_until_close(timeout=10)
        assert close is not None and close.close_code == 1000
    finally:
        ws.close()


def test_a_client_held_back_by_a_slow_backend_is_not_a_dead_peer(bridge_factory, backends):
    release = threading.Event()

    def stalled_then_reads(c: Conn) -> None:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        release.wait(60)
        try:
            while True:
                chunk = c.sock.recv(65536)
                if not chunk:
                    c.set_eof()
                    return
                c.add(chunk)
        except OSError as e:
            c.set_error(e)
        finally:
            c.sock.close()

    backend = backends.custom(stalled_then_reads, "stalled", rcvbuf=4096)
    ping, pong_timeout = 0.5, 1.0
    b = bridge_factory("--ping-interval", str(ping), "--pong-timeout", str(pong_timeout), target=backend.addr)
    ws = RawWS.connect(b.connect_host, b.port)
    sock = ws.sock
    sent = bytearray()
    out = bytearray()  # whole frames waiting to be sent: data, and the Pongs behind it
    pings = 0
    observed = 6 * (ping + pong_timeout)
    until = time.monotonic() + observed
    i = 0
    # One thread, whole frames only: upload until the bridge stops reading (its backend is full), and answer every
    # Ping; the Pongs wait behind the upload, unread, held back by the bridge's own backpressure.
    while time.monotonic() < until:
        if len(out) < 65536:
            chunk = bytes([i % 251]) * 16384
            out += encode_frame(OP_BINARY, chunk)
            sent += chunk
            i += 1
        readable, writable, _ = select.select([sock], [sock], [], 0.05)
        if writable:
            del out[: sock.send(out)]
        if readable:
            frame = ws.recv_frame(timeout=1)
            assert frame is not None, "the session was dropped while the client answered pings"
            assert frame.opcode == OP_PING, f"the session was closed while the client answered pings: {frame}"
            pings += 1
            out += encode_frame(OP_PONG, frame.payload)
    assert pings >= 2, "the bridge sent no pings"
    # The backend reads again: every byte accepted arrives, in order, and the session closes normally, which a
    # session dropped as a dead peer could not do.
    release.set()
    conn = backend.wait_conn(timeout=5)
    ws.send_raw(bytes(out), timeout=30)
    ws.send_close(1000)
    _, close = ws.read_until_close(timeout=30)
    assert close is not None and close.close_code == 1000, f"the session did not stay open: {close}"
    assert conn.wait_end(30), "the backend never saw the end"
    assert conn.received() == bytes(sent), "bytes lost or reordered"
    ws.close()
    print(f"\nslow backend: {pings} pings answered over {observed:.0f}s, {len(sent)} bytes delivered")


@pytest.fixture
def big_file(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "big.bin").write_bytes(os.urandom(1 << 20) * 32)  # 32 MiB: more than every kernel buffer in between
    (web / "medium.bin").write_bytes(os.urandom(1 << 20) * 4)
    return web


def test_a_client_that_stops_reading_a_large_file_is_closed_after_the_stall_deadline(bridge_factory, backends, big_file):
    echo = backends.echo()
    stall = 1.5
    b = bridge_factory("--web", str(big_file), "--stall-timeout", str(stall), target=echo.addr)
    baseline_fds = fd_count(b)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((b.connect_host, b.port))
    try:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        # Not reading: the bridge must let go of the socket and the file.
        after = wait_fds_at_most(b, baseline_fds, timeout=2 * stall + MARGIN)
        elapsed = time.monotonic() - started
        assert after <= baseline_fds, f"fds: {baseline_fds} before, {after} {elapsed:.1f}s after the client stopped reading"
    finally:
        s.close()


def test_a_slow_reader_gets_the_whole_file_past_the_stall_deadline(bridge_factory, backends, big_file):
    echo = backends.echo()
    stall = 1.0
    b = bridge_factory("--web", str(big_file), "--stall-timeout", str(stall), target=echo.addr)
    expected = (big_file / "medium.bin").read_bytes()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect((b.connect_host, b.port))
    s.sendall(b"GET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    received = bytearray()
    s.settimeout(10)
    while True:  # about 1 MiB/s: the whole download takes longer than the stall deadline, but always moves
        chunk = s.recv(65536)
        if not chunk:
            break
        received += chunk
        time.sleep(0.05)
    s.close()
    elapsed = time.monotonic() - started
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert elapsed > stall, "the download was too fast to show anything"
    assert body == expected, f"{len(body)} of {len(expected)} bytes after {elapsed:.1f}s"


def test_half_a_request_to_the_metrics_listener_is_closed_at_the_deadline(bridge_factory, backends):
    echo = backends.echo()
    timeout = 1.0
    b = bridge_factory("--metrics-listen", "127.0.0.1:0", "--handshake-timeout", str(timeout), target=echo.addr)
    port = metrics_port(b)
    baseline_fds = fd_count(b)
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        started = time.monotonic()
        for s in socks:
            assert closed_by_peer(s, timeout + MARGIN - (time.monotonic() - started) + 1), "held for good"
    finally:
        for s in socks:
            s.close()
    assert wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=MARGIN) <= baseline_fds + FD_SLACK


# docs/behaviour.md, "Health and metrics": the metrics listener's connection cap.
METRICS_MAX_CONNECTIONS = 128


def test_the_metrics_listener_holds_a_bounded_number_of_connections(bridge_factory, backends):
    echo = backends.echo()
    # A long head deadline: only the cap can free the bridge from these connections during the test.
    b = bridge_factory("--metrics-listen", "127.0.0.1:0", "--handshake-timeout", "120", target=echo.addr)
    port = metrics_port(b)
    baseline_fds = fd_count(b)
    attempts = 3 * METRICS_MAX_CONNECTIONS
    socks, refused = [], 0
    try:
        for _ in range(attempts):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # never finished
            socks.append(s)
        # The connections over the cap are closed as soon as they are accepted: wait for their EOFs (epoll: the
        # test process may hold descriptors beyond select's 1024).
        must_refuse = attempts - METRICS_MAX_CONNECTIONS - FD_SLACK
        waiting = selectors.DefaultSelector()
        for s in socks:
            waiting.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + MARGIN
        try:
            while refused < must_refuse and waiting.get_map() and time.monotonic() < deadline:
                for key, _ in waiting.select(deadline - time.monotonic()):
                    waiting.unregister(key.fileobj)
                    try:
                        closed = not key.fileobj.recv(65536)
                    except (ConnectionResetError, BrokenPipeError):
                        closed = True
                    refused += closed
        finally:
            waiting.close()
        held = fd_count(b) - baseline_fds
        print(f"\nmetrics listener: {attempts} half requests, {refused} closed at once, {held} descriptors held")
        assert held <= METRICS_MAX_CONNECTIONS + FD_SLACK, f"{held} descriptors held for {attempts} connections"
        assert refused >= attempts - METRICS_MAX_CONNECTIONS - FD_SLACK, f"only {refused} connections refused"
    finally:
        for s in socks:
            s.close()
    # Once the peer lets go, the listener serves again.
    assert wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=MARGIN) <= baseline_fds + FD_SLACK
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_http_response(s, timeout=10)
    assert answer.status == 200 and answer.body == b"ok\n", (answer.status, answer.body)


def test_password_hashing_has_a_bounded_queue(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    creds = tmp_path / "users"
    # bcrypt at cost 8: tens of milliseconds a hash, so 300 wrong passwords at once are seconds of work.
    good = crypt.crypt("right", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 8))
    creds.write_text(f"ann:{good}\n")
    b = bridge_factory("--auth-file", str(creds), "--handshake-timeout", "60", target=echo.addr)
    import base64

    wrong = base64.b64encode(b"ann:wrong").decode()
    count = 300
    socks = []
    for _ in range(count):
        s = socket.create_connection((b.connect_host, b.port), timeout=30)
        s.sendall(upgrade_request(b.connect_host, b.port, extra=[("Authorization", f"Basic {wrong}")]))
        socks.append(s)
    statuses = []
    retry_after = set()
    for s in socks:
        resp = read_http_response(s, timeout=60)
        statuses.append(resp.status)
        if resp.status == 503:
            retry_after.add(resp.header("Retry-After"))
        s.close()
    busy, refused = statuses.count(503), statuses.count(401)
    print(f"\n{count} wrong passwords at once: {refused} × 401, {busy} × 503")
    assert busy + refused == count, f"unexpected answers: {sorted(set(statuses))}"
    assert busy > 0, "every hash was queued: the queue is not bounded"
    assert refused > 0, "no hash ran at all"
    assert retry_after == {"1"}, retry_after
    # The right password still opens a session once the flood is over.
    right = base64.b64encode(b"ann:right").decode()
    ws = RawWS.connect(b.connect_host, b.port, extra=[("Authorization", f"Basic {right}")])
    ws.send_binary(b"hi")
    frame = ws.recv_frame()
    assert frame is not None and frame.payload == b"hi"
    ws.close()
