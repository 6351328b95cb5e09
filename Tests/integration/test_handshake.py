"""HTTP upgrade handshake: raw-socket requests, exact statuses and headers (docs/behaviour.md,
"Handshake (before any 101)")."""

from __future__ import annotations

import select
import socket
import time

import pytest

from conftest import write_token_file
from wsraw import (
    OP_BINARY,
    RawWS,
    accept_for,
    http_exchange,
    new_key,
    read_http_response,
    upgrade_request,
)


def conn_tokens(resp) -> list[str]:
    return [t.strip().lower() for v in resp.header_all("Connection") for t in v.split(",")]


def assert_refusal(resp, status: int, body: str | None = None) -> None:
    """A refusal per the contract: status, Connection: close, text/plain, one-line body, closed."""
    assert resp.status == status, f"expected {status}, got:\n{resp}"
    assert resp.version == "HTTP/1.1", str(resp)
    assert "close" in conn_tokens(resp), f"no 'Connection: close':\n{resp}"
    ctype = resp.header("Content-Type")
    assert ctype is not None and ctype.split(";")[0].strip().lower() == "text/plain", str(resp)
    text = resp.body.decode("utf-8")
    one_line = text[:-1] if text.endswith("\n") else text
    one_line = one_line[:-1] if one_line.endswith("\r") else one_line
    assert one_line and "\n" not in one_line, f"body is not one line: {resp.body!r}"
    if body is not None and body.endswith("…"):
        assert one_line.startswith(body[:-1]), f"body {resp.body!r} does not start with {body[:-1]!r}"
    elif body is not None:
        assert one_line == body, f"body {resp.body!r} != {body!r}"
    assert resp.closed, f"server did not close the connection after {status}"


def assert_upgrades(host: str, port: int, path: str = "/", extra=None) -> RawWS:
    ws = RawWS.connect(host, port, path, extra=extra)
    return ws


def assert_still_serving(bridge) -> None:
    with assert_upgrades(bridge.connect_host, bridge.port):
        pass


# ---------------------------------------------------------------------------------------------
# Successful upgrades


def test_rfc_sample_key_and_echo(echo_bridge):
    b, echo = echo_bridge
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
        s.sendall(upgrade_request(b.connect_host, b.port, key=key))
        resp = read_http_response(s)
        assert resp.status == 101, str(resp)
        assert resp.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", str(resp)
        assert (resp.header("Upgrade") or "").lower() == "websocket", str(resp)
        assert "upgrade" in conn_tokens(resp), str(resp)
        assert resp.header("Sec-WebSocket-Protocol") is None, str(resp)
        # the upgraded connection relays
        ws = RawWS(s, resp)
        ws.send_frame(OP_BINARY, b"hello")
        f = ws.recv_frame()
        assert f is not None and f.opcode == OP_BINARY and not f.masked and f.payload == b"hello", f


def test_binary_subprotocol_selected(echo_bridge):
    b, _ = echo_bridge
    ws = RawWS.connect(b.connect_host, b.port, extra=[("Sec-WebSocket-Protocol", "foo, binary")])
    with ws:
        assert ws.response.header("Sec-WebSocket-Protocol") == "binary", str(ws.response)


def test_no_subprotocol_when_binary_not_offered(echo_bridge):
    b, _ = echo_bridge
    ws = RawWS.connect(b.connect_host, b.port, extra=[("Sec-WebSocket-Protocol", "foo, bar")])
    with ws:
        assert ws.response.header("Sec-WebSocket-Protocol") is None, str(ws.response)
        ws.send_frame(OP_BINARY, b"x")
        f = ws.recv_frame()
        assert f is not None and f.payload == b"x"


@pytest.mark.parametrize(
    "extra",
    [
        [("Upgrade", "WebSocket")],
        [("Connection", "keep-alive, Upgrade")],
        [("Connection", "UPGRADE")],
    ],
    ids=["upgrade-case", "connection-list", "connection-case"],
)
def test_header_variants_accepted(echo_bridge, extra):
    b, _ = echo_bridge
    with RawWS.connect(b.connect_host, b.port, extra=extra):
        pass


def test_token_ignored_in_single_target_mode(echo_bridge):
    b, _ = echo_bridge
    with RawWS.connect(b.connect_host, b.port, "/?token=whatever") as ws:
        ws.send_frame(OP_BINARY, b"abc")
        f = ws.recv_frame()
        assert f is not None and f.payload == b"abc"


# ---------------------------------------------------------------------------------------------
# Refusals in single-target mode


def _req(b, **kw) -> bytes:
    return upgrade_request(b.connect_host, b.port, **kw)


REFUSALS = {
    # name: (request builder, status, body or None)
    "plain-get": (lambda b: f"GET / HTTP/1.1\r\nHost: {b.connect_host}:{b.port}\r\n\r\n".encode(), 404, "not found: this is a WebSocket endpoint"),
    "plain-get-other-path": (lambda b: f"GET /index.html HTTP/1.1\r\nHost: {b.connect_host}:{b.port}\r\n\r\n".encode(), 404, "not found: this is a WebSocket endpoint"),
    "post-upgrade": (lambda b: _req(b, method="POST"), 405, None),
    "post-plain": (lambda b: f"POST / HTTP/1.1\r\nHost: {b.connect_host}:{b.port}\r\nContent-Length: 0\r\n\r\n".encode(), 405, None),
    "put-upgrade": (lambda b: _req(b, method="PUT"), 405, None),
    "http10": (lambda b: _req(b, version="HTTP/1.0"), 400, None),
    "upgrade-h2c": (lambda b: _req(b, extra=[("Upgrade", "h2c")]), 400, None),
    "connection-keepalive": (lambda b: _req(b, extra=[("Connection", "keep-alive")]), 400, None),
    "connection-missing": (lambda b: _req(b, omit=("connection",)), 400, None),
    "host-missing": (lambda b: _req(b, omit=("host",)), 400, None),
    "key-missing": (lambda b: _req(b, omit=("sec-websocket-key",)), 400, None),
    "key-15-bytes": (lambda b: _req(b, key="AAAAAAAAAAAAAAAAAAAA"), 400, None),
    "key-17-bytes": (lambda b: _req(b, key="AAAAAAAAAAAAAAAAAAAAAAA="), 400, None),
    "key-not-base64": (lambda b: _req(b, key="not base64 at all!!!!!=="), 400, None),
    "key-repeated": (lambda b: _req(b, extra=[("Sec-WebSocket-Key", new_key()), ("Sec-WebSocket-Key", new_key())]), 400, None),
    "version-8": (lambda b: _req(b, ws_version="8"), 426, None),
    "version-missing": (lambda b: _req(b, omit=("sec-websocket-version",)), 426, None),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal(echo_bridge, name):
    b, echo = echo_bridge
    build, status, body = REFUSALS[name]
    resp = http_exchange(b.connect_host, b.port, build(b))
    assert_refusal(resp, status, body)
    if status == 405:
        assert resp.header("Allow") == "GET", str(resp)
    if status == 426:
        assert resp.header("Sec-WebSocket-Version") == "13", str(resp)
    assert echo.conns == [], "a refused request must not connect the backend"
    assert_still_serving(b)


def test_head_is_404(echo_bridge):
    b, _ = echo_bridge
    resp = http_exchange(b.connect_host, b.port, f"HEAD / HTTP/1.1\r\nHost: {b.connect_host}:{b.port}\r\n\r\n".encode())
    assert resp.status == 404, str(resp)
    assert "close" in conn_tokens(resp), str(resp)
    assert_still_serving(b)


def test_key_is_checked_before_version(echo_bridge):
    b, _ = echo_bridge
    resp = http_exchange(b.connect_host, b.port, _req(b, key="short", ws_version="8"))
    assert_refusal(resp, 400)


def test_version_is_checked_before_origin(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--origin", "https://app.example.com", target=echo.addr)
    resp = http_exchange(b.connect_host, b.port, _req(b, ws_version="8", extra=[("Origin", "https://evil.com")]))
    assert_refusal(resp, 426)
    assert resp.header("Sec-WebSocket-Version") == "13", str(resp)


# ---------------------------------------------------------------------------------------------
# Origin


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://app.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM", True),
        ("https://app.example.com:443", True),
        (None, True),  # no Origin header: only --require-origin refuses it
        ("https://evil.com", False),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://a.app.example.com", False),
        ("null", False),
    ],
)
def test_origin_exact(bridge_factory, backends, origin, allowed):
    echo = backends.echo()
    b = bridge_factory("--origin", "https://app.example.com", target=echo.addr)
    extra = [("Origin", origin)] if origin is not None else []
    if allowed:
        with RawWS.connect(b.connect_host, b.port, extra=extra):
            pass
    else:
        assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=extra)), 403)
        assert echo.conns == []
        assert_still_serving(b)


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://a.example.com", True),
        ("https://A.Example.Com", True),
        ("https://example.com", False),
        ("https://evil.com", False),
        ("https://aexample.com", False),
        ("https://a.example.com.evil.com", False),
        ("http://a.example.com", False),
    ],
)
def test_origin_wildcard(bridge_factory, backends, origin, allowed):
    echo = backends.echo()
    b = bridge_factory("--origin", "https://*.example.com", target=echo.addr)
    extra = [("Origin", origin)]
    if allowed:
        with RawWS.connect(b.connect_host, b.port, extra=extra):
            pass
    else:
        assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=extra)), 403)
        assert_still_serving_with(b, [("Origin", "https://ok.example.com")])


def assert_still_serving_with(b, extra) -> None:
    with RawWS.connect(b.connect_host, b.port, extra=extra):
        pass


def test_origin_repeatable(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--origin", "https://one.test", "--origin", "https://two.test", target=echo.addr)
    for o in ("https://one.test", "https://two.test"):
        with RawWS.connect(b.connect_host, b.port, extra=[("Origin", o)]):
            pass
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=[("Origin", "https://three.test")])), 403)


def test_require_origin(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--require-origin", target=echo.addr)
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b)), 403)
    assert echo.conns == []
    with RawWS.connect(b.connect_host, b.port, extra=[("Origin", "https://anything.test")]):
        pass


def test_require_origin_with_list(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--require-origin", "--origin", "https://app.example.com", target=echo.addr)
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b)), 403)
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=[("Origin", "https://evil.com")])), 403)
    with RawWS.connect(b.connect_host, b.port, extra=[("Origin", "https://app.example.com")]):
        pass


def test_yaml_target_origins_replace_global_list(bridge_factory, backends, tmp_path):
    e1, e2 = backends.echo(), backends.echo()
    f = tmp_path / "targets.yaml"
    f.write_text(
        'origins: ["https://app.example.com"]\n'
        "targets:\n"
        "  t1:\n"
        f"    backend: {e1.addr}\n"
        '    origins: ["https://admin.example.com"]\n'
        f"  t2: {e2.addr}\n"
    )
    b = bridge_factory("--targets", f)
    ok = lambda tok, o: RawWS.connect(b.connect_host, b.port, f"/?token={tok}", extra=[("Origin", o)]).close()
    ok("t1", "https://admin.example.com")
    ok("t2", "https://app.example.com")
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, path="/?token=t1", extra=[("Origin", "https://app.example.com")])), 403)
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, path="/?token=t2", extra=[("Origin", "https://admin.example.com")])), 403)


# ---------------------------------------------------------------------------------------------
# Tokens


@pytest.fixture
def token_bridge(bridge_factory, backends, tmp_path):
    """Token mode with two banner backends, so the routing is visible in the first message."""
    a = backends.banner(b"backend-A")
    bb = backends.banner(b"backend-B")
    f = write_token_file(tmp_path / "tokens.conf", {"tokA": a.addr, "tokB": bb.addr})
    b = bridge_factory("--targets", f)
    return b, a, bb


def first_data(ws: RawWS, n: int) -> bytes:
    got = b""
    while len(got) < n:
        f = ws.recv_frame()
        assert f is not None, f"EOF after {got!r}"
        assert f.opcode == OP_BINARY, f
        got += f.payload
    return got


@pytest.mark.parametrize(
    "path, extra, expect",
    [
        ("/?token=tokA", [], b"backend-A"),
        ("/?token=tokB", [], b"backend-B"),
        ("/websockify?token=tokA", [], b"backend-A"),
        ("/websockify?token=tokB", [], b"backend-B"),
        ("/?foo=1&token=tokB&bar=2", [], b"backend-B"),
        ("/", [("Cookie", "token=tokA")], b"backend-A"),
        ("/websockify", [("Cookie", "session=xyz; token=tokB; theme=dark")], b"backend-B"),
    ],
)
def test_token_routes(token_bridge, path, extra, expect):
    b, _, _ = token_bridge
    with RawWS.connect(b.connect_host, b.port, path, extra=extra) as ws:
        assert first_data(ws, len(expect)) == expect


def test_missing_token(token_bridge):
    b, a, bb = token_bridge
    for path in ("/", "/websockify", "/?other=tokA"):
        assert_refusal(http_exchange(b.connect_host, b.port, _req(b, path=path)), 400, "missing token: …")
    assert a.conns == [] and bb.conns == []
    with RawWS.connect(b.connect_host, b.port, "/?token=tokA"):
        pass


def test_unknown_token(token_bridge):
    b, a, bb = token_bridge
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, path="/?token=nope")), 404, "unknown token")
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=[("Cookie", "token=nope")])), 404, "unknown token")
    assert a.conns == [] and bb.conns == []
    with RawWS.connect(b.connect_host, b.port, "/?token=tokB"):
        pass


def test_origin_is_checked_before_token(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens.conf", {"tok": echo.addr})
    b = bridge_factory("--targets", f, "--origin", "https://app.example.com")
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=[("Origin", "https://evil.com")])), 403)
    assert_refusal(http_exchange(b.connect_host, b.port, _req(b, extra=[("Origin", "https://app.example.com")])), 400, "missing token: …")


# ---------------------------------------------------------------------------------------------
# Timeouts and limits


def _expect_408(sock: socket.socket, started: float, limit: float = 1.0) -> None:
    resp = read_http_response(sock, timeout=15)
    elapsed = time.monotonic() - started
    assert_refusal(resp, 408)
    assert limit * 0.8 <= elapsed <= limit + 4, f"408 after {elapsed:.2f}s with --handshake-timeout {limit}"


def test_handshake_timeout_partial_request(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "1", target=echo.addr)
    with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
        started = time.monotonic()
        req = upgrade_request(b.connect_host, b.port)
        s.sendall(req[: len(req) // 2])
        _expect_408(s, started)
    assert echo.conns == []
    assert_still_serving(b)


def test_handshake_timeout_silent_client(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "1", target=echo.addr)
    with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
        _expect_408(s, time.monotonic())


def test_handshake_timeout_counts_from_accept(bridge_factory, backends):
    """A client dripping one byte at a time does not extend the deadline."""
    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "1", target=echo.addr)
    req = upgrade_request(b.connect_host, b.port, extra=[("X-Padding", "p" * 200)])
    with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < 10 and i < len(req) - 4:
            r, _, _ = select.select([s], [], [], 0.1)  # pace the drip; wake up on the answer
            if r:
                break
            try:
                s.send(req[i : i + 1])
            except OSError:
                break
            i += 1
        _expect_408(s, started)


def test_handshake_timeout_decimal(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--handshake-timeout", "0.5", target=echo.addr)
    with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
        _expect_408(s, time.monotonic(), limit=0.5)


def test_huge_request_head(echo_bridge):
    b, echo = echo_bridge
    req = upgrade_request(b.connect_host, b.port, extra=[(f"X-Big-{i}", "x" * 1024) for i in range(100)])
    assert len(req) > 100 * 1024
    with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
        try:
            s.sendall(req)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        resp = read_http_response(s, timeout=15)
    assert resp.status in (431, 400), str(resp)
    assert echo.conns == []
    assert_still_serving(b)


def test_accept_header_for_every_key(echo_bridge):
    b, _ = echo_bridge
    for _ in range(5):
        key = new_key()
        resp = None
        with socket.create_connection((b.connect_host, b.port), timeout=10) as s:
            s.sendall(upgrade_request(b.connect_host, b.port, key=key))
            resp = read_http_response(s)
        assert resp.status == 101
        assert resp.header("Sec-WebSocket-Accept") == accept_for(key)
