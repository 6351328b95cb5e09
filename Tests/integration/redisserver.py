"""A throwaway redis-server on loopback for the tests and scripts/scale-out, and a minimal RESP client to
prepare data (SET, EXPIRE, PUBLISH) without any Python Redis package."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    """A port held for the test run (redis-server sets SO_REUSEADDR, so it binds it); see conftest.reserve_port."""
    from conftest import reserve_port

    return reserve_port().getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, *extra: str):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = port or free_port()
        self.extra = list(extra)
        self.password: str | None = None
        self.username: str | None = None
        self.dir = tempfile.mkdtemp(prefix="wsbridge-redis-")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.cmd("PING")
                return
            except (OSError, RuntimeError) as e:
                if "NOAUTH" in str(e):
                    return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}: {e!r}")
                time.sleep(0.05)  # waiting for redis-server to accept connections

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def source(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cmd(self, *args: str | bytes | int, db: int = 0):
        """One command on a fresh connection (after AUTH/SELECT when set); returns the decoded reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            f = s.makefile("rb")
            pre = []
            if self.password:
                pre.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
            if db:
                pre.append(("SELECT", db))
            for command in [*pre, args]:
                s.sendall(encode(command))
                reply = read_reply(f)
            return reply


def encode(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def read_reply(f):
    line = f.readline()
    if not line:
        raise RuntimeError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise RuntimeError(f"bad reply {line!r}")
