"""Access control and client identity: HTTP Basic authentication (websockify's BasicHTTPAuth and a hashed
credentials file), --web-auth, --trusted-proxy with X-Forwarded-For/Forwarded, and the PROXY protocol, received
from a load balancer and sent to backends byte-exact. docs/behaviour.md, "Authentication", "Client address",
"PROXY protocol".
"""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import time

import pytest

from conftest import run_bridge, ws_connect
from wsraw import RawWS, http_exchange, read_http_response, upgrade_request

BCRYPT_CORRECT_HORSE = "$2y$04$abcdefghijklmnopqrstuujydOTSfIH/d5oUHpsygqV5X9xJLQc6e"


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


def upgrade(bridge, path: str = "/", extra=None):
    return http_exchange(bridge.connect_host, bridge.port, upgrade_request(bridge.connect_host, bridge.port, path, extra=extra))


def assert_401(resp) -> None:
    assert resp.status == 401, str(resp)
    assert resp.header("WWW-Authenticate") == 'Basic realm="wsbridge", charset="UTF-8"', str(resp)
    assert resp.closed


def openssl_passwd(kind: str, password: str) -> str:
    return subprocess.run(["openssl", "passwd", kind, password], capture_output=True, text=True, check=True).stdout.strip()


# ---------------------------------------------------------------------------------------------
# Basic authentication


def test_basic_auth_websockify_style(bridge_factory, backends):
    echo = backends.echo()
    b = bridge_factory("--auth-plugin", "BasicHTTPAuth", "--auth-source", "admin:pa:ss", target=echo.addr)
    assert_401(upgrade(b))
    assert_401(upgrade(b, extra=[basic("admin", "wrong")]))
    assert_401(upgrade(b, extra=[basic("root", "pa:ss")]))
    assert_401(upgrade(b, extra=[("Authorization", "Basic !!!notbase64")]))
    assert_401(upgrade(b, extra=[("Authorization", "Bearer abc")]))
    with RawWS.connect(b.connect_host, b.port, "/", extra=[basic("admin", "pa:ss")]) as ws:
        pass
    with ws_connect(b.url(), additional_headers={"Authorization": basic("admin", "pa:ss")[1]}) as ws:
        ws.send(b"authenticated")
        assert ws.recv(timeout=10) == b"authenticated"
    assert b.stderr.wait_for(r"user=admin .*session open", 5), b.log()


def test_credentials_file_reloads_through_a_kubernetes_secret_swap(bridge_factory, backends, tmp_path):
    """--auth-file on a mounted Secret (`users -> ..data/users`, `..data` swapped atomically): a rotated password
    takes effect without a restart, and SIGHUP re-reads it too."""
    import os
    import signal

    def secret_update(root, text, stamp):
        payload = root / f"..{stamp}"
        payload.mkdir()
        (payload / "users").write_text(text)
        os.symlink(payload.name, root / "..data_tmp")
        os.rename(root / "..data_tmp", root / "..data")
        if not os.path.lexists(root / "users"):
            os.symlink("..data/users", root / "users")

    echo = backends.echo()
    root = tmp_path / "secret"
    root.mkdir()
    secret_update(root, f"ann:{openssl_passwd('-5', 'old pass')}\n", "1")
    b = bridge_factory("--auth-file", root / "users", target=echo.addr)
    assert upgrade(b, extra=[basic("ann", "old pass")]).status == 101
    secret_update(root, f"ann:{openssl_passwd('-5', 'new pass')}\n", "2")
    deadline = time.monotonic() + 10
    while upgrade(b, extra=[basic("ann", "new pass")]).status != 101 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the bridge until the reload is in force, bounded
    assert upgrade(b, extra=[basic("ann", "new pass")]).status == 101, b.log()
    assert_401(upgrade(b, extra=[basic("ann", "old pass")]))
    mark = len(b.stderr.snapshot())
    b.signal(signal.SIGHUP)
    assert b.stderr.wait_for(r"SIGHUP: reloading credentials", 10, start=mark), b.log()
    assert b.stderr.wait_for(r"credentials reloaded", 10, start=mark), b.log()


def test_credentials_file_with_hashes_and_web_auth(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    creds = tmp_path / "users"
    creds.write_text(
        "# user:hash (htpasswd -B, openssl passwd -5/-6)\n"
        f"ann:{BCRYPT_CORRECT_HORSE}\n"
        f"ben:{openssl_passwd('-5', 'ben pass')}\n"
        f"cat:{openssl_passwd('-6', 'cat pass')}\n"
    )
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("secret page\n")
    b = bridge_factory("--auth-file", creds, "--web", web, "--web-auth", target=echo.addr)
    for user, password in (("ann", "correct horse"), ("ben", "ben pass"), ("cat", "cat pass")):
        with ws_connect(b.url(), additional_headers={"Authorization": basic(user, password)[1]}) as ws:
            ws.send(user.encode())
            assert ws.recv(timeout=10) == user.encode()  # short: one backend read
        assert_401(upgrade(b, extra=[basic(user, password + "x")]))
    assert_401(upgrade(b, extra=[basic("nobody", "correct horse")]))
    # Static files under --web-auth.
    get = lambda extra="": http_exchange(b.connect_host, b.port, f"GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    assert_401(get())
    resp = get(f"Authorization: {basic('ann', 'correct horse')[1]}\r\n")
    assert resp.status == 200 and resp.body == b"secret page\n", str(resp)
    # Health stays open.
    assert http_exchange(b.connect_host, b.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status == 200


def test_bad_credentials_files_are_refused(wsbridge_bin, backends, tmp_path):
    echo = backends.echo()
    creds = tmp_path / "users"
    creds.write_text("ann:plaintext-password\n")
    r = run_bridge(wsbridge_bin, "--auth-file", str(creds), "127.0.0.1:0", echo.addr)
    assert r.returncode == 1 and f"{creds}:1:".encode() in r.stderr, r
    r = run_bridge(wsbridge_bin, "--auth-plugin", "BasicHTTPAuth", "127.0.0.1:0", echo.addr)
    assert r.returncode == 64 and b"--auth-source" in r.stderr, r


# ---------------------------------------------------------------------------------------------
# Client address behind proxies


def session_client(bridge, mark: int) -> str:
    m = bridge.stderr.wait_for(r" client=(\S+) .*session open", 10, start=mark)
    assert m, bridge.log()
    return m.group(1)


def test_x_forwarded_for_counts_only_from_trusted_proxies(bridge_factory, backends, tmp_path):
    collect = backends.collect()
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  pp:\n    backend: {collect.addr}\n    proxy_protocol: v1\n")
    trusted = bridge_factory("--trusted-proxy", "127.0.0.0/8", "--trusted-proxy", "10.0.0.0/8", "--targets", targets,
                             "--max-connections-per-client", "1")
    untrusted = bridge_factory("--trusted-proxy", "192.0.2.0/24", "--targets", targets)

    mark = len(trusted.stderr.snapshot())
    # The nearest untrusted hop, walking back over trusted ones, is the client.
    ws1 = RawWS.connect(trusted.connect_host, trusted.port, "/?token=pp", extra=[("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.1.2.3")])
    assert session_client(trusted, mark) == "203.0.113.9"
    conn = collect.wait_conn(0)
    header = f"PROXY TCP4 203.0.113.9 127.0.0.1 0 {trusted.port}\r\n".encode()
    assert conn.wait_bytes(len(header), 10), conn.received()
    assert conn.received().startswith(header), conn.received()
    # Per-client limits count the forwarded address: another client is not limited by the first.
    mark = len(trusted.stderr.snapshot())
    ws2 = RawWS.connect(trusted.connect_host, trusted.port, "/?token=pp", extra=[("X-Forwarded-For", "2001:db8::7")])
    assert session_client(trusted, mark) == "2001:db8::7"
    resp = upgrade(trusted, "/?token=pp", extra=[("X-Forwarded-For", "203.0.113.9")])
    assert resp.status == 503, str(resp)
    ws1.sock.close()
    ws2.sock.close()

    # From a peer that is not a trusted proxy the headers are ignored.
    mark = len(untrusted.stderr.snapshot())
    ws3 = RawWS.connect(untrusted.connect_host, untrusted.port, "/?token=pp", extra=[("X-Forwarded-For", "203.0.113.9")])
    assert session_client(untrusted, mark).startswith("127.0.0.1:")
    ws3.sock.close()


def test_client_forwarded_header_cannot_spoof_behind_xff_proxy(bridge_factory, backends, tmp_path):
    """nginx and HAProxy append X-Forwarded-For and pass a client's Forwarded header through: with the default
    --trusted-proxy-header xff that header is never believed, so allow_clients cannot be bypassed with it."""
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  lab:\n    backend: {echo.addr}\n    allow_clients: [203.0.113.0/24]\n")
    b = bridge_factory("--trusted-proxy", "127.0.0.0/8", "--targets", targets)
    # The proxy named 198.51.100.1; the client added Forwarded: for= an allowed address.
    resp = upgrade(b, "/?token=lab", extra=[("Forwarded", "for=203.0.113.5"), ("X-Forwarded-For", "198.51.100.1")])
    assert resp.status == 403, str(resp)
    # Forwarded alone: the proxy (the peer) is the client, not the address the client wrote.
    resp = upgrade(b, "/?token=lab", extra=[("Forwarded", "for=203.0.113.5")])
    assert resp.status == 403, str(resp)
    # The client's own X-Forwarded-For entry, left of the one the proxy appended, is not believed either.
    resp = upgrade(b, "/?token=lab", extra=[("X-Forwarded-For", "203.0.113.5, 198.51.100.1")])
    assert resp.status == 403, str(resp)
    resp = upgrade(b, "/?token=lab", extra=[("X-Forwarded-For", "198.51.100.1, 203.0.113.5")])
    assert resp.status == 101, str(resp)


def test_trusted_proxy_header_forwarded(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  lab:\n    backend: {echo.addr}\n    allow_clients: [203.0.113.0/24]\n")
    b = bridge_factory("--trusted-proxy", "127.0.0.0/8", "--trusted-proxy-header", "forwarded", "--targets", targets)
    resp = upgrade(b, "/?token=lab", extra=[("X-Forwarded-For", "203.0.113.5"), ("Forwarded", "for=198.51.100.1")])
    assert resp.status == 403, str(resp)
    resp = upgrade(b, "/?token=lab", extra=[("Forwarded", 'for="203.0.113.5:4711"')])
    assert resp.status == 101, str(resp)


# ---------------------------------------------------------------------------------------------
# PROXY protocol


def v2_header(src: str, sport: int, dst: str, dport: int) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    return sig + bytes([0x21, 0x11, 0, 12]) + socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_to_backends_is_byte_exact(bridge_factory, backends, tmp_path, version):
    collect = backends.collect()
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  pp:\n    backend: {collect.addr}\n    proxy_protocol: {version}\n")
    b = bridge_factory("--targets", targets)
    ws = RawWS.connect(b.connect_host, b.port, "/?token=pp")
    sport = ws.sock.getsockname()[1]
    ws.send_binary(b"after the header")
    conn = collect.wait_conn(0)
    if version == "v1":
        header = f"PROXY TCP4 127.0.0.1 127.0.0.1 {sport} {b.port}\r\n".encode()
    else:
        header = v2_header("127.0.0.1", sport, "127.0.0.1", b.port)
    assert conn.wait_bytes(len(header) + 16, 10), conn.received()
    assert conn.received() == header + b"after the header"
    ws.sock.close()


def test_proxy_protocol_from_a_load_balancer(bridge_factory, backends, tmp_path):
    collect = backends.collect()
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  pp:\n    backend: {collect.addr}\n    proxy_protocol: v2\n")
    b = bridge_factory("--proxy-protocol", "--trusted-proxy", "127.0.0.1", "--targets", targets)
    cases = [
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 5555 443\r\n", "198.51.100.7:5555", v2_header("198.51.100.7", 5555, "192.0.2.1", 443)),
        (v2_header("203.0.113.20", 40000, "192.0.2.1", 443), "203.0.113.20:40000", v2_header("203.0.113.20", 40000, "192.0.2.1", 443)),
    ]
    for index, (front, client, expected) in enumerate(cases):
        mark = len(b.stderr.snapshot())
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        # Header and request in one write: the bytes after the header are the HTTP request.
        s.sendall(front + upgrade_request("127.0.0.1", b.port, "/?token=pp"))
        resp = read_http_response(s, 10)
        assert resp.status == 101, str(resp)
        assert session_client(b, mark) == client
        conn = collect.wait_conn(index)
        assert conn.wait_bytes(len(expected), 10)
        assert conn.received()[: len(expected)] == expected
        s.close()

    # Malformed or missing headers: closed without a byte.
    for bad in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 198.51.100.7 192.0.2.1 5555\r\n",
        b"PROXY TCP4 1.2.3.400 192.0.2.1 5555 443\r\n",
        b"PROXY TCP6 198.51.100.7 192.0.2.1 5555 443\r\n",
        b"PROXY TCP4 198.51.100.7 192.0.2.1 05555 443\r\n",
        b"PROXY UDP4 198.51.100.7 192.0.2.1 5555 443\r\n",
        b"PROXY TCP4 198.51.100.7 192.0.2.1 5555 443\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c" + bytes(12),
        b"PROXY " + b"x" * 200,
    ):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        s.sendall(bad)
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        s.close()
        assert got == b"", (bad, got)
    # A LOCAL v2 header (a health check): the peer's own address stands.
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = read_http_response(s, 10)
    assert resp.status == 200 and resp.body == b"ready\n", str(resp)  # the self-check sends a LOCAL header too
    s.close()


def test_proxy_protocol_only_from_trusted_peers(bridge_factory, backends):
    """A peer outside --trusted-proxy cannot claim an address; a LOCAL header (its own address) is accepted."""
    echo = backends.echo()
    b = bridge_factory("--proxy-protocol", "--trusted-proxy", "192.0.2.0/24", target=echo.addr)
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    s.sendall(b"PROXY TCP4 198.51.100.7 192.0.2.1 5555 443\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""
    s.close()
    assert got == b""
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    s.sendall(b"PROXY UNKNOWN\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = read_http_response(s, 10)
    assert resp.status == 200 and resp.body == b"ready\n", str(resp)
    s.close()
