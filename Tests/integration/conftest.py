"""Fixtures for the black-box integration tests of the wsbridge binary.

The binary is taken from the environment variable WSBRIDGE_BIN. Every test starts its own
bridge(s) on 127.0.0.1 port 0 and its own Python TCP backends on 127.0.0.1 port 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

LISTENING_RE = re.compile(r"listening on (\[[^\]]+\]|[^\s:]+):(\d+)")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


# ---------------------------------------------------------------------------------------------
# The binary


@pytest.fixture(scope="session")
def wsbridge_bin() -> str:
    path = os.environ.get("WSBRIDGE_BIN")
    if not path:
        pytest.fail("WSBRIDGE_BIN is not set: point it at the wsbridge binary to test", pytrace=False)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(f"WSBRIDGE_BIN={path!r} is not an executable file", pytrace=False)
    return path


class LineLog:
    """Lines drained from a pipe by a background thread, with waiting."""

    def __init__(self, pipe, name: str):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._drain, args=(pipe,), name=f"drain-{name}", daemon=True)
        self.thread.start()

    def _drain(self, pipe) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def snapshot(self) -> list[str]:
        with self.cond:
            return list(self.lines)

    def text(self) -> str:
        return "\n".join(self.snapshot())

    def wait_for(self, pattern: str | re.Pattern, timeout: float, start: int = 0) -> re.Match | None:
        """First match of ``pattern`` in a line with index >= start, waiting up to ``timeout``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)


class Bridge:
    def __init__(self, binary: str, args: list[str], *, wait_ready: bool = True, cwd: str | None = None):
        self.args = [binary, *args]
        self.proc = subprocess.Popen(
            self.args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.stderr = LineLog(self.proc.stderr, "stderr")
        self.stdout = LineLog(self.proc.stdout, "stdout")
        self.host: str | None = None
        self.port: int | None = None
        if wait_ready:
            self.wait_ready()

    # -- lifecycle --

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            m = self.stderr.wait_for(LISTENING_RE, min(0.2, max(0.0, deadline - time.monotonic())))
            if m:
                host = m.group(1)
                self.host = host[1:-1] if host.startswith("[") else host
                self.port = int(m.group(2))
                return
            if self.proc.poll() is not None:
                self.stderr.thread.join(2)
                pytest.fail(
                    f"wsbridge exited early with code {self.proc.returncode}\n"
                    f"command: {' '.join(self.args)}\nstderr:\n{self.stderr.text()}",
                    pytrace=False,
                )
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"wsbridge did not log 'listening on' within {timeout}s\n"
                    f"command: {' '.join(self.args)}\nstderr:\n{self.stderr.text()}",
                    pytrace=False,
                )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.thread.join(2)
        self.stdout.thread.join(2)
        return self.proc.returncode

    # -- helpers --

    @property
    def connect_host(self) -> str:
        """An address to reach the listener (a wildcard listen is reached on loopback)."""
        if self.host in ("0.0.0.0", "::", None):
            return "127.0.0.1"
        return self.host

    def url(self, path: str = "/") -> str:
        h = self.connect_host
        if ":" in h:
            h = f"[{h}]"
        return f"ws://{h}:{self.port}{path}"

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def log(self) -> str:
        return self.stderr.text()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the stderr of every bridge the test started."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "_wsbridges", [])):
            rc = b.proc.poll()
            state = "running" if rc is None else f"exited with {rc}"
            rep.sections.append((f"wsbridge #{i} stderr ({' '.join(b.args[1:])}; {state})", b.stderr.text()))


@pytest.fixture
def bridge_factory(wsbridge_bin, request):
    """``start(*options, target=None, listen="127.0.0.1:0", wait_ready=True, cwd=None) -> Bridge``."""
    bridges: list[Bridge] = []
    request.node._wsbridges = bridges

    def start(*options: str, target: str | None = None, listen: str | None = "127.0.0.1:0", wait_ready: bool = True,
              cwd: str | None = None) -> Bridge:
        args = [str(o) for o in options]
        if listen is not None:
            args.append(listen)
        if target is not None:
            args.append(target)
        b = Bridge(wsbridge_bin, args, wait_ready=False, cwd=cwd)
        bridges.append(b)
        if wait_ready:
            b.wait_ready()
        return b

    yield start
    for b in bridges:
        b.stop()


def run_bridge(wsbridge_bin: str, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run the binary to completion (for CLI errors and --help)."""
    try:
        return subprocess.run(
            [wsbridge_bin, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"wsbridge {' '.join(args)} did not exit within {timeout}s; stderr: {e.stderr!r}", pytrace=False)


# ---------------------------------------------------------------------------------------------
# Backends


class Conn:
    """One accepted backend connection and what was seen on it."""

    def __init__(self, sock: socket.socket, addr):
        self.sock = sock
        self.addr = addr
        self.data = bytearray()
        self.eof = False  # the peer closed its write side (read returned b"")
        self.error: BaseException | None = None  # reset or other socket error
        self.cond = threading.Condition()

    # recording, called by handler threads
    def add(self, chunk: bytes) -> None:
        with self.cond:
            self.data += chunk
            self.cond.notify_all()

    def set_eof(self) -> None:
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def set_error(self, e: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = e
            self.cond.notify_all()

    @property
    def ended(self) -> bool:
        return self.eof or self.error is not None

    def received(self) -> bytes:
        with self.cond:
            return bytes(self.data)

    def wait_bytes(self, n: int, timeout: float) -> bool:
        """True when at least n bytes arrived; returns early (False) on EOF/error/timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.data) < n:
                if self.ended:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def wait_end(self, timeout: float) -> bool:
        """True when the peer closed (EOF) or reset the connection."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def read_loop(conn: Conn, chunk: int = 65536, delay: float = 0.0) -> None:
    """Read and record until EOF or error. ``delay``: pause after each read (a slow reader)."""
    try:
        while True:
            b = conn.sock.recv(chunk)
            if not b:
                conn.set_eof()
                return
            conn.add(b)
            if delay:
                time.sleep(delay)
    except OSError as e:
        conn.set_error(e)


def reset_close(sock: socket.socket) -> None:
    """Close with RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Backend:
    def __init__(self, handler, *, name: str, rcvbuf: int | None = None, unix_path: str | None = None):
        self.name = name
        self.handler = handler
        if unix_path:
            self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.lsock.bind(unix_path)
            self.port = None
            self.path = unix_path
        else:
            self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if rcvbuf:
                self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.lsock.bind(("127.0.0.1", 0))
            self.port = self.lsock.getsockname()[1]
            self.path = None
        self.lsock.listen(256)
        self.lsock.settimeout(0.1)
        self.conns: list[Conn] = []
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept_loop, name=f"backend-{name}", daemon=True)
        self.thread.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.stopped:
            try:
                s, addr = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(None)
            if s.family != socket.AF_UNIX:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(s, addr)
            with self.cond:
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._run, args=(c,), name=f"backend-{self.name}-conn", daemon=True).start()

    def _run(self, c: Conn) -> None:
        try:
            self.handler(c)
        except OSError as e:
            c.set_error(e)
        except Exception as e:  # pragma: no cover - a handler bug
            c.set_error(e)
            raise

    def wait_conn(self, index: int = 0, timeout: float = 10.0) -> Conn:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) <= index:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"backend {self.name}: connection #{index} did not arrive within {timeout}s")
                self.cond.wait(left)
            return self.conns[index]

    def close(self) -> None:
        self.stopped = True
        try:
            self.lsock.close()
        except OSError:
            pass
        self.thread.join(2)
        with self.cond:
            conns = list(self.conns)
        for c in conns:
            c.close()


def echo_handler(c: Conn) -> None:
    """Echo everything; on EOF shut the write side after echoing, then close."""
    try:
        while True:
            b = c.sock.recv(65536)
            if not b:
                c.set_eof()
                c.sock.shutdown(socket.SHUT_WR)
                break
            c.add(b)
            c.sock.sendall(b)
    except OSError as e:
        c.set_error(e)
    finally:
        c.sock.close()


def sink_handler(c: Conn) -> None:
    """Accept and never read; the socket stays open until teardown."""
    return


def collect_handler(chunk: int = 65536, delay: float = 0.0):
    def handler(c: Conn) -> None:
        read_loop(c, chunk, delay)
        c.sock.close()

    return handler


def source_handler(payload: bytes, after: str = "close"):
    """Send ``payload`` on connect, then:
    - "close": close the connection;
    - "open": keep reading (recording) until EOF, then close;
    - "halfclose": shut the write side, keep reading (recording) until EOF, then close.
    """
    assert after in ("close", "open", "halfclose")

    def handler(c: Conn) -> None:
        try:
            if payload:
                c.sock.sendall(payload)
            if after == "close":
                c.sock.close()
                return
            if after == "halfclose":
                c.sock.shutdown(socket.SHUT_WR)
            read_loop(c)
        except OSError as e:
            c.set_error(e)
        c.sock.close()

    return handler


class Backends:
    def __init__(self):
        self.all: list[Backend] = []
        self._tmpdirs: list[tempfile.TemporaryDirectory] = []

    def _add(self, handler, name, **kw) -> Backend:
        b = Backend(handler, name=name, **kw)
        self.all.append(b)
        return b

    def echo(self, rcvbuf: int | None = None) -> Backend:
        return self._add(echo_handler, "echo", rcvbuf=rcvbuf)

    def sink(self) -> Backend:
        return self._add(sink_handler, "sink")

    def collect(self, chunk: int = 65536, delay: float = 0.0, rcvbuf: int | None = None) -> Backend:
        return self._add(collect_handler(chunk, delay), "collect", rcvbuf=rcvbuf)

    def source(self, payload: bytes, after: str = "close") -> Backend:
        return self._add(source_handler(payload, after), "source")

    def banner(self, banner: bytes = b"RFB 003.008\n") -> Backend:
        return self._add(source_handler(banner, "open"), "banner")

    def custom(self, handler, name: str = "custom", **kw) -> Backend:
        return self._add(handler, name, **kw)

    def unix_echo(self) -> Backend:
        d = tempfile.TemporaryDirectory(prefix="wsb", dir="/tmp")
        self._tmpdirs.append(d)
        return self._add(echo_handler, "unix-echo", unix_path=os.path.join(d.name, "echo.sock"))

    def close(self) -> None:
        for b in self.all:
            b.close()
        for d in self._tmpdirs:
            d.cleanup()


@pytest.fixture
def backends():
    bs = Backends()
    yield bs
    bs.close()


_RESERVED: list[socket.socket] = []


def reserve_port() -> socket.socket:
    """A loopback port from the kernel, held for the rest of the test run by a socket that is bound, with
    SO_REUSEADDR, and never listens. Nothing else gets it from the kernel (a bind to port 0 skips bound ports);
    a connect to it is refused (RST) unless someone listens there; and a server that sets SO_REUSEADDR too, as
    wsbridge, Redis and websockify do, can still bind and listen on it. So a test can name a port without the race
    of bind-then-close."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    _RESERVED.append(s)
    return s


@pytest.fixture
def refused_port() -> int:
    """A loopback port where nothing listens: every connect is refused."""
    return reserve_port().getsockname()[1]


def free_port() -> int:
    """A loopback port that is this test run's: nothing listens there until the test starts a server on it (a
    server that sets SO_REUSEADDR); see reserve_port."""
    return reserve_port().getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Targets files


def write_token_file(path: Path, mapping: dict[str, str], header: str = "# wsbridge test targets\n") -> Path:
    text = header + "".join(f"{tok}: {target}\n" for tok, target in mapping.items())
    write_atomic(path, text)
    return path


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Common compositions


@pytest.fixture
def echo_bridge(bridge_factory, backends):
    """(bridge, echo backend): single-target mode to a TCP echo backend."""
    echo = backends.echo()
    b = bridge_factory(target=echo.addr)
    return b, echo


def ws_connect(url: str, **kw):
    """websockets sync client with the options every test wants."""
    from websockets.sync.client import connect

    opts = dict(max_size=None, compression=None, ping_interval=None, proxy=None, open_timeout=10, close_timeout=10)
    opts.update(kw)
    return connect(url, **opts)


class RSSSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, bridge: Bridge, interval: float = 0.05):
        self.bridge = bridge
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = self.bridge.rss_kib()
            except (OSError, AssertionError):
                return
            self.peak = max(self.peak, v)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "RSSSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(5)
