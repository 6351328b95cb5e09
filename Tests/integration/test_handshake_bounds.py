"""The handshake is bounded: in time (one deadline from accept, through PROXY header, TLS and the request head),
in bytes (nothing before the 101 grows with what the peer sends), in count, and strict about request heads.
Each attack measures the bridge's open file descriptors and RSS before, during and after; after the attack both
are back to their baseline within the deadline plus a margin. docs/behaviour.md, "Handshake deadlines and bounds".
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from conftest import Backend
from tlsutil import PKI
from wsraw import FrameReader, read_http_response, upgrade_request

# Slack for a loaded 2-core machine: the deadline is exact, when the bridge's event loop gets to run is not.
MARGIN = 5.0
FD_SLACK = 8


def fd_count(bridge) -> int:
    return len(os.listdir(f"/proc/{bridge.pid}/fd"))


def wait_fds_at_most(bridge, limit: int, timeout: float) -> int:
    """Waits until the bridge holds at most ``limit`` descriptors; returns the last count (polls /proc, since
    the bridge has no event to wait for here)."""
    deadline = time.monotonic() + timeout
    count = fd_count(bridge)
    while count > limit and time.monotonic() < deadline:
        time.sleep(0.1)
        count = fd_count(bridge)
    return count


def wait_fds_at_least(bridge, limit: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = fd_count(bridge)
    while count < limit and time.monotonic() < deadline:
        time.sleep(0.05)
        count = fd_count(bridge)
    return count


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the bridge closes ``sock`` within ``timeout`` (EOF or reset; any bytes before it are read)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki-bounds"), "wsbridge bounds CA")


def tls_args(cert) -> list[str]:
    return ["--cert", str(cert.cert), "--key", str(cert.key)]


# The first bytes of a TLS ClientHello: a handshake record header and the message type.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x00\xa0\x01"


# ---------------------------------------------------------------------------------------------
# Row 1: a TLS handshake that never completes


def test_unfinished_tls_handshakes_are_closed_at_the_deadline(bridge_factory, backends, pki):
    echo = backends.echo()
    timeout = 2.0
    b = bridge_factory("--handshake-timeout", str(timeout), *tls_args(pki.server("localhost")), target=echo.addr)
    baseline_fds = fd_count(b)
    baseline_rss = b.rss_kib()
    count = 150
    socks = []
    try:
        started = time.monotonic()
        for _ in range(count):
            s = socket.create_connection((b.connect_host, b.port), timeout=10)
            s.sendall(PARTIAL_CLIENT_HELLO)
            socks.append(s)
        during = wait_fds_at_least(b, baseline_fds + count, timeout=5)
        print(f"\nunfinished TLS: fds {baseline_fds} before, {during} during", end="")
        assert during >= baseline_fds + count * 0.9, f"the bridge holds {during} fds for {count} handshakes"
        for s in socks:
            assert closed_by_peer(s, timeout + MARGIN - (time.monotonic() - started) + 1), "socket left open"
        elapsed = time.monotonic() - started
        assert elapsed <= timeout + MARGIN, f"closed after {elapsed:.1f}s with --handshake-timeout {timeout}"
    finally:
        for s in socks:
            s.close()
    after = wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=MARGIN)
    print(f", {after} after; RSS {baseline_rss} KiB before, {b.rss_kib()} KiB after")
    assert after <= baseline_fds + FD_SLACK, f"fds: {baseline_fds} before, {after} after"
    assert b.rss_kib() <= baseline_rss + 32 * 1024
    assert echo.conns == []


def test_tls_up_and_head_incomplete_gets_408_inside_tls(bridge_factory, backends, pki):
    import ssl

    from tlsutil import client_context, tls_socket

    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "1.5", *tls_args(pki.server("localhost")), target=echo.addr)
    baseline_fds = fd_count(b)
    s = tls_socket(b.port, client_context(pki.ca), "localhost")
    try:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        resp = read_http_response(s, timeout=1.5 + MARGIN, to_eof=False)
        assert resp.status == 408, str(resp)
        assert time.monotonic() - started <= 1.5 + MARGIN
    finally:
        try:
            s.close()
        except (OSError, ssl.SSLError):
            pass
    after = wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=2 + MARGIN)
    assert after <= baseline_fds + FD_SLACK


def test_missing_proxy_header_is_closed_at_the_deadline(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "1", "--proxy-protocol", target=echo.addr)
    baseline_fds = fd_count(b)
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(b"PROXY TCP4 ")  # a prefix of a v1 header, never finished
        started = time.monotonic()
        assert closed_by_peer(s, 1 + MARGIN)
        assert time.monotonic() - started <= 1 + MARGIN
    assert wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=MARGIN) <= baseline_fds + FD_SLACK


# ---------------------------------------------------------------------------------------------
# Row 2: bytes sent while the backend connect is pending


def test_bytes_before_the_101_are_bounded(bridge_factory):
    # A backend that accepts (the kernel completes the connect) and never answers the TLS handshake.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    connect_timeout = 4.0
    b = bridge_factory(
        "--ssl-target", "--connect-timeout", str(connect_timeout), target=f"127.0.0.1:{silent.getsockname()[1]}"
    )
    baseline_rss = b.rss_kib()
    baseline_fds = fd_count(b)
    sent = 0
    stop = threading.Event()
    peak = [baseline_rss]
    s = socket.create_connection((b.connect_host, b.port), timeout=10)
    try:
        s.sendall(upgrade_request(b.connect_host, b.port))

        def flood() -> None:
            nonlocal sent
            chunk = b"\x82\xfe\xff\xff" + b"\0" * (64 << 10)  # garbage frames; the bridge must not keep them
            s.settimeout(0.2)
            while not stop.is_set() and sent < (512 << 20):
                try:
                    sent += s.send(chunk)
                except (socket.timeout, TimeoutError):
                    continue  # the bridge stopped reading: the kernel buffers are full
                except OSError:
                    return

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        started = time.monotonic()
        while time.monotonic() - started < connect_timeout - 1:
            peak[0] = max(peak[0], b.rss_kib())
            time.sleep(0.1)
        sent_before_101 = sent
        stop.set()
        sender.join(5)
        print(f"\nflood before the 101: {sent_before_101 >> 10} KiB sent; RSS {baseline_rss} KiB before, peak {peak[0]} KiB")
        assert sent_before_101 < 32 << 20, f"{sent_before_101 >> 20} MiB taken before the 101: reads were not stopped"
        growth = peak[0] - baseline_rss
        assert growth < 32 * 1024, f"RSS grew by {growth} KiB before the 101"
        # The connect times out: 101, then Close 1014, as for any failed backend.
        s.settimeout(None)
        resp = read_http_response(s, timeout=connect_timeout + MARGIN, to_eof=False)
        assert resp.status == 101, str(resp)
    finally:
        stop.set()
        s.close()
        silent.close()
    after = wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=MARGIN)
    assert after <= baseline_fds + FD_SLACK
    assert b.rss_kib() <= baseline_rss + 32 * 1024


# ---------------------------------------------------------------------------------------------
# Row 3: an upgrade request with a body


@pytest.mark.parametrize(
    "extra,body",
    [
        ([("Content-Length", "10")], b"abc"),
        ([("Transfer-Encoding", "chunked")], b"5\r\nab"),
    ],
    ids=["content-length", "chunked"],
)
def test_upgrade_with_a_body_is_400_at_once_and_holds_nothing(bridge_factory, backends, extra, body):
    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "30", "--max-connections", "2", target=echo.addr)
    baseline_fds = fd_count(b)
    for _ in range(5):
        with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
            s.sendall(upgrade_request(b.connect_host, b.port, extra=extra) + body)
            resp = read_http_response(s, timeout=5)
            assert resp.status == 400, str(resp)
            assert "body" in resp.body.decode(), str(resp)
    assert echo.conns == [], "no backend is connected for a refused request"
    # The session slots were never taken: an upgrade still gets through.
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(upgrade_request(b.connect_host, b.port))
        assert read_http_response(s, timeout=10, to_eof=False).status == 101
    assert wait_fds_at_most(b, baseline_fds + FD_SLACK, timeout=MARGIN) <= baseline_fds + FD_SLACK


# ---------------------------------------------------------------------------------------------
# Row 4: duplicate headers


@pytest.mark.parametrize(
    "header,value",
    [
        ("Host", "other.example.com"),
        ("Origin", "https://b.example.com"),
        ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("Sec-WebSocket-Version", "13"),
    ],
)
def test_duplicate_headers_are_400(echo_bridge, header, value):
    b, echo = echo_bridge
    req = upgrade_request(b.connect_host, b.port, extra=[("Origin", "https://a.example.com")])
    req = req[:-2] + f"{header}: {value}\r\n\r\n".encode()
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(req)
        resp = read_http_response(s, timeout=10)
    assert resp.status == 400, str(resp)
    assert f"duplicate {header}" in resp.body.decode()
    assert echo.conns == []


def test_duplicate_host_on_a_plain_request_is_400(echo_bridge):
    b, _ = echo_bridge
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert read_http_response(s, timeout=10).status == 400


def test_refusals_are_counted_by_reason(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--metrics-on-main-port", target=echo.addr)
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(upgrade_request(b.connect_host, b.port, extra=[("Content-Length", "1")]) + b"x")
        assert read_http_response(s, timeout=10).status == 400
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        metrics = read_http_response(s, timeout=10).body.decode()
    assert 'wsbridge_handshake_rejections_total{reason="request_body"} 1' in metrics
    assert "wsbridge_handshakes_in_progress" in metrics


# ---------------------------------------------------------------------------------------------
# Count


def test_handshakes_over_the_per_ip_cap_are_closed(bridge_factory, backends):
    import select

    echo = backends.echo()
    b = bridge_factory("--max-handshakes-per-ip", "5", "--handshake-timeout", "30", target=echo.addr)
    socks = [socket.create_connection((b.connect_host, b.port), timeout=10) for _ in range(6)]
    try:
        readable, _, _ = select.select(socks, [], [], MARGIN)
        assert len(readable) == 1, f"{len(readable)} of 6 handshakes from one address were closed at once"
        refused = readable[0]
        assert closed_by_peer(refused, 1)
        held = [s for s in socks if s is not refused]
        assert select.select(held, [], [], 0.5)[0] == [], "the five within the cap stay open"
        # One of the held ones finishes its handshake: a new one fits again.
        held[0].sendall(upgrade_request(b.connect_host, b.port))
        assert read_http_response(held[0], timeout=10, to_eof=False).status == 101
        with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
            s.sendall(upgrade_request(b.connect_host, b.port))
            assert read_http_response(s, timeout=10, to_eof=False).status == 101
    finally:
        for s in socks:
            s.close()
