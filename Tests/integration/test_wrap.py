"""websockify's wrap mode (issue 16): `PORT -- COMMAND ARGS...` starts the program, relays to the target it serves, and
applies --wrap-mode when it exits (docs/behaviour.md, "Wrap mode"). Jupyter's remote desktop proxy ran it this way:
`websockify ... --unix-target SOCKET PORT -- vncserver -rfbunixpath SOCKET ...`. Without a target the program's own
bind() to PORT is moved to a loopback port (websockify's rebind.so)."""

from __future__ import annotations

import ast
import os
import signal
import socket
import sys
import time

import pytest

from conftest import ws_connect
from test_cli import status_for

ECHO_PROGRAM = r"""
import os, socket, sys, threading
path, pidfile = sys.argv[1], sys.argv[2]
open(pidfile, "w").write(str(os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path + ".tmp"); s.listen(8); os.rename(path + ".tmp", path)  # the path appears once it listens
def serve(c):
    while (b := c.recv(65536)):
        c.sendall(b)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def wait_for_path(path, proc, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "the bridge exited"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)  # the wrapped program's socket appears: there is no event to wait on from here


def test_the_wrapped_program_is_started_relayed_to_and_stopped(bridge_factory, tmp_path):
    program = tmp_path / "echo.py"
    program.write_text(ECHO_PROGRAM)
    sock, pidfile = tmp_path / "vnc.sock", tmp_path / "vnc.pid"
    b = bridge_factory("--unix-target", sock, "--metrics-listen", "off", "127.0.0.1:0", "--",
                       sys.executable, program, sock, pidfile, listen=None)
    wait_for_path(sock, b.proc)
    with ws_connect(b.url()) as ws:
        ws.send(b"RFB 003.008\n")
        assert ws.recv(timeout=10) == b"RFB 003.008\n"
    pid = int(pidfile.read_text())
    assert b.stop() == 0
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z", \
        "the wrapped program outlived the bridge"


def test_wrap_mode_exit_ends_the_bridge_with_the_programs_status(bridge_factory, tmp_path):
    b = bridge_factory("--unix-target", tmp_path / "none.sock", "--metrics-listen", "off", "127.0.0.1:0", "--",
                       sys.executable, "-c", "import sys; sys.exit(3)", listen=None)
    assert b.wait_exit(15) == 3, b.log()


def test_wrap_mode_ignore_keeps_serving(bridge_factory, tmp_path):
    b = bridge_factory("--wrap-mode", "ignore", "--unix-target", tmp_path / "none.sock", "--metrics-listen", "off",
                       "127.0.0.1:0", "--", sys.executable, "-c", "pass", listen=None)
    assert b.stderr.wait_for("wrapped command exited", 15), b.log()
    assert status_for(b, "") == 101  # single-target mode: the upgrade goes on (the backend is refused after it)
    assert b.proc.poll() is None


def test_wrap_mode_respawn_starts_the_program_again(bridge_factory, tmp_path):
    starts = tmp_path / "starts"
    b = bridge_factory("--wrap-mode", "respawn", "--unix-target", tmp_path / "none.sock", "--metrics-listen", "off",
                       "127.0.0.1:0", "--", sys.executable, "-c",
                       f"open({str(starts)!r}, 'a').write('started\\n')", listen=None)
    deadline = time.monotonic() + 15
    while not (starts.exists() and len(starts.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.05)  # the program's own record of its starts
    assert b.proc.poll() is None


def test_wrap_mode_without_a_target_needs_the_port_the_program_binds(wsbridge_bin):
    from conftest import run_bridge

    r = run_bridge(wsbridge_bin, "127.0.0.1:0", "--", "true")
    assert r.returncode == 64 and b"wrap mode without a target needs a SOURCE_PORT other than 0" in r.stderr, r


# A TCP echo server on the port of its first argument, as a VNC server is told its port (`Xvnc -rfbport 5901`);
# it records the address it really got.
TCP_ECHO_PROGRAM = r"""
import socket, sys, threading
port, record, family = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if family == "6" else "0.0.0.0", port))
s.listen(8)
open(record + ".tmp", "w").write(repr(s.getsockname()[:2]))
import os; os.rename(record + ".tmp", record)  # the record appears once it listens
def serve(c):
    while (b := c.recv(65536)):
        c.sendall(b)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


@pytest.mark.parametrize("family", ["4", "6"], ids=["ipv4", "ipv6"])
def test_without_a_target_the_program_binding_the_source_port_ends_up_behind_the_bridge(bridge_factory, tmp_path,
                                                                                        family):
    """websockify's rebind: `PORT -- PROGRAM` with no target preloads a library into the program, so that its
    bind() to PORT lands on a free loopback port, and the bridge, listening on PORT itself, relays there."""
    program, record = tmp_path / "echo.py", tmp_path / "bound"
    program.write_text(TCP_ECHO_PROGRAM)
    # The port both are told: one the kernel gives now (the program must know it before the bridge binds it).
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    b = bridge_factory("--metrics-listen", "off", f"127.0.0.1:{port}", "--",
                       sys.executable, program, str(port), record, family, listen=None)
    wait_for_path(record, b.proc)
    host, bound_port = ast.literal_eval(record.read_text())
    assert host in ("127.0.0.1", "::ffff:127.0.0.1") and bound_port != port, (host, bound_port)
    assert b.port == port
    payload = os.urandom(100_000)
    with ws_connect(b.url()) as ws:
        ws.send(payload)
        received = b""
        while len(received) < len(payload):
            received += ws.recv(timeout=10)
    assert received == payload
    assert b.stop() == 0


def test_a_variable_is_not_hidden_by_the_wrapped_commands_own_option(wsbridge_bin, tmp_path):
    """The environment merge stops at --: the program's --handshake-timeout is its own."""
    import subprocess

    r = subprocess.run(
        [wsbridge_bin, "--unix-target", str(tmp_path / "x.sock"), "127.0.0.1:0", "--", "true", "--handshake-timeout", "1"],
        env={**os.environ, "WSBRIDGE_HANDSHAKE_TIMEOUT": "0"}, capture_output=True, timeout=15,
    )
    assert r.returncode == 64 and b"--handshake-timeout must be a positive number" in r.stderr, r
