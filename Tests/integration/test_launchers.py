"""Launchers that run `websockify` from the PATH run wsbridge under that name (issue 16): noVNC's own
`utils/novnc_proxy` as Debian ships it (/usr/share/novnc/utils/novnc_proxy, package novnc, installed by
scripts/lib/install tests) finds `websockify` with `which` and starts it with `--web`, the port and the VNC target.
The Docker image has the same second name, /usr/local/bin/websockify (README, "Install")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import free_port, ws_connect

NOVNC_PROXY = "/usr/share/novnc/utils/novnc_proxy"


def wait_connectable(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the launcher exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port} after {timeout}s"
            time.sleep(0.05)  # another process's listener: there is no event to wait on from here


@pytest.mark.skipif(not os.path.exists(NOVNC_PROXY), reason=f"{NOVNC_PROXY} missing: scripts/lib/install tests installs novnc")
def test_novncs_launcher_runs_wsbridge_as_websockify(wsbridge_bin, backends, tmp_path):
    echo = backends.echo()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "websockify").symlink_to(os.path.abspath(wsbridge_bin))
    port = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    launcher = subprocess.Popen(
        ["bash", NOVNC_PROXY, "--listen", str(port), "--vnc", echo.addr],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_connectable(port, launcher)
        # noVNC's page from --web /usr/share/novnc, then a session to the VNC target, byte-exact.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/vnc.html", timeout=10) as page:
            assert page.status == 200 and b"noVNC" in page.read()
        with ws_connect(f"ws://127.0.0.1:{port}/websockify") as ws:
            payload = os.urandom(65536)
            ws.send(payload)
            received = b""
            while len(received) < len(payload):
                received += ws.recv(timeout=10)
            assert received == payload
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        output = launcher.communicate(timeout=20)[0].decode(errors="replace")
    assert f"Using installed websockify at {bin_dir}/websockify" in output, output
    assert "listening on" in output, output  # wsbridge's own start-up line, under the name websockify
