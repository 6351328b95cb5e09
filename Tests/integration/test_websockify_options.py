"""websockify 0.13's options with websockify's meaning (issue 16): the server's own lifetime (--idle-timeout,
--timeout, --run-once), --daemon with --pid-file, --log-file, --syslog, --cert's self.pem default, and the options
that are only accepted (docs/behaviour.md, "Command line")."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LISTENING_RE, free_port, run_bridge, write_token_file, ws_connect
from test_cli import status_for
from tlsutil import PKI, client_context


def echo_once(ws, payload: bytes = b"ping") -> None:
    ws.send(payload)
    assert ws.recv(timeout=10) == payload


def refused(port: int) -> bool:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        s.settimeout(5)
        # Queued in the closing listener's backlog: reset, never served.
        return s.recv(1) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    finally:
        s.close()
    return False


# ---------------------------------------------------------------------------------------------
# The server's lifetime


def test_idle_timeout_exits_the_server_when_no_session_is_open(bridge_factory, backends):
    """Foreman runs one proxy per console with --idle-timeout=120 --timeout=120 and relies on it exiting."""
    echo = backends.echo()
    b = bridge_factory("--idle-timeout", "1", "--metrics-listen", "off", target=echo.addr)
    assert b.wait_exit(15) == 0, b.log()
    assert "listener exit due to --idle-timeout" in b.log()


def test_an_open_session_keeps_the_idle_server_alive(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--idle-timeout", "2", "--metrics-listen", "off", target=echo.addr)
    with ws_connect(b.url()) as ws:
        time.sleep(3)  # longer than --idle-timeout: there is no event for "did not exit"
        assert b.proc.poll() is None, "the server exited with a session open"
        echo_once(ws, b"still served")
    # Counted again from the end of the session.
    assert b.wait_exit(15) == 0, b.log()


def test_timeout_stops_listening_and_lets_the_live_session_finish(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--timeout", "1", "--metrics-listen", "off", target=echo.addr)
    with ws_connect(b.url()) as ws:
        assert b.stderr.wait_for("listener exit due to --timeout", 15), b.log()
        assert refused(b.port), "still accepting after --timeout"
        echo_once(ws, b"after the listener closed")
        assert b.proc.poll() is None
    assert b.wait_exit(15) == 0, b.log()


def test_run_once_exits_after_the_first_session_not_after_a_refused_upgrade(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens", {"vm": echo.addr})
    b = bridge_factory("--run-once", "--targets", f, "--metrics-listen", "off")
    assert status_for(b, "unknown") == 404
    assert b.proc.poll() is None, "a refused upgrade ended --run-once"
    with ws_connect(b.url("/?token=vm")) as ws:
        echo_once(ws)
    assert b.wait_exit(15) == 0, b.log()
    assert "listener exit due to --run-once" in b.log()


# ---------------------------------------------------------------------------------------------
# Daemon


def test_daemon_returns_once_listening_and_serves_with_relative_paths(wsbridge_bin, backends, tmp_path):
    """-D: the command returns when the port is bound (a launcher may connect at once), the pid file names the
    daemon, whose working directory is / and whose stdio is /dev/null; relative paths were resolved before."""
    echo = backends.echo()
    work = tmp_path / "work"
    work.mkdir()
    write_token_file(work / "tokens.cfg", {"vm": echo.addr})
    port = free_port()
    r = subprocess.run(
        [wsbridge_bin, "-D", "--pid-file", "ws.pid", "--target-config", "tokens.cfg", "--log-file", "ws.log",
         "--metrics-listen", "off", f"127.0.0.1:{port}"],
        cwd=work, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert LISTENING_RE.search(r.stderr.decode()), r.stderr
    pid = int((work / "ws.pid").read_text())
    try:
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null", fd
        assert os.getsid(pid) == pid, "the daemon leads its own session"
        with ws_connect(f"ws://127.0.0.1:{port}/?token=vm") as ws:
            echo_once(ws, b"through the daemon")
        # The token file is read from its absolute path after the chdir.
        write_token_file(work / "tokens.cfg", {"vm": echo.addr, "late": echo.addr})
        with ws_connect(f"ws://127.0.0.1:{port}/?token=late") as ws:
            echo_once(ws, b"late token")
        assert "listening on" in (work / "ws.log").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)  # not our child: polling /proc is the only way to see it go
    assert not os.path.exists(f"/proc/{pid}"), "the daemon did not stop on SIGTERM"


def test_daemon_that_cannot_listen_fails_in_the_foreground(wsbridge_bin, backends, tmp_path):
    echo = backends.echo()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        r = run_bridge(wsbridge_bin, "-D", "--pid-file", str(tmp_path / "ws.pid"), "--metrics-listen", "off",
                       f"127.0.0.1:{taken.getsockname()[1]}", echo.addr, timeout=30)
    finally:
        taken.close()
    assert r.returncode == 1, r
    assert b"Address already in use" in r.stderr or b"address already in use" in r.stderr.lower(), r.stderr
    assert not (tmp_path / "ws.pid").exists()


# ---------------------------------------------------------------------------------------------
# Logging


def test_log_file_is_reopened_on_sighup_for_logrotate(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    log = tmp_path / "wsbridge.log"
    b = bridge_factory("--log-file", log, "--metrics-listen", "off", target=echo.addr)

    def wait_text(path, text: str) -> str:
        # The file is written beside stderr, not before it: its line is polled for (bounded), not assumed there.
        deadline = time.monotonic() + 10
        while text not in (content := path.read_text() if path.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        return content

    assert "listening on" in wait_text(log, "listening on"), b.log()
    rotated = tmp_path / "wsbridge.log.1"
    os.rename(log, rotated)
    b.signal(signal.SIGHUP)
    assert b.stderr.wait_for("SIGHUP: log file reopened", 10), b.log()
    assert "log file reopened" in wait_text(log, "log file reopened")
    assert "log file reopened" not in rotated.read_text()


@pytest.mark.parametrize("legacy", [False, True], ids=["rfc5424", "legacy"])
def test_syslog_over_udp(bridge_factory, backends, legacy):
    echo = backends.echo()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(10)
    try:
        args = ["--syslog", f"127.0.0.1:{server.getsockname()[1]}"] + (["--legacy-syslog"] if legacy else [])
        b = bridge_factory(*args, "--metrics-listen", "off", target=echo.addr)
        pattern = (rf"^<14>wsbridge\[{b.pid}\]: " if legacy
                   else rf"^<14>1 \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ wsbridge {b.pid} - - ")
        while True:
            message = server.recv(65536).decode()
            if "listening on" in message:
                break
        assert re.match(pattern + r"listening on 127\.0\.0\.1:\d+$", message), message
    finally:
        server.close()


def test_syslog_to_a_local_socket(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(10)
    try:
        b = bridge_factory("--syslog", path, "--metrics-listen", "off", target=echo.addr)
        while True:
            message = server.recv(65536).decode()
            if "no --origin allow-list" in message:
                break
        # Facility user, severity warning (4).
        assert re.match(rf"^<12>1 \S+ \S+ wsbridge {b.pid} - - no --origin allow-list", message), message
    finally:
        server.close()


def test_legacy_syslog_needs_syslog(wsbridge_bin):
    r = run_bridge(wsbridge_bin, "--legacy-syslog", "127.0.0.1:0", "127.0.0.1:1")
    assert r.returncode == 64 and b"--legacy-syslog needs --syslog" in r.stderr, r


# ---------------------------------------------------------------------------------------------
# TLS: websockify's --cert default and --key-password


def test_self_pem_in_the_working_directory_is_the_default_certificate(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    pki = PKI(tmp_path / "pki")
    issued = pki.issue("localhost", dns=("localhost",))
    work = tmp_path / "work"
    work.mkdir()
    (work / "self.pem").write_bytes(issued.cert.read_bytes() + issued.key.read_bytes())
    b = bridge_factory("--metrics-listen", "off", target=echo.addr, cwd=str(work))
    with ws_connect(f"wss://127.0.0.1:{b.port}/", ssl=client_context(pki.ca), server_hostname="localhost") as ws:
        echo_once(ws, b"wss with self.pem")
    with ws_connect(b.url()) as ws:
        echo_once(ws, b"plain on the same port")
    only = bridge_factory("--ssl-only", "--metrics-listen", "off", target=echo.addr, cwd=str(work))
    with ws_connect(f"wss://127.0.0.1:{only.port}/", ssl=client_context(pki.ca), server_hostname="localhost") as ws:
        echo_once(ws)


def test_without_self_pem_the_port_is_plain_and_ssl_only_is_an_error(bridge_factory, backends, tmp_path, wsbridge_bin):
    echo = backends.echo()
    b = bridge_factory("--metrics-listen", "off", target=echo.addr, cwd=str(tmp_path))
    with ws_connect(b.url()) as ws:
        echo_once(ws)
    r = subprocess.run([wsbridge_bin, "--ssl-only", "127.0.0.1:0", echo.addr], cwd=tmp_path, capture_output=True, timeout=15)
    assert r.returncode == 64 and b"--ssl-only needs --cert FILE (or self.pem" in r.stderr, r


# ---------------------------------------------------------------------------------------------
# Accepted for compatibility


def test_options_accepted_for_compatibility(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--traffic", "--libserver", "-6", "--wrap-mode", "ignore", "--metrics-listen", "off", target=echo.addr)
    with ws_connect(b.url()) as ws:
        echo_once(ws)
    assert re.search(r"warning.*--libserver is ignored", b.log()), b.log()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_prefer_ipv6_binds_the_ipv6_address_of_a_name(bridge_factory, backends):
    try:
        infos = socket.getaddrinfo("localhost", None, socket.AF_INET6)
    except socket.gaierror:
        pytest.skip("localhost has no IPv6 address here")
    if not infos:
        pytest.skip("localhost has no IPv6 address here")
    echo = backends.echo()
    b = bridge_factory("-6", "--metrics-listen", "off", listen="localhost:0", target=echo.addr)
    assert b.host == "::1", b.log()


def test_version(wsbridge_bin):
    r = run_bridge(wsbridge_bin, "--version")
    assert r.returncode == 0 and re.fullmatch(rb"wsbridge \d+\.\d+\.\d+\n", r.stdout), r
