"""The image runs wsbridge as user 10001: the release binary must serve sessions without root's privileges.

(It once did not: a socket option only root may set closed every accepted connection. scripts/docker-proof
checks the same in the rebuilt image root; this is the quick check, on the release binary.)
Runs only as root, which it needs to drop privileges with setpriv.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("WSBRIDGE_BIN", ROOT / ".build" / "release" / "wsbridge"))


def started(proc, pattern):
    for line in proc.stdout:
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"{proc.args[0]} exited before printing {pattern!r}")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_release_binary_serves_a_session_as_user_10001():
    echo = subprocess.Popen([sys.executable, str(ROOT / "Examples" / "tcp-echo.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    bridge = None
    try:
        echo_port = started(echo, r"echo listening on 127\.0\.0\.1:(\d+)").group(1)
        bridge = subprocess.Popen(
            ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups", "--",
             str(BIN), "127.0.0.1:0", f"127.0.0.1:{echo_port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        port = started(bridge, r"listening on 127\.0\.0\.1:(\d+)").group(1)
        with open(f"/proc/{bridge.pid}/status") as status:
            assert re.search(r"^Uid:\s+10001\s+10001\s+10001\s+10001$", status.read(), re.M)

        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            ws.send(b"not root")
            assert ws.recv(timeout=10) == b"not root"
    finally:
        for proc in (bridge, echo):
            if proc is not None:
                proc.terminate()
                proc.wait(15)
