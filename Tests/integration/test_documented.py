"""Behaviour that docs/behaviour.md and the README promise and no other test covered (issue 18): 1014 `backend
unreachable` and wsbridge_backend_connect_failures_total, --metrics-on-main-port, the default metrics port taken,
--record-limit and the numbering of recordings, --file-only, the tuning options (--threads, --read-buffer,
--reads-per-cycle, --write-buffer-high/-low) byte-exact, wsbridge_targets_reloads_total, --token-stale-for with the
token API, and the password hashes of --auth-file (yescrypt accepted; MD5 `$1$`/`$apr1$` refused)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Bridge, LineLog, run_bridge, write_atomic, ws_connect
from test_access import assert_401, basic, upgrade
from test_operability import get, metrics_port, parse_recording, scrape
from test_token_api import TokenAPI, answer, api_bridge
from wsraw import RawWS, http_exchange, read_http_response, upgrade_request


def metrics_text(sock_or_addr) -> str:
    """GET /metrics over an open socket (or (host, port)); the body."""
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    if isinstance(sock_or_addr, tuple):
        return http_exchange(*sock_or_addr, request).body.decode()
    sock_or_addr.sendall(request)
    return read_http_response(sock_or_addr, 10).body.decode()


def metric(text: str, series: str) -> float | None:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Backend connect failures


def netns_available() -> str | None:
    """None when this process may run a program in a network namespace of its own; else why not."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare (util-linux) or ip (iproute2) is missing"
    args = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    r = subprocess.run([*args, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10)
    return None if r.returncode == 0 else f"unshare --net is not allowed here: {r.stderr.decode().strip()}"


def test_backend_unreachable_is_1014_and_counted(wsbridge_bin, tmp_path):
    """A backend address with no route: the 101, then Close 1014 `backend unreachable`, counted as
    wsbridge_backend_connect_failures_total{kind="unreachable"}. The bridge runs in a network namespace of its own
    with loopback only, so 192.0.2.1 (TEST-NET-1) has no route and the connect fails at once without a packet
    leaving; the test reaches it over a Unix socket (--unix-listen), which namespaces do not separate."""
    why = netns_available()
    if why:
        pytest.skip(f"needs a network namespace: {why}")
    path = tmp_path / "wsbridge.sock"
    args = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    b = Bridge.__new__(Bridge)
    b.args = [*args, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", wsbridge_bin, "--metrics-on-main-port",
              "--metrics-listen", "off", "--unix-listen", str(path), "192.0.2.1:5900"]
    b.proc = subprocess.Popen(b.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    b.pid = b.proc.pid
    b.stderr, b.stdout = LineLog(b.proc.stderr, "stderr"), LineLog(b.proc.stdout, "stdout")
    try:
        assert b.stderr.wait_for(r"listening on unix:", 15), b.stderr.text()

        def unix() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(str(path))
            return s

        with unix() as s:
            assert metric(metrics_text(s), 'wsbridge_backend_connect_failures_total{kind="unreachable"}') == 0
        with unix() as s:
            s.sendall(upgrade_request("localhost", 80, "/"))
            resp = read_http_response(s, 10)
            assert resp.status == 101, str(resp)
            data, close = RawWS(s, resp).read_until_close(timeout=10)
        assert data == b"" and close is not None, close
        assert (close.close_code, close.close_reason) == (1014, "backend unreachable"), close
        with unix() as s:
            text = metrics_text(s)
        assert metric(text, 'wsbridge_backend_connect_failures_total{kind="unreachable"}') == 1, text
        assert metric(text, 'wsbridge_backend_connect_failures_total{kind="refused"}') == 0, text
    finally:
        b.stop()


def test_backend_refused_and_timeout_are_counted_by_kind(bridge_factory, refused_port):
    b = bridge_factory("--metrics-on-main-port", target=f"127.0.0.1:{refused_port}")
    for _ in range(2):
        with RawWS.connect(b.connect_host, b.port) as ws:
            _, close = ws.read_until_close(timeout=10)
            assert close is not None and (close.close_code, close.close_reason) == (1014, "backend refused"), close
    text = metrics_text((b.connect_host, b.port))
    assert metric(text, 'wsbridge_backend_connect_failures_total{kind="refused"}') == 2, text
    assert metric(text, 'wsbridge_backend_connect_failures_total{kind="timeout"}') == 0, text


# ---------------------------------------------------------------------------------------------
# Metrics listeners


def test_metrics_on_main_port(bridge_factory, backends):
    """--metrics-on-main-port: /metrics on the WebSocket port too, the same text as on the metrics listener."""
    echo = backends.echo()
    b = bridge_factory("--metrics-on-main-port", "--metrics-listen", "127.0.0.1:0", target=echo.addr)
    port = metrics_port(b)
    with ws_connect(b.url("/")) as ws:
        ws.send(b"counted")
        assert ws.recv(timeout=10) == b"counted"
    main = get(b.connect_host, b.port, "/metrics")
    assert main.status == 200, str(main)
    assert main.header("Content-Type").startswith("text/plain; version=0.0.4"), str(main)
    values = scrape(port)
    expected = {'wsbridge_sessions_opened_total{target="default"}': 1, 'wsbridge_bytes_to_backend_total{target="default"}': 7}
    for series, value in expected.items():
        assert metric(main.body.decode(), series) == values[series] == value, (series, main.body)


def test_default_metrics_port_taken_is_a_warning_and_the_bridge_goes_on(bridge_factory, backends):
    """The default 127.0.0.1:9680 taken: a warning, and the bridge serves without a metrics listener. (Taken by
    this test, or already by someone else: taken either way.)"""
    echo = backends.echo()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 9680))
        holder.listen(1)
    except OSError as e:
        assert e.errno == errno.EADDRINUSE, e
    try:
        b = bridge_factory(target=echo.addr)
        assert b.stderr.wait_for(r"warning.*metrics listener not started: 127\.0\.0\.1:9680", 10), b.log()
        with ws_connect(b.url("/")) as ws:
            ws.send(b"goes on")
            assert ws.recv(timeout=10) == b"goes on"
        assert get(b.connect_host, b.port, "/healthz").status == 200
        assert "metrics and health on" not in b.log()
        assert b.proc.poll() is None
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------------
# Recording


def wait_recording(path: Path) -> str:
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().endswith("'EOF'];\n")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the file is finished by a writer queue after the session closes: poll its content
    assert path.exists(), sorted(os.listdir(path.parent))
    return path.read_text()


def echo_messages(b, messages: list[bytes]) -> None:
    with ws_connect(b.url("/")) as ws:
        for m in messages:
            ws.send(m)
            got = b""
            while len(got) < len(m):
                got += ws.recv(timeout=10)
            assert got == m


def test_recordings_are_numbered_after_the_highest_existing(bridge_factory, backends, tmp_path):
    """PREFIX.N numbered after the highest PREFIX.N there at start (names that are not PREFIX.number do not
    count), one new number per session."""
    echo = backends.echo()
    prefix = tmp_path / "rec" / "vnc"
    prefix.parent.mkdir()
    for name in ("vnc.3", "vnc.7", "vnc.x", "vnc.12a", "other.40"):
        (prefix.parent / name).write_text("earlier")
    b = bridge_factory("--record", str(prefix), target=echo.addr)
    echo_messages(b, [b"first"])
    first = wait_recording(Path(f"{prefix}.8"))
    echo_messages(b, [b"second"])
    second = wait_recording(Path(f"{prefix}.9"))
    assert [d for k, _, d in parse_recording(first) if k == "}"] == [b"first"]
    assert [d for k, _, d in parse_recording(second) if k == "}"] == [b"second"]
    assert sorted(os.listdir(prefix.parent)) == ["other.40", "vnc.12a", "vnc.3", "vnc.7", "vnc.8", "vnc.9", "vnc.x"]


def test_record_limit_leaves_out_later_messages(bridge_factory, backends, tmp_path):
    """--record-limit 100: the payload recorded stops within 100 bytes; every message after the first one left out
    is left out too (a recording with a hole in the middle would replay a corrupt stream)."""
    echo = backends.echo()
    prefix = tmp_path / "rec" / "s"
    prefix.parent.mkdir()
    b = bridge_factory("--record", str(prefix), "--record-limit", "100", target=echo.addr)
    messages = [b"a" * 30, b"b" * 30, b"c" * 30, b"d" * 5]
    echo_messages(b, messages)
    frames = parse_recording(wait_recording(Path(f"{prefix}.1")))
    recorded = [(k, d) for k, _, d in frames]
    # 30 up, 30 down (60), 30 up (90): the next 30 down does not fit; from then on nothing is recorded.
    assert recorded == [("}", b"a" * 30), ("{", b"a" * 30), ("}", b"b" * 30)], recorded


# ---------------------------------------------------------------------------------------------
# Static files


def test_file_only_is_accepted_and_lists_nothing(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    (web / "sub" / "a.txt").write_text("a\n")
    b = bridge_factory("--web", web, "--file-only", target=echo.addr)
    assert get(b.connect_host, b.port, "/sub/").status == 404, "no listing"
    resp = get(b.connect_host, b.port, "/sub/a.txt")
    assert (resp.status, resp.body) == (200, b"a\n"), str(resp)


# ---------------------------------------------------------------------------------------------
# Tuning options


def event_loop_threads(bridge: Bridge) -> int:
    names = [Path(f"/proc/{bridge.pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{bridge.pid}/task")]
    return sum(1 for n in names if n.startswith("NIO-ELT-"))


def test_tuning_options_keep_the_stream_byte_exact(bridge_factory, backends):
    """--threads, --read-buffer, --reads-per-cycle, --write-buffer-high/-low set small: 2 MiB each way arrive
    byte-exact; no message to the client is larger than --read-buffer (each backend read is one message, and
    reads are at most that); the event loops are the number asked for."""
    echo = backends.echo()
    b = bridge_factory("--threads", "3", "--read-buffer", "1024", "--reads-per-cycle", "1",
                       "--write-buffer-high", "8192", "--write-buffer-low", "2048", target=echo.addr)
    assert event_loop_threads(b) == 3
    payload = os.urandom(2 << 20)
    with RawWS.connect(b.connect_host, b.port) as ws:
        import threading

        def send() -> None:
            for i in range(0, len(payload), 60_000):
                ws.send_binary(payload[i : i + 60_000])

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        largest = 0
        while len(got) < len(payload):
            f = ws.recv_frame(timeout=20)
            assert f is not None and f.opcode == 0x2, f
            largest = max(largest, len(f.payload))
            got += f.payload
        sender.join(20)
        assert bytes(got) == payload
        assert largest <= 1024, f"a message of {largest} bytes with --read-buffer 1024"
    one = bridge_factory("--threads", "1", target=echo.addr)
    assert event_loop_threads(one) == 1


# ---------------------------------------------------------------------------------------------
# Reload counter


def test_targets_reloads_are_counted_ok_and_error(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    write_atomic(targets, f"targets:\n  a: {echo.addr}\n")
    b = bridge_factory("--targets", str(targets), "--metrics-listen", "127.0.0.1:0")
    port = metrics_port(b)
    before = scrape(port)
    ok, error = 'wsbridge_targets_reloads_total{result="ok"}', 'wsbridge_targets_reloads_total{result="error"}'
    mark = len(b.stderr.snapshot())
    write_atomic(targets, f"targets:\n  a: {echo.addr}\n  b: {echo.addr}\n")
    assert b.stderr.wait_for(r"targets reloaded", 10, start=mark), b.log()
    mark = len(b.stderr.snapshot())
    write_atomic(targets, "targets:\n  a: [not, a, target]\n")
    assert b.stderr.wait_for(rf"{re.escape(str(targets))}:2:", 10, start=mark), b.log()
    deadline = time.monotonic() + 5
    while (after := scrape(port))[error] != before[error] + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the counter follows the log line: polled, bounded
    assert (after[ok] - before[ok], after[error] - before[error]) == (1, 1), (before, after)


# ---------------------------------------------------------------------------------------------
# Token API: stale answers


def test_token_api_stale_answers_for_token_stale_for(bridge_factory, backends):
    """--token-stale-for S: while the API is down (here: a 500), a token whose last found answer is at most S
    seconds old is still admitted; a token never seen is not; once the answer is older than S, 503."""
    echo = backends.echo()
    api = TokenAPI()
    try:
        api.answers["known"] = (200, echo.addr, 0.0)
        b = api_bridge(bridge_factory, "BaseTokenAPI", api.url, "--token-stale-for", "2")
        assert answer(b, "known").status == 101
        found = time.monotonic()
        api.answers["known"] = (500, "down", 0.0)
        assert answer(b, "known").status == 101, "the last answer is younger than --token-stale-for"
        assert time.monotonic() - found < 2, "this run was too slow to say anything about the stale bound"
        api.answers["never-seen"] = (500, "down", 0.0)
        resp = answer(b, "never-seen")
        assert (resp.status, resp.header("Retry-After")) == (503, "5"), str(resp)
        assert api.hits("/t/known") == 2, "the API is still asked while it answers (stale only as a fallback)"
        deadline = time.monotonic() + 10
        while (resp := answer(b, "known")).status == 101 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the last answer is older than --token-stale-for 2: polled, bounded
        assert resp.status == 503, str(resp)
        assert time.monotonic() - found >= 1.9, "the stale answer was dropped before --token-stale-for"
    finally:
        api.close()


# ---------------------------------------------------------------------------------------------
# Password hashes


def libcrypt_hash(prefix: bytes, password: str) -> str | None:
    """A crypt(3) hash made by the system's libcrypt (the one the bridge verifies with), or None."""
    name = ctypes.util.find_library("crypt")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(prefix, 0, None, 0)
    if not salt:
        return None
    out = lib.crypt(password.encode(), salt)
    return out.decode() if out and out.startswith(prefix) else None


def test_yescrypt_hashes_verify(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    hashed = libcrypt_hash(b"$y$", "yes pass")
    assert hashed, "the system's libcrypt makes no yescrypt hash (docs/behaviour.md promises yescrypt)"
    creds = tmp_path / "users"
    creds.write_text(f"yan:{hashed}\n")
    b = bridge_factory("--auth-file", creds, target=echo.addr)
    assert upgrade(b, extra=[basic("yan", "yes pass")]).status == 101
    assert_401(upgrade(b, extra=[basic("yan", "yes pass!")]))


@pytest.mark.parametrize("line", ["ann:$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "ann:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"],
                         ids=["md5-crypt", "apr1"])
def test_md5_hashes_are_refused_naming_the_line(wsbridge_bin, backends, tmp_path, line):
    echo = backends.echo()
    creds = tmp_path / "users"
    creds.write_text(f"# users\n{line}\n")
    r = run_bridge(wsbridge_bin, "--auth-file", str(creds), "127.0.0.1:0", echo.addr)
    assert r.returncode == 1 and f"{creds}:2:".encode() in r.stderr, r
