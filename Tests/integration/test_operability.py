"""Operability (issue 6): metrics, health and readiness, limits, static files, recording, JSON logs,
environment variables, Unix-socket listening, inetd and systemd socket activation
(docs/behaviour.md: "Health, readiness and metrics", "Limits", "Static files", "Recording")."""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LISTENING_RE, Bridge, LineLog, write_atomic, ws_connect
from wsraw import RawWS, http_exchange, read_http_response, upgrade_request

METRICS_RE = re.compile(r"metrics and health on (\[[^\]]+\]|[^\s:]+):(\d+)")


def metrics_port(bridge: Bridge) -> int:
    m = bridge.stderr.wait_for(METRICS_RE, 10)
    assert m, bridge.log()
    return int(m.group(2))


def get(host: str, port: int, path: str, headers: str = "", method: str = "GET"):
    return http_exchange(host, port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode("latin-1"))


def scrape(port: int) -> dict[str, float]:
    resp = get("127.0.0.1", port, "/metrics")
    assert resp.status == 200, str(resp)
    assert resp.header("Content-Type").startswith("text/plain; version=0.0.4")
    values = {}
    for line in resp.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


# ---------------------------------------------------------------------------------------------
# Metrics and health


def test_metrics_move_exactly_with_sessions_bytes_and_rejections(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    write_atomic(targets, f"targets:\n  lab:\n    token: {'k' * 24}\n    backend: {echo.addr}\n")
    b = bridge_factory("--targets", str(targets), "--metrics-listen", "127.0.0.1:0")
    port = metrics_port(b)
    before = scrape(port)
    assert before['wsbridge_handshake_rejections_total{reason="unknown_token"}'] == 0

    payload = os.urandom(100_000)
    with ws_connect(b.url("/?token=" + "k" * 24)) as ws:
        ws.send(payload)
        got = b""
        while len(got) < len(payload):
            got += ws.recv(timeout=10)
        mid = scrape(port)
        assert mid['wsbridge_sessions_active{target="lab"}'] == 1
        ws.close(4005)
    for _ in range(3):
        assert get(b.connect_host, b.port, "/?token=wrong", headers=upgrade_headers()).status == 404
    assert get(b.connect_host, b.port, "/", headers=upgrade_headers(version="8")).status == 426

    deadline = time.monotonic() + 10
    while True:
        after = scrape(port)
        if after.get('wsbridge_sessions_closed_total{target="lab",code="4xxx"}') == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling the server's state, bounded by the deadline
    assert after['wsbridge_sessions_opened_total{target="lab"}'] == 1
    assert after['wsbridge_sessions_active{target="lab"}'] == 0
    assert after['wsbridge_sessions_closed_total{target="lab",code="4xxx"}'] == 1
    assert after['wsbridge_bytes_to_backend_total{target="lab"}'] == len(payload)
    assert after['wsbridge_bytes_to_client_total{target="lab"}'] == len(payload)
    assert after['wsbridge_handshake_rejections_total{reason="unknown_token"}'] == 3
    assert after['wsbridge_handshake_rejections_total{reason="version"}'] == 1
    assert after['wsbridge_backend_connect_seconds_count{target="lab"}'] == 1
    assert after['wsbridge_session_duration_seconds_count{target="lab"}'] == 1
    assert "k" * 24 not in get("127.0.0.1", port, "/metrics").body.decode(), "a token leaked into metrics"


def upgrade_headers(version: str = "13") -> str:
    return (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: {version}\r\n"
    )


def test_health_and_readiness(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--metrics-listen", "127.0.0.1:0", "--close-timeout", "3", target=echo.addr)
    port = metrics_port(b)
    for host, p in ((b.connect_host, b.port), ("127.0.0.1", port)):
        assert get(host, p, "/healthz").status == 200
        ready = get(host, p, "/readyz")
        assert (ready.status, ready.body) == (200, b"ready\n"), str(ready)
    assert get(b.connect_host, b.port, "/metrics").status == 404, "metrics are not public by default"

    # A session that never answers our Close keeps the bridge draining for --close-timeout: /readyz says so.
    # The Close 1001 that reaches the session is the event that the drain has begun.
    raw = RawWS.connect(b.connect_host, b.port, "/")
    b.signal(signal.SIGTERM)
    _, close = raw.read_until_close(timeout=10)
    assert close is not None and (close.close_code, close.close_reason) == (1001, "server shutting down"), close
    ready = get("127.0.0.1", port, "/readyz")
    assert (ready.status, ready.body) == (503, b"not ready: draining: shutting down\n"), str(ready)
    assert b.wait_exit(15) == 0
    raw.sock.close()


def test_metrics_listener_on_a_taken_explicit_address_is_an_error(bridge_factory, backends, wsbridge_bin):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    echo = backends.echo()
    b = bridge_factory("--metrics-listen", f"127.0.0.1:{taken.getsockname()[1]}", target=echo.addr, wait_ready=False)
    assert b.wait_exit(15) not in (None, 0), b.log()
    taken.close()


# ---------------------------------------------------------------------------------------------
# Limits


async def _attempt(host: str, port: int, path: str) -> tuple[int, str | None, asyncio.StreamWriter | None]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(upgrade_request(host, port, path))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    retry = None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"retry-after:"):
            retry = line.split(b":", 1)[1].strip().decode()
    if status != 101:
        writer.close()
        return status, retry, None
    return status, retry, writer


def test_a_burst_of_2000_handshakes_against_a_limit_of_100_leaves_exactly_100(bridge_factory, backends):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))
    sink = backends.sink()
    b = bridge_factory("--max-connections", "100", "--metrics-listen", "127.0.0.1:0", target=sink.addr)
    port = metrics_port(b)

    async def burst():
        sem = asyncio.Semaphore(500)  # in flight at once, within the client's own descriptor budget

        async def one():
            async with sem:
                return await _attempt(b.connect_host, b.port, "/")

        return await asyncio.gather(*(one() for _ in range(2000)))

    loop = asyncio.new_event_loop()
    try:
        results = loop.run_until_complete(burst())
        statuses = [r[0] for r in results]
        assert statuses.count(101) == 100, {s: statuses.count(s) for s in set(statuses)}
        assert statuses.count(503) == 1900
        assert {r[1] for r in results if r[0] == 503} == {"5"}
        metrics = scrape(port)
        assert metrics['wsbridge_sessions_active{target="default"}'] == 100
        assert metrics['wsbridge_handshake_rejections_total{reason="limit"}'] == 1900
        async def close_all():
            for _, _, writer in results:
                if writer:
                    writer.close()
                    await writer.wait_closed()

        loop.run_until_complete(close_all())
    finally:
        loop.close()
    # Slots come back when the clients are gone: a new session is admitted.
    deadline = time.monotonic() + 15
    while True:
        resp = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/"))
        if resp.status == 101 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polling the server's state, bounded by the deadline
    assert resp.status == 101, str(resp)


def test_limits_and_series_by_target_identity_not_display_name(bridge_factory, backends, tmp_path):
    """Two tokens with the same first characters have the same redacted name ("abc…"): they are still two
    targets, each with its own max_sessions and its own metric series."""
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    write_atomic(targets, f"targets:\n  abcd-one-secret:\n    backend: {echo.addr}\n    max_sessions: 1\n"
                          f"  abcd-two-secret:\n    backend: {echo.addr}\n    max_sessions: 1\n")
    b = bridge_factory("--targets", str(targets), "--metrics-listen", "127.0.0.1:0")
    port = metrics_port(b)
    first = RawWS.connect(b.connect_host, b.port, "/?token=abcd-one-secret")
    second = RawWS.connect(b.connect_host, b.port, "/?token=abcd-two-secret")
    refused = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/?token=abcd-one-secret"))
    assert refused.status == 503 and refused.body == b"target is at its session limit\n", str(refused)
    metrics = scrape(port)
    active = {k: v for k, v in metrics.items() if k.startswith("wsbridge_sessions_active{")}
    assert active == {'wsbridge_sessions_active{target="abc…#1"}': 1, 'wsbridge_sessions_active{target="abc…#2"}': 1}, active
    body = get("127.0.0.1", port, "/metrics").body.decode()
    assert "one-secret" not in body and "two-secret" not in body, "a token leaked into metrics"
    first.sock.close()
    second.sock.close()


def test_close_code_labels_do_not_grow_with_what_clients_send(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--metrics-listen", "127.0.0.1:0", target=echo.addr)
    port = metrics_port(b)
    for code in (4001, 4002, 4999, 3007):
        with ws_connect(b.url("/")) as ws:
            ws.send(b"x")
            assert ws.recv(timeout=5) == b"x"
            ws.close(code)
    deadline = time.monotonic() + 10
    while True:
        metrics = scrape(port)
        closed = {k: v for k, v in metrics.items() if k.startswith("wsbridge_sessions_closed_total{")}
        if sum(closed.values()) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling the server's state, bounded by the deadline
    assert closed == {'wsbridge_sessions_closed_total{target="default",code="4xxx"}': 3,
                      'wsbridge_sessions_closed_total{target="default",code="3xxx"}': 1}, closed


def test_per_client_and_per_target_limits_and_the_handshake_rate(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    write_atomic(targets, f"targets:\n  one:\n    backend: {echo.addr}\n    max_sessions: 1\n  many: {echo.addr}\n")
    b = bridge_factory("--targets", str(targets), "--max-connections-per-client", "2")
    first = RawWS.connect(b.connect_host, b.port, "/?token=one")
    refused = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/?token=one"))
    assert (refused.status, refused.header("Retry-After")) == (503, "5"), str(refused)
    assert refused.body == b"target is at its session limit\n"
    second = RawWS.connect(b.connect_host, b.port, "/?token=many")
    refused = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/?token=many"))
    assert (refused.status, refused.body) == (503, b"too many sessions from this address\n"), str(refused)
    first.sock.close()
    second.sock.close()

    rated = bridge_factory("--handshake-rate", "0.5", "--handshake-burst", "3", target=echo.addr)
    statuses = []
    started = time.monotonic()
    for _ in range(4):
        resp = http_exchange(rated.connect_host, rated.port, upgrade_request(rated.connect_host, rated.port, "/", ws_version="8"))
        statuses.append((resp.status, resp.header("Retry-After")))
    spent = time.monotonic() - started
    assert statuses[:3] == [(426, None)] * 3, statuses
    assert statuses[3][0] == 429, statuses
    # Retry-After is the seconds until the next token: at 0.5 tokens/s, 2 s after the bucket emptied, less the
    # time the four requests took (on a loaded machine they can take more than a second), rounded up.
    retry_after = int(statuses[3][1])
    assert max(1, math.ceil(2 - spent)) <= retry_after <= 2, (statuses, spent)


# ---------------------------------------------------------------------------------------------
# Static files

TRAVERSAL = [
    "/../etc/passwd", "/..", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E/etc/passwd",
    "/%2e%2e%2fetc%2fpasswd", "/..%2fetc%2fpasswd", "/.%2e/etc/passwd", "/%2e./etc/passwd",
    "/%252e%252e/etc/passwd", "/%252e%252e%252fetc%252fpasswd", "/..%252f..%252fetc/passwd",
    "/..\\etc\\passwd", "/%5c..%5cetc%5cpasswd", "/..%5cetc", "/a%00.html", "/%00", "/.git/config",
    "/.env", "/%2egit/config", "/a/./b", "/./index.html", "/%2e/index.html", "/a/%2f/b", "/%2f%2fetc/passwd",
    "//..//etc/passwd", "/..;/etc/passwd", "/%c0%ae%c0%ae/etc/passwd", "/%e0%80%ae%e0%80%ae/etc/passwd",
    "/..%00/etc/passwd", "/out/secret.txt", "/link-out", "/sub/../../secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt",
]


@pytest.fixture
def web_root(tmp_path):
    root = tmp_path / "web"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>index</h1>\n")
    (root / "app.js").write_text("console.log(1)\n")
    (root / "sub" / "page.css").write_text("body{}\n")
    (tmp_path / "secret.txt").write_text("SECRET\n")
    os.symlink(tmp_path / "secret.txt", root / "link-out")
    os.symlink(tmp_path, root / "out")
    return root


def test_static_files_and_a_traversal_corpus(bridge_factory, backends, web_root):
    echo = backends.echo()
    b = bridge_factory("--web", str(web_root), target=echo.addr)
    h, p = b.connect_host, b.port
    index = get(h, p, "/")
    assert (index.status, index.body) == (200, b"<h1>index</h1>\n"), str(index)
    assert index.header("Content-Type") == "text/html; charset=utf-8"
    js = get(h, p, "/app.js?v=1")
    assert (js.status, js.header("Content-Type"), js.body) == (200, "text/javascript; charset=utf-8", b"console.log(1)\n")
    css = get(h, p, "/sub/page.css")
    assert css.header("Content-Type") == "text/css; charset=utf-8"
    assert get(h, p, "/sub").status == 301
    assert get(h, p, "/sub").header("Location") == "/sub/"
    # A path starting with // would make a protocol-relative Location (the host "sub"): an open redirect.
    for path in ("//sub", "///sub", "//sub?x=1"):
        location = get(h, p, path).header("Location")
        assert location.startswith("/sub/") and not location.startswith("//"), (path, location)
    assert get(h, p, "/sub/").status == 404, "no listing unless asked"

    etag, modified = js.header("ETag"), js.header("Last-Modified")
    assert etag and modified
    assert get(h, p, "/app.js", headers=f"If-None-Match: {etag}\r\n").status == 304
    assert get(h, p, "/app.js", headers=f"If-Modified-Since: {modified}\r\n").status == 304
    assert get(h, p, "/app.js", headers='If-None-Match: "other"\r\n').status == 200
    head = get(h, p, "/app.js", method="HEAD")
    assert (head.status, head.body, head.header("Content-Length")) == (200, b"", "15"), str(head)
    assert get(h, p, "/app.js", method="POST").status == 405

    for path in TRAVERSAL:
        resp = get(h, p, path)
        assert resp.status in (400, 404), f"{path!r}: {resp.status}"
        assert b"SECRET" not in resp.body and b"root:" not in resp.body, path
    # The WebSocket endpoint still works beside the files.
    with ws_connect(b.url("/")) as ws:
        ws.send(b"x")
        assert ws.recv(timeout=10) == b"x"

    listing = bridge_factory("--web", str(web_root), "--web-listing", target=echo.addr)
    page = get(listing.connect_host, listing.port, "/sub/")
    assert page.status == 200 and b'href="page.css"' in page.body, str(page)


# ---------------------------------------------------------------------------------------------
# Recording


def parse_recording(text: str) -> list[tuple[str, int, bytes]]:
    lines = text.splitlines()
    assert lines[0] == "var VNC_frame_encoding = 'binary';"
    assert lines[1] == "var VNC_frame_data = ["
    assert lines[-1] == "'EOF'];"
    frames = []
    for line in lines[2:-1]:
        m = re.fullmatch(r"'([{}])(\d+)\1(.*)',", line)
        assert m, line
        data = codecs.decode(m.group(3).replace("\\'", "'"), "unicode_escape").encode("latin-1")
        frames.append((m.group(1), int(m.group(2)), data))
    return frames


def test_recording_never_overwrites_nor_follows_a_planted_symlink(bridge_factory, backends, tmp_path):
    """A restart used to number from 1 again with O_TRUNC: earlier recordings were overwritten, and a symlink
    planted at the next name had its target truncated."""
    echo = backends.echo()
    prefix = tmp_path / "rec" / "session"
    prefix.parent.mkdir()
    Path(f"{prefix}.1").write_text("an earlier recording")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, f"{prefix}.2")
    b = bridge_factory("--record", str(prefix), target=echo.addr)
    with ws_connect(b.url("/")) as ws:
        ws.send(b"typed")
        assert ws.recv(timeout=10) == b"typed"
    path = Path(f"{prefix}.3")
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().endswith("'EOF'];\n")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the file is finished by a writer queue after the session closes: poll its content
    assert path.exists() and not path.is_symlink(), sorted(os.listdir(prefix.parent))
    assert Path(f"{prefix}.1").read_text() == "an earlier recording"
    assert victim.read_text() == "precious"


def test_recording_is_websockify_format_and_byte_exact(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    prefix = tmp_path / "rec" / "session"
    prefix.parent.mkdir()
    b = bridge_factory("--record", str(prefix), target=echo.addr)
    sent = [bytes(range(256)), b"it's a \\ test\n", os.urandom(5000)]
    started = time.monotonic()
    with ws_connect(b.url("/")) as ws:
        for chunk in sent:
            ws.send(chunk)
            got = b""
            while len(got) < len(chunk):
                got += ws.recv(timeout=10)
    finished = time.monotonic()
    path = Path(f"{prefix}.1")
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().endswith("'EOF'];\n")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the file is finished by a writer queue after the session closes: poll its content
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    frames = parse_recording(path.read_text())
    assert b"".join(d for kind, _, d in frames if kind == "}") == b"".join(sent)
    assert b"".join(d for kind, _, d in frames if kind == "{") == b"".join(sent)
    # MS is the milliseconds since the session started: in order, and none later than the session lasted.
    times = [t for _, t, _ in frames]
    assert times == sorted(times), times
    assert times[-1] <= (finished - started) * 1000 + 1, (times, finished - started)  # + 1: rounding to ms
    # Each message to the backend is recorded before its echo comes back.
    kinds = "".join(kind for kind, _, _ in frames)
    assert kinds[0] == "}", kinds


# ---------------------------------------------------------------------------------------------
# Logs, environment, listeners


def test_json_logs_parse_and_carry_the_session_fields(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--log-format", "json", target=echo.addr)
    with ws_connect(b.url("/")) as ws:
        ws.send(b"12345")
        assert ws.recv(timeout=10) == b"12345"
    closed = b.stderr.wait_for(re.compile(r'"msg":"session closed"'), 10)
    assert closed, b.log()
    b.stop()
    records = [json.loads(line) for line in b.stderr.snapshot() if line.strip()]
    session = [r for r in records if r["msg"] == "session closed"][0]
    assert (session["up"], session["down"], session["code"], session["closed_by"]) == (5, 5, 1000, "client")
    assert session["target"] == "default" and session["level"] == "info" and "ts" in session


def start_raw(wsbridge_bin: str, args: list[str], env: dict[str, str] | None = None, **kw) -> Bridge:
    """A Bridge started with a custom environment or descriptors."""
    b = Bridge.__new__(Bridge)
    b.args = [wsbridge_bin, *args]
    b.proc = subprocess.Popen(
        b.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, **(env or {})}, **kw,
    )
    b.pid = b.proc.pid
    b.stderr = LineLog(b.proc.stderr, "stderr")
    b.stdout = LineLog(b.proc.stdout, "stdout")
    b.host = b.port = None
    return b


def test_every_option_from_the_environment(wsbridge_bin, backends):
    echo = backends.echo()
    env = {
        "WSBRIDGE_LISTEN": "127.0.0.1:0", "WSBRIDGE_TARGET": echo.addr, "WSBRIDGE_LOG_FORMAT": "json",
        "WSBRIDGE_ORIGIN": "https://a.example,https://b.example", "WSBRIDGE_REQUIRE_ORIGIN": "1",
        "WSBRIDGE_METRICS_LISTEN": "off",
    }
    b = start_raw(wsbridge_bin, [], env, stdin=subprocess.DEVNULL)
    try:
        b.wait_ready()
        assert json.loads(b.stderr.snapshot()[0])  # JSON logs came from the environment
        ok = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/", extra=[("Origin", "https://b.example")]))
        assert ok.status == 101
        no_origin = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/"))
        assert no_origin.status == 403
    finally:
        b.stop()


def test_unix_listen_with_its_mode(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    path = tmp_path / "wsbridge.sock"
    b = bridge_factory("--unix-listen", str(path), "--unix-listen-mode", "0660", target=echo.addr, listen=None, wait_ready=False)
    assert b.stderr.wait_for(re.compile(r"listening on unix:"), 15), b.log()
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    s.sendall(upgrade_request("localhost", 80, "/"))
    assert read_http_response(s).status == 101
    s.close()


def test_systemd_socket_activation_and_inetd(wsbridge_bin, backends):
    echo = backends.echo()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    # systemd passes the socket as descriptor 3 and sets LISTEN_PID to the service's own pid: the shell moves
    # its standard input to 3, and its $$ becomes wsbridge's pid through exec.
    b = start_raw(
        "/bin/sh",
        ["-c", f'exec 3<&0 </dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --metrics-listen off "{echo.addr}"', wsbridge_bin],
        stdin=listener,
    )
    try:
        assert b.stderr.wait_for(re.compile(r"using the socket passed by systemd"), 15), b.stderr.text()
        assert b.stderr.wait_for(LISTENING_RE, 15), b.stderr.text()
        with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send(b"activated")
            assert ws.recv(timeout=10) == b"activated"
    finally:
        b.stop()

    inetd = start_raw(wsbridge_bin, ["--inetd", "--metrics-listen", "off", echo.addr], stdin=listener)
    try:
        assert inetd.stderr.wait_for(LISTENING_RE, 15), inetd.stderr.text()
        with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send(b"inetd")
            assert ws.recv(timeout=10) == b"inetd"
    finally:
        inetd.stop()
        listener.close()


def test_web_auth_applies_the_origin_rules_to_files(bridge_factory, backends, web_root):
    echo = backends.echo()
    b = bridge_factory("--web", str(web_root), "--web-auth", "--origin", "https://app.example.com", target=echo.addr)
    h, p = b.connect_host, b.port
    assert get(h, p, "/app.js").status == 200, "navigations carry no Origin"
    assert get(h, p, "/app.js", headers="Origin: https://app.example.com\r\n").status == 200
    refused = get(h, p, "/app.js", headers="Origin: https://evil.example.com\r\n")
    assert (refused.status, refused.body) == (403, b"origin not allowed\n"), str(refused)
    open_files = bridge_factory("--web", str(web_root), "--origin", "https://app.example.com", target=echo.addr)
    assert get(open_files.connect_host, open_files.port, "/app.js", headers="Origin: https://evil.example.com\r\n").status == 200


def test_healthcheck_subcommand_for_docker(bridge_factory, backends, wsbridge_bin):
    echo = backends.echo()
    b = bridge_factory("--metrics-listen", "127.0.0.1:0", target=echo.addr)
    port = metrics_port(b)
    ok = subprocess.run([wsbridge_bin, "healthcheck", "--address", f"127.0.0.1:{port}"], capture_output=True, timeout=15)
    assert ok.returncode == 0 and ok.stdout.decode().startswith("healthy"), ok
    live = subprocess.run([wsbridge_bin, "healthcheck", "--address", f"127.0.0.1:{port}", "--path", "/healthz"], capture_output=True, timeout=15)
    assert live.returncode == 0, live
    b.stop()
    down = subprocess.run([wsbridge_bin, "healthcheck", "--address", f"127.0.0.1:{port}"], capture_output=True, timeout=15)
    assert down.returncode == 1 and down.stdout.decode().startswith("unhealthy"), down
