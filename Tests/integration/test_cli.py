"""Command line, targets-file errors, listen addresses and reload (docs/behaviour.md,
"Command line", "Targets files")."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import LISTENING_RE, free_port, run_bridge, write_atomic, write_token_file, ws_connect
from wsraw import RawWS, http_exchange, read_http_response, upgrade_request

DOCS = Path(__file__).resolve().parents[2] / "docs" / "behaviour.md"
OPTION_RE = re.compile(r"(?<![\w-])(--?[a-z][\w-]*)")


@pytest.fixture(scope="module")
def help_text(wsbridge_bin) -> str:
    r = run_bridge(wsbridge_bin, "--help")
    assert r.returncode == 0, f"--help exited {r.returncode}; stderr: {r.stderr!r}"
    return (r.stdout + r.stderr).decode("utf-8", "replace")


def help_options(help_text: str) -> set[str]:
    """The options --help lists: the names at the start of its option lines (`  -v, --verbose ...`)."""
    names = set()
    for line in help_text.splitlines():
        m = re.match(r"^  (-[\w-]+(?:, -[\w-]+)*)", line)
        if m:
            names.update(OPTION_RE.findall(m.group(1)))
    return names - {"-h", "--help"}


def documented_options() -> set[str]:
    """The options of docs/behaviour.md's options table (its first column)."""
    names = set()
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `-"):
            names.update(OPTION_RE.findall(line.split("|")[1]))
    return names


def test_help_lists_every_documented_option_and_documents_every_option_it_lists(help_text):
    """--help and docs/behaviour.md describe the same command line: every option of the docs' table is in --help,
    and every option --help lists is in the docs (in the table, or in the text for websockify's aliases)."""
    listed, table, docs = help_options(help_text), documented_options(), DOCS.read_text()
    assert len(listed) > 20 and len(table) > 20, (listed, table)  # both parsed: the formats did not change
    assert table <= listed, f"documented but not in --help: {sorted(table - listed)}"
    undocumented = sorted(o for o in listed if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", docs))
    assert not undocumented, f"in --help but not in docs/behaviour.md: {undocumented}"


def nonempty_lines(b: bytes) -> list[str]:
    return [l for l in b.decode("utf-8", "replace").splitlines() if l.strip()]


def assert_nothing_listens(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["--idle-timeout", "abc"],
        ["--max-frame-size", "lots"],
        ["--log-level", "loud"],
        ["--origin"],
    ],
    ids=["unknown-flag", "bad-number", "bad-size", "bad-level", "missing-value"],
)
def test_bad_flag_usage_error(wsbridge_bin, args):
    port = free_port()
    r = run_bridge(wsbridge_bin, f"127.0.0.1:{port}", "127.0.0.1:5900", *args)
    assert r.returncode == 64, f"exit {r.returncode}; stderr: {r.stderr!r}"
    lines = nonempty_lines(r.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {r.stderr!r}"
    assert_nothing_listens(port)


def test_max_message_size_below_max_frame_size_is_a_usage_error(wsbridge_bin):
    port = free_port()
    r = run_bridge(
        wsbridge_bin, f"127.0.0.1:{port}", "127.0.0.1:5900", "--max-frame-size", "2048", "--max-message-size", "1024"
    )
    assert r.returncode == 64, f"exit {r.returncode}; stderr: {r.stderr!r}"
    assert b"--max-message-size must be at least --max-frame-size" in r.stderr, r.stderr
    assert_nothing_listens(port)


def test_positional_target_with_targets_file_is_error(wsbridge_bin, tmp_path):
    f = write_token_file(tmp_path / "t", {"a": "127.0.0.1:1"})
    port = free_port()
    r = run_bridge(wsbridge_bin, "--targets", str(f), f"127.0.0.1:{port}", "127.0.0.1:5900")
    assert r.returncode == 64, f"exit {r.returncode}; stderr: {r.stderr!r}"
    assert len(nonempty_lines(r.stderr)) == 1, r.stderr
    assert_nothing_listens(port)


def test_malformed_token_file_line_is_skipped_as_websockify_does(bridge_factory, backends, tmp_path):
    """websockify logs a syntax error for a bad line and serves the others; so does wsbridge (with FILE:LINE)."""
    echo = backends.echo()
    f = tmp_path / "tokens.conf"
    f.write_text(f"# first line is a comment\ngood: {echo.addr}\ntok 1.2.3.4:5\nafter: {echo.addr}\n")
    b = bridge_factory("--targets", f)
    m = b.stderr.wait_for(re.escape(f"{f}:3: ") + r".*line skipped", 10)
    assert m, f"no '{f}:3: ... line skipped' warning; stderr:\n{b.log()}"
    assert "warning" in m.string.lower(), m.string
    assert status_for(b, "good") == 101
    assert status_for(b, "after") == 101
    assert status_for(b, "tok") == 404


def test_check_still_fails_on_a_malformed_token_file_line(wsbridge_bin, tmp_path):
    f = tmp_path / "tokens.conf"
    f.write_text("# first line is a comment\ngood: 127.0.0.1:5900\ntok 1.2.3.4:5\n")
    r = run_bridge(wsbridge_bin, "check", str(f))
    assert r.returncode == 1, f"exit {r.returncode}; stderr: {r.stderr!r}"
    assert f"{f}:3:".encode() in r.stderr, r.stderr


def test_broken_yaml_unknown_key(wsbridge_bin, tmp_path):
    f = tmp_path / "targets.yaml"
    f.write_text("targets:\n  a: 127.0.0.1:5900\n  b:\n    backend: 127.0.0.1:5901\n    colour: blue\n")
    port = free_port()
    r = run_bridge(wsbridge_bin, "--targets", str(f), f"127.0.0.1:{port}")
    assert r.returncode == 1, f"exit {r.returncode}; stderr: {r.stderr!r}"
    lines = nonempty_lines(r.stderr)
    assert len(lines) == 1, f"expected one line on stderr: {r.stderr!r}"
    assert f"{f}:5:" in lines[0], lines[0]
    assert_nothing_listens(port)


def test_broken_yaml_unknown_top_level_key(wsbridge_bin, tmp_path):
    f = tmp_path / "targets.yml"
    f.write_text("targets:\n  a: 127.0.0.1:5900\nlisten: 0.0.0.0\n")
    r = run_bridge(wsbridge_bin, "--targets", str(f), f"127.0.0.1:{free_port()}")
    assert r.returncode == 1, r.stderr
    assert f"{f}:3:" in r.stderr.decode(), r.stderr


def test_duplicate_token_in_directory_with_yaml_is_refused(wsbridge_bin, tmp_path):
    """YAML files are ours and strict; between token files the last definition wins (test_routing)."""
    d = tmp_path / "targets.d"
    d.mkdir()
    (d / "a").write_text("dup: 127.0.0.1:5900\n")
    (d / "b.yaml").write_text("# x\ntargets:\n  dup: 127.0.0.1:5901\n")
    r = run_bridge(wsbridge_bin, "--targets", str(d), f"127.0.0.1:{free_port()}")
    assert r.returncode == 1, r.stderr
    assert len(nonempty_lines(r.stderr)) == 1, r.stderr
    assert re.search(rf"{re.escape(str(d))}/b.yaml:3:", r.stderr.decode()), r.stderr


def test_missing_targets_file(wsbridge_bin, tmp_path):
    port = free_port()
    # a YAML file is ours: missing is an error (a missing token file is websockify's warning, see test_routing)
    r = run_bridge(wsbridge_bin, "--targets", str(tmp_path / "nope.yaml"), f"127.0.0.1:{port}")
    assert r.returncode == 1, f"exit {r.returncode}; stderr: {r.stderr!r}"
    assert len(nonempty_lines(r.stderr)) == 1, r.stderr
    assert_nothing_listens(port)


# ---------------------------------------------------------------------------------------------
# Accepted options and aliases


def test_decimal_times_and_all_options(bridge_factory, backends, tmp_path):
    """Every option given at once, each seen at work (not only parsed): decimal times are not truncated (the lower
    bounds), nor taken for their defaults (the upper bounds leave a loaded machine seconds of margin and are still
    below the defaults: 10 s handshake and connect, 30 s ping interval, 10 s shutdown)."""
    from test_faults import filled_listener

    echo = backends.echo()
    listener, fillers = filled_listener()  # a backend that never answers a connect
    hole = "%s:%d" % listener.getsockname()
    targets = tmp_path / "t.yaml"
    write_atomic(targets, f"targets:\n  echo: {echo.addr}\n  hole: {hole}\n")
    origin = [("Origin", "https://app.example.com")]
    try:
        b = bridge_factory(
            "--handshake-timeout", "2.5",
            "--connect-timeout", "1.5",
            "--session-idle-timeout", "30.25",
            "--ping-interval", "0.5",
            "--pong-timeout", "10",
            "--max-frame-size", "100000",
            "--close-timeout", "0.5",
            "--shutdown-timeout", "9.5",
            "--log-level", "debug",
            "--origin", "https://app.example.com",
            "--targets", str(targets),
        )
        # --origin: that origin is let in, another is refused.
        other = http_exchange(b.connect_host, b.port, upgrade_request(
            b.connect_host, b.port, "/?token=echo", extra=[("Origin", "https://evil.example.com")]))
        assert other.status == 403, str(other)
        # --log-level debug: the refusal is logged at debug level.
        assert b.stderr.wait_for(r"debug.*request refused", 10), b.log()

        # --handshake-timeout 2.5: a connection that sends nothing gets 408.
        started = time.monotonic()
        with socket.create_connection((b.connect_host, b.port), timeout=15) as s:
            resp = read_http_response(s, 15)
        took = time.monotonic() - started
        assert resp.status == 408, str(resp)
        assert 2.4 <= took < 8, f"408 after {took:.2f}s with --handshake-timeout 2.5"

        # --connect-timeout 1.5: the 101, then Close 1014.
        started = time.monotonic()
        with RawWS.connect(b.connect_host, b.port, "/?token=hole", extra=origin, timeout=15) as ws:
            _, close = ws.read_until_close(timeout=15)
        took = time.monotonic() - started
        assert close is not None and (close.close_code, close.close_reason) == (1014, "backend connect timeout"), close
        assert 1.4 <= took < 8, f"Close 1014 after {took:.2f}s with --connect-timeout 1.5"

        ws = RawWS.connect(b.connect_host, b.port, "/?token=echo", extra=origin)
        opened = time.monotonic()
        # --max-frame-size 100000: a frame of that size is relayed byte-exact ...
        payload = os.urandom(100_000)
        ws.send_binary(payload)
        got, pinged = b"", None
        while len(got) < len(payload) or pinged is None:
            f = ws.recv_frame(timeout=10)
            assert f is not None, "connection closed"
            if f.opcode == 0x9:
                pinged = pinged or time.monotonic()
                ws.send_frame(0xA, f.payload)
            else:
                got += f.payload
        assert got == payload
        # --ping-interval 0.5: a ping after half a second.
        assert 0.45 <= pinged - opened < 5, f"first ping {pinged - opened:.2f}s after the 101"
        # ... and one byte more is refused with 1009.
        ws.send_binary(b"x" * 100_001)
        _, close = ws.read_until_close(timeout=10)
        assert close is not None and close.close_code == 1009, close
        ws.close()

        # --close-timeout 0.5: a session that never answers the Close 1001 holds the exit that long, not the 5 s
        # default nor --shutdown-timeout 9.5 (test_close tests that one).
        held = RawWS.connect(b.connect_host, b.port, "/?token=echo", extra=origin)
        started = time.monotonic()
        b.signal(signal.SIGTERM)
        assert b.wait_exit(15) == 0, b.log()
        took = time.monotonic() - started
        held.close()
        assert 0.45 <= took < 4.5, f"exit {took:.2f}s after SIGTERM with --close-timeout 0.5"
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_verbose_flag(bridge_factory, backends):
    echo = backends.echo()
    for flag in ("-v", "--verbose"):
        b = bridge_factory(flag, target=echo.addr)
        with ws_connect(b.url()) as ws:
            ws.send(b"v")
            assert ws.recv(timeout=10) == b"v"


def test_heartbeat_alias_sends_pings(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--heartbeat", "0.3", target=echo.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        f = ws.recv_frame(timeout=5)
        assert f is not None and f.opcode == 0x9, f"expected a ping within 5s, got {f!r}"
        ws.send_frame(0xA, f.payload)


def test_ping_interval_sends_pings_and_pong_timeout_kills(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory("--ping-interval", "0.3", "--pong-timeout", "1", target=col.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        f = ws.recv_frame(timeout=5)
        assert f is not None and f.opcode == 0x9, f
        # never answer: both connections are closed
        t0 = time.monotonic()
        ws.read_until_close(timeout=10)  # Close frame or plain EOF
        assert ws.wait_eof(10), "client connection not closed after the pong timeout"
        assert time.monotonic() - t0 < 8
    assert col.wait_conn().wait_end(10), "backend not closed after the pong timeout"


def test_live_peer_survives_pings(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--ping-interval", "0.2", "--pong-timeout", "0.6", target=echo.addr)
    with ws_connect(b.url()) as ws:  # websockets answers pings itself
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2:
            ws.send(b"alive")
            assert ws.recv(timeout=5) == b"alive"
            time.sleep(0.2)  # pacing


def test_token_plugin_alias(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens", {"tp": echo.addr})
    b = bridge_factory("--token-plugin", "TokenFile", "--token-source", f)
    with ws_connect(b.url("/?token=tp")) as ws:
        ws.send(b"plugin")
        assert ws.recv(timeout=10) == b"plugin"


def test_target_config_alias(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens", {"tc": echo.addr})
    b = bridge_factory("--target-config", f)
    with ws_connect(b.url("/?token=tc")) as ws:
        ws.send(b"config")
        assert ws.recv(timeout=10) == b"config"


def test_origin_warning_when_no_list(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory(target=echo.addr)
    warn = re.compile(r"(?i)warning.*origin|origin.*warning")
    assert b.stderr.wait_for(warn, 3), b.log()
    b2 = bridge_factory("--origin", "https://app.example.com", target=echo.addr)
    with ws_connect(b2.url(), origin="https://app.example.com") as ws:
        ws.send(b"x")
        assert ws.recv(timeout=10) == b"x"
    assert not any("warning" in l.lower() and "origin" in l.lower() for l in b2.stderr.snapshot()), b2.log()


# ---------------------------------------------------------------------------------------------
# Listen addresses


def _has_ipv6() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def test_listen_ipv4_log_line(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory(target=echo.addr)
    assert b.host == "127.0.0.1" and b.port > 0
    with RawWS.connect("127.0.0.1", b.port):
        pass


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_listen_ipv6_brackets(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory(target=echo.addr, listen="[::1]:0")
    assert any(re.search(rf"listening on \[::1\]:{b.port}\b", l) for l in b.stderr.snapshot()), b.log()
    with RawWS.connect("::1", b.port) as ws:
        ws.send_binary(b"six")
        f = ws.recv_frame()
        assert f is not None and f.payload == b"six"


def test_listen_bare_port_all_addresses(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory(target=echo.addr, listen="0")
    line = next(l for l in b.stderr.snapshot() if LISTENING_RE.search(l))
    if _has_ipv6():
        assert f"listening on [::]:{b.port}" in line, line
        with RawWS.connect("::1", b.port):
            pass
    else:
        assert f"listening on 0.0.0.0:{b.port}" in line, line
    with RawWS.connect("127.0.0.1", b.port):
        pass


def test_listen_explicit_port(bridge_factory, backends):
    echo = backends.echo()
    port = free_port()
    b = bridge_factory(target=echo.addr, listen=f"127.0.0.1:{port}")
    assert b.port == port


# ---------------------------------------------------------------------------------------------
# Reload


def status_for(b, token: str) -> int:
    try:
        resp = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, f"/?token={token}"))
    except OSError as e:
        rc = b.wait_exit(1)
        if rc is not None:
            pytest.fail(f"the bridge exited with {rc} (-1 = killed by SIGHUP); request failed with {e!r}")
        raise
    return resp.status


def test_sighup_right_after_ready_does_not_kill(bridge_factory, backends, tmp_path):
    """'listening on' is the readiness signal: SIGHUP sent at once must reload, not kill."""
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens.conf", {"a": echo.addr})
    for attempt in range(20):  # the race, when present, shows in most attempts
        b = bridge_factory("--targets", f)
        b.signal(signal.SIGHUP)
        rc = b.wait_exit(0.3)
        assert rc is None, f"attempt {attempt}: SIGHUP right after 'listening on' ended the bridge with {rc}"
        assert status_for(b, "a") == 101
        b.stop()


def wait_status(b, token: str, status: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = status_for(b, token)
        if last == status:
            return
        time.sleep(0.1)  # polling the bridge's state
    pytest.fail(f"token {token!r}: status {last}, expected {status} within {timeout}s; stderr:\n{b.log()}")


def test_reload_on_sighup(bridge_factory, backends, tmp_path):
    ea, eb = backends.echo(), backends.echo()
    f = write_token_file(tmp_path / "tokens.conf", {"a": ea.addr, "k": ea.addr})
    b = bridge_factory("--targets", f)
    assert status_for(b, "b") == 404
    with ws_connect(b.url("/?token=a")) as revoked, ws_connect(b.url("/?token=k")) as kept:
        for ws, text in ((revoked, b"before reload"), (kept, b"kept before")):
            ws.send(text)
            assert ws.recv(timeout=10) == text

        write_token_file(f, {"b": eb.addr, "k": ea.addr})
        b.signal(signal.SIGHUP)
        wait_status(b, "a", 404)
        wait_status(b, "b", 101)
        with ws_connect(b.url("/?token=b")) as new:
            new.send(b"new target")
            assert new.recv(timeout=10) == b"new target"

        # the session whose token was removed is closed with 1008; the one whose target is unchanged is not touched
        with pytest.raises(ConnectionClosed) as closed:
            revoked.recv(timeout=10)
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")
        kept.send(b"after reload")
        assert kept.recv(timeout=10) == b"after reload"

        # a malformed line is skipped with FILE:LINE (as websockify does); the other lines are served
        mark = len(b.stderr.snapshot())
        write_atomic(f, "# broken\nb: " + eb.addr + "\nk: " + ea.addr + "\nbroken line without separator\n")
        b.signal(signal.SIGHUP)
        m = b.stderr.wait_for(re.escape(str(f)) + r":4: .*line skipped", 10, start=mark)
        assert m, f"no '{f}:4: ... line skipped' warning after reloading a file with a bad line; stderr:\n{b.log()}"
        assert "warning" in m.string.lower(), m.string
        assert b.proc.poll() is None, "bridge exited on a reload with a bad line"
        assert status_for(b, "b") == 101
        assert status_for(b, "a") == 404
        # a file that cannot be read as text keeps the previous targets, with the error logged
        mark = len(b.stderr.snapshot())
        f.write_bytes(b"b: 1.2.3.4:5\n\xff\xfe\n")
        b.signal(signal.SIGHUP)
        m = b.stderr.wait_for(re.escape(str(f)) + r".*not valid UTF-8", 10, start=mark)
        assert m, f"no UTF-8 error after reloading a binary file; stderr:\n{b.log()}"
        assert "previous targets stay" in m.string, m.string
        assert status_for(b, "b") == 101
        with ws_connect(b.url("/?token=b")) as again:
            again.send(b"still works")
            assert again.recv(timeout=10) == b"still works"
        kept.send(b"old still alive")
        assert kept.recv(timeout=10) == b"old still alive"


def test_reload_by_polling_without_signal(bridge_factory, backends, tmp_path):
    ea, eb = backends.echo(), backends.echo()
    f = write_token_file(tmp_path / "tokens.conf", {"a": ea.addr})
    b = bridge_factory("--targets", f)
    assert status_for(b, "a") == 101
    write_token_file(f, {"a": ea.addr, "c": eb.addr})
    wait_status(b, "c", 101, timeout=10)
    assert status_for(b, "a") == 101


def kubernetes_volume(root, files: dict[str, str], stamp: str) -> None:
    """Writes `files` the way the kubelet updates a ConfigMap or Secret volume: a new `..TIMESTAMP` directory, a
    `..data_tmp` symlink to it renamed atomically over `..data`, and (once) a symlink `NAME -> ..data/NAME` per file."""
    data_dir = root / f"..{stamp}"
    data_dir.mkdir()
    for name, text in files.items():
        (data_dir / name).write_text(text)
    tmp_link = root / "..data_tmp"
    os.symlink(data_dir.name, tmp_link)
    os.rename(tmp_link, root / "..data")
    for name in files:
        if not os.path.lexists(root / name):
            os.symlink(f"..data/{name}", root / name)


@pytest.mark.parametrize("watch", ["file", "directory"])
def test_reload_through_a_kubernetes_data_swap(bridge_factory, backends, tmp_path, watch):
    """A ConfigMap volume's files are symlinks into `..data`, swapped by an atomic rename: the symlink `targets`
    itself never changes, the file it resolves to does. The new token must get 101 after the swap, without
    SIGHUP."""
    ea, eb = backends.echo(), backends.echo()
    root = tmp_path / "configmap"
    root.mkdir()
    kubernetes_volume(root, {"targets": f"a: {ea.addr}\n"}, "2026_01_01_00_00_00.1")
    b = bridge_factory("--targets", root / "targets" if watch == "file" else root)
    assert status_for(b, "a") == 101
    assert status_for(b, "b") == 404
    # Same size as before, so only the resolved file's identity differs.
    kubernetes_volume(root, {"targets": f"b: {eb.addr}\n"}, "2026_01_01_00_01_00.2")
    wait_status(b, "b", 101, timeout=10)
    assert status_for(b, "a") == 404
    with ws_connect(b.url("/?token=b")) as ws:
        ws.send(b"after the swap")
        assert ws.recv(timeout=10) == b"after the swap"


def test_a_file_rewritten_in_place_is_not_applied_while_empty(bridge_factory, backends, tmp_path):
    """`cat > file` truncates, then writes: a poll in between must not revoke every session."""
    ea = backends.echo()
    f = tmp_path / "tokens.conf"
    f.write_text(f"a: {ea.addr}\nb: {ea.addr}\n")
    b = bridge_factory("--targets", f)
    with ws_connect(b.url("/?token=a")) as ws:
        ws.send(b"before")
        assert ws.recv(timeout=10) == b"before"
        mark = len(b.stderr.snapshot())
        with open(f, "r+") as handle:
            handle.truncate(0)
            handle.flush()
            time.sleep(1.2)  # a slow writer: the 1 s poll sees the file empty
            handle.write(f"a: {ea.addr}\nc: {ea.addr}\n")
        wait_status(b, "c", 101, timeout=10)
        assert status_for(b, "b") == 404
        ws.send(b"still open")
        assert ws.recv(timeout=10) == b"still open"
        reloads = [line for line in b.stderr.snapshot()[mark:] if "targets reloaded" in line]
        assert all("targets=0" not in line for line in reloads), reloads


def test_reload_yaml_on_sighup(bridge_factory, backends, tmp_path):
    ea, eb = backends.echo(), backends.echo()
    f = tmp_path / "targets.yaml"
    write_atomic(f, f"targets:\n  a: {ea.addr}\n")
    b = bridge_factory("--targets", f)
    write_atomic(f, f"targets:\n  b: {eb.addr}\n")
    b.signal(signal.SIGHUP)
    wait_status(b, "b", 101)
    wait_status(b, "a", 404)
    mark = len(b.stderr.snapshot())
    write_atomic(f, f"targets:\n  b: {eb.addr}\n  c:\n    backend: {ea.addr}\n    bogus: 1\n")
    b.signal(signal.SIGHUP)
    assert b.stderr.wait_for(re.escape(str(f)) + r":5:", 10, start=mark), b.log()
    assert status_for(b, "b") == 101
    assert status_for(b, "c") == 404


def test_reload_directory(bridge_factory, backends, tmp_path):
    ea, eb = backends.echo(), backends.echo()
    d = tmp_path / "targets.d"
    d.mkdir()
    write_token_file(d / "one", {"a": ea.addr})
    b = bridge_factory("--targets", d)
    assert status_for(b, "a") == 101
    write_token_file(d / "two", {"b": eb.addr})
    b.signal(signal.SIGHUP)
    wait_status(b, "b", 101)
    assert status_for(b, "a") == 101
    os.remove(d / "one")
    b.signal(signal.SIGHUP)
    wait_status(b, "a", 404)
