"""Compatibility with websockify (issue 16): real command lines from public projects that run websockify, each run
against wsbridge and, where websockify is installed, against websockify itself, with the same checks. The expected
behaviour is what websockify is observed to do, not a guess; where wsbridge differs on purpose (404 instead of a
silent close for an unknown token), the check is what both do (no session opens).

The reference is websockify 0.13 from PyPI in .venv-websockify/ (scripts/lib/install tests puts it there), or
$WEBSOCKIFY_BIN, or Debian's /usr/bin/websockify (0.10). The reference half is skipped only when none is installed.

Values that make a test slow are scaled down (Foreman's 120 s become 2 s); everything else is as written there.
Wrap mode (`PORT -- vncserver ...`, as Jupyter's remote desktop proxy ran it) is tested in test_wrap.py, not here:
websockify from PyPI has no rebind.so and refuses every wrap-mode command line ("rebind.so not found"), even with
--unix-target, so there is nothing to observe with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import LineLog, free_port, ws_connect
from tlsutil import PKI, client_context
from wsraw import http_exchange, upgrade_request

REPO = Path(__file__).resolve().parents[2]


def reference_websockify() -> list[str] | None:
    for candidate in (os.environ.get("WEBSOCKIFY_BIN"), str(REPO / ".venv-websockify" / "bin" / "websockify"),
                      "/usr/bin/websockify"):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    return None


# ---------------------------------------------------------------------------------------------
# Running one implementation


class Run:
    """One implementation started with one command line, and what the checks need of it."""

    READY = {"wsbridge": re.compile(r"listening on "), "websockify": re.compile(r"- proxying from ")}

    def __init__(self, impl: str, argv: list[str], cwd: Path, port: int, env: dict | None = None):
        self.impl = impl
        self.port = port
        self.cwd = cwd
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.stderr = LineLog(self.proc.stderr, impl)

    def wait_ready(self, daemon: bool = False, timeout: float = 30) -> None:
        if daemon:
            # The command returns once the daemon listens (both implementations bind before detaching).
            rc = self.proc.wait(timeout)
            assert rc == 0, f"{self.impl} -D exited {rc}: {self.stderr.text()}"
            return
        if self.stderr.wait_for(self.READY[self.impl], timeout) is None:
            pytest.fail(f"{self.impl} did not start: {' '.join(self.argv)}\n{self.stderr.text()}", pytrace=False)

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def upgrade_status(self, path: str) -> int | None:
        """The status of an upgrade request, None when the connection closed without a response (websockify's
        answer to an unknown token)."""
        try:
            return http_exchange("127.0.0.1", self.port, upgrade_request("127.0.0.1", self.port, path)).status
        except (ConnectionError, EOFError, AssertionError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)


def relay(url: str, payload: bytes = b"RFB 003.008\n", **kw) -> None:
    with ws_connect(url, **kw) as ws:
        ws.send(payload)
        got = b""
        while len(got) < len(payload):
            got += ws.recv(timeout=10)
        assert got == payload


# ---------------------------------------------------------------------------------------------
# The table


@dataclass
class Env:
    """What a case's command line refers to: {port}, {backend}, {backend_port} and the files it made."""

    tmp: Path
    port: int
    backend: str
    values: dict = field(default_factory=dict)

    def format(self, args: list[str]) -> list[str]:
        return [a.format(port=self.port, backend=self.backend, backend_port=self.backend.rsplit(":", 1)[1],
                         **self.values) for a in args]


@dataclass
class Case:
    id: str
    source: str
    args: list[str]
    check: Callable[[Run, Env], None]
    setup: Callable[[Env], None] = lambda env: None
    daemon: bool = False
    needs: str | None = None  # a program the case needs (redis-server)


def web_dir(env: Env) -> None:
    web = env.tmp / "web"
    web.mkdir()
    (web / "vnc.html").write_text("<title>noVNC</title>\n")
    env.values["web"] = str(web)


def check_relays_and_serves_the_page(run: Run, env: Env) -> None:
    relay(run.url("/websockify"))
    resp = http_exchange("127.0.0.1", run.port, b"GET /vnc.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (resp.status, resp.body) == (200, b"<title>noVNC</title>\n")


def check_relays(run: Run, env: Env) -> None:
    relay(run.url("/"))


def tls_files(env: Env) -> None:
    pki = PKI(env.tmp / "pki")
    issued = pki.issue("localhost", dns=("localhost",))
    env.values.update(cert=str(issued.cert), key=str(issued.key), ca=str(pki.ca))
    web_dir(env)


def check_tls_and_plain_on_one_port(run: Run, env: Env) -> None:
    relay(run.url("/websockify", "wss"), ssl=client_context(Path(env.values["ca"])), server_hostname="localhost")
    relay(run.url("/websockify"))


def self_pem(env: Env) -> None:
    pki = PKI(env.tmp / "pki")
    issued = pki.issue("localhost", dns=("localhost",))
    (env.tmp / "self.pem").write_bytes(issued.cert.read_bytes() + issued.key.read_bytes())
    env.values["ca"] = str(pki.ca)


def check_idle_exit(run: Run, env: Env) -> None:
    daemons = pids_running(run.argv)
    assert daemons, f"no {run.impl} daemon running"
    relay(run.url("/"))
    # No session open any more: the daemon exits after --idle-timeout. (Not probed through its port: for
    # websockify every connection is a child process, which counts as activity.)
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{pid}") for pid in daemons) and time.monotonic() < deadline:
        time.sleep(0.1)  # not our child: polling /proc is the only way to see it go
    assert not any(os.path.exists(f"/proc/{pid}") for pid in daemons), f"{run.impl} still runs after --idle-timeout"


def opennebula_tokens(env: Env) -> None:
    folder = env.tmp / "sunstone_vnc_tokens"
    folder.mkdir()
    env.values["tokens"] = str(folder)


def check_token_written_just_before_connecting(run: Run, env: Env) -> None:
    # As Sunstone does per console: one file per VM, "TOKEN: HOST:PORT" without a newline, URL handed out at once.
    (Path(env.values["tokens"]) / "one-42").write_text(f"k3x9q0wz1m2n4b5v6c7x: {env.backend}")
    relay(run.url("/websockify?token=k3x9q0wz1m2n4b5v6c7x"))
    assert run.upgrade_status("/websockify?token=nope") != 101


def check_run_once(run: Run, env: Env) -> None:
    relay(run.url("/"))
    assert run.proc.wait(20) == 0, run.stderr.text()


def syslog_server(env: Env) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(15)
    env.values["syslog"] = f"127.0.0.1:{server.getsockname()[1]}"
    env.values["server"] = server
    web_dir(env)


def check_syslog_rfc5424(run: Run, env: Env) -> None:
    server = env.values["server"]
    try:
        message = server.recv(65536).decode()
        # RFC 5424 version 1 with a UTC timestamp, the host, the program and its pid; facility user (PRI / 8 = 1).
        m = re.match(rf"^<(\d+)>1 \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ \S+ {run.proc.pid} - - \S", message)
        assert m and int(m.group(1)) // 8 == 1, message
    finally:
        server.close()
    relay(run.url("/websockify"))


def redis_token(env: Env) -> None:
    from redisserver import RedisServer

    server = RedisServer()
    env.values["redis"] = server
    env.values["redis_source"] = server.source
    server.cmd("SET", "console-7", json.dumps({"host": env.backend}))


def check_deleted_redis_key_is_refused(run: Run, env: Env) -> None:
    server = env.values["redis"]
    try:
        relay(run.url("/?token=console-7"))
        server.cmd("DEL", "console-7")
        assert run.upgrade_status("/?token=console-7") != 101, "a deleted key still opened a session"
    finally:
        server.close()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def short_jwt_key(env: Env) -> None:
    secret = b"short secret"
    (env.tmp / "jwt.key").write_text(b64url(secret))  # jwcrypto's 'oct' key: the base64url of the secret
    host, port = env.backend.rsplit(":", 1)
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"host": host, "port": int(port)}).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    env.values["jwt"] = f"{head}.{body}.{b64url(signature)}"


def check_jwt(run: Run, env: Env) -> None:
    if run.impl == "websockify":
        # Observed: websockify 0.13 starts with the short key, but jwcrypto 1.6 (what pip installs with it today)
        # refuses HMAC keys shorter than the hash, so the token gets no session; older jwcrypto accepted them.
        # wsbridge loads the key with a warning and accepts the token (more lenient, never stricter).
        assert run.upgrade_status(f"/?token={env.values['jwt']}") is None
        assert run.proc.poll() is None
        return
    relay(run.url(f"/?token={env.values['jwt']}"))


CASES = [
    Case(
        "novnc-proxy",
        # noVNC's launcher as Debian ships it: /usr/share/novnc/utils/novnc_proxy, line 180 (`${WEBSOCKIFY}
        # ${SYSLOG_ARG} ${SSLONLY} --web ${WEB} ... ${PORT} ${VNC_DEST} ${HEARTBEAT_ARG} ...`), options after
        # the positional arguments included.
        "novnc/noVNC utils/novnc_proxy",
        ["--web", "{web}", "{port}", "{backend}", "--heartbeat", "30"],
        check_relays_and_serves_the_page,
        setup=web_dir,
    ),
    Case(
        "docker-entrypoint",
        # jking412/backend-15 docker/docker-entrypoint.sh: `websockify --web /usr/share/novnc/ 6080 localhost:5901`.
        "jking412/backend-15 docker/docker-entrypoint.sh",
        ["--web", "{web}/", "{port}", "localhost:{backend_port}"],
        check_relays_and_serves_the_page,
        setup=web_dir,
    ),
    Case(
        "novnc-proxy-tls",
        # ewe-studios/docker-apps novnc/config/nobody/novnc.sh runs `novnc_proxy --cert ... --key ... --heartbeat 2
        # --vnc localhost:5900 --listen 6080`, which becomes this websockify command line.
        "ewe-studios/docker-apps novnc/config/nobody/novnc.sh",
        ["--web", "{web}", "--cert", "{cert}", "--key", "{key}", "{port}", "{backend}", "--heartbeat", "2"],
        check_tls_and_plain_on_one_port,
        setup=tls_files,
    ),
    Case(
        "self-pem",
        # websockify's --cert default: `openssl req -new -x509 -days 365 -nodes -out self.pem -keyout self.pem`
        # (websockify/websocketproxy.py, its header), then a plain `websockify PORT HOST:PORT` in that directory.
        "novnc/websockify websockify/websocketproxy.py (self.pem)",
        ["{port}", "{backend}"],
        check_tls_and_plain_on_one_port,
        setup=self_pem,
    ),
    Case(
        "foreman",
        # theforeman/foreman lib/ws_proxy.rb: `websockify --daemon --idle-timeout=120 --timeout=120 PORT HOST:PORT`;
        # Foreman relies on the proxy exiting. Scaled down: 2 s idle, --timeout beyond the test.
        "theforeman/foreman lib/ws_proxy.rb",
        ["--daemon", "--idle-timeout=2", "--timeout=600", "{port}", "127.0.0.1:{backend_port}"],
        check_idle_exit,
        daemon=True,
    ),
    Case(
        "opennebula",
        # OpenNebula/one src/sunstone/models/sunstone_vnc.rb: `python websockify/run --target-config=FOLDER PORT`; a
        # token file per VM is written when a console is opened, and the browser connects at once.
        "OpenNebula/one src/sunstone/models/sunstone_vnc.rb",
        ["--target-config={tokens}", "{port}"],
        check_token_written_just_before_connecting,
        setup=opennebula_tokens,
    ),
    Case(
        "run-once",
        # websockify's manual page (docs/websockify.1): `--run-once  handle a single WebSocket connection and exit`.
        "novnc/websockify docs/websockify.1",
        ["--run-once", "{port}", "{backend}"],
        check_run_once,
    ),
    Case(
        "novnc-proxy-syslog",
        # novnc_proxy's --syslog passes through (`SYSLOG_ARG="--syslog ${OPTARG}"`, utils/novnc_proxy line 84).
        "novnc/noVNC utils/novnc_proxy (--syslog)",
        ["--syslog", "{syslog}", "--web", "{web}", "{port}", "{backend}"],
        check_syslog_rfc5424,
        setup=syslog_server,
    ),
    Case(
        "token-redis",
        # websockify's TokenRedis (websockify/token_plugins.py): `--token-plugin TokenRedis --token-source
        # host:port`, a key per console; an operator deletes the key to refuse the next connection.
        "novnc/websockify websockify/token_plugins.py (TokenRedis)",
        ["--token-plugin", "TokenRedis", "--token-source", "{redis_source}", "{port}"],
        check_deleted_redis_key_is_refused,
        setup=redis_token,
        needs="redis-server",
    ),
    Case(
        "jwt-short-secret",
        # websockify's JWTTokenApi (websockify/token_plugins.py) with a symmetric key file; its own tests use a
        # short secret.
        "novnc/websockify websockify/token_plugins.py (JWTTokenApi)",
        ["--token-plugin", "JWTTokenApi", "--token-source", "{tmp}/jwt.key", "{port}"],
        check_jwt,
        setup=short_jwt_key,
    ),
]


@pytest.fixture(params=["wsbridge", "websockify"])
def impl(request, wsbridge_bin) -> tuple[str, list[str]]:
    if request.param == "wsbridge":
        return "wsbridge", [wsbridge_bin, "--metrics-listen", "off"]
    reference = reference_websockify()
    if reference is None:
        pytest.skip("websockify is not installed (scripts/lib/install tests puts 0.13 in .venv-websockify/; "
                    "or set WEBSOCKIFY_BIN): the reference half cannot run")
    return "websockify", reference


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_command_line(case: Case, impl, backends, tmp_path):
    name, prefix = impl
    if case.needs and shutil.which(case.needs) is None:
        pytest.skip(f"{case.needs} is not installed (scripts/lib/install tests installs it)")
    echo = backends.echo()
    env = Env(tmp=tmp_path, port=free_port(), backend=echo.addr)
    env.values["tmp"] = str(tmp_path)
    try:
        case.setup(env)
        run = Run(name, prefix + env.format(case.args), cwd=tmp_path, port=env.port)
    except BaseException:
        close_servers(env)
        raise
    try:
        run.wait_ready(daemon=case.daemon)
        case.check(run, env)
    finally:
        run.stop()
        close_servers(env)
        if case.daemon:
            # A daemon still running (the check failed before it exited): the processes started with exactly
            # this command line, by pid.
            for pid in pids_running(run.argv):
                os.kill(pid, 15)


def close_servers(env: Env) -> None:
    """Servers a case's setup started (Redis) end with the case, whether its check ran or not (a bridge that did not
    start must not leave its Redis running)."""
    server = env.values.get("redis")
    if server is not None:
        server.close()


def pids_running(argv: list[str]) -> list[int]:
    """Processes whose command line ends with `argv` (websockify's starts with its interpreter)."""
    wanted = [a.encode() for a in argv]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        if len(words) >= len(wanted) and words[-len(wanted):][1:] == wanted[1:] and \
                os.path.basename(words[-len(wanted)]) == os.path.basename(wanted[0]):
            found.append(int(entry))
    return found
