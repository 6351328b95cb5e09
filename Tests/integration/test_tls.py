"""TLS: wss:// termination on the WebSocket port (plain and TLS told apart by the first byte), --ssl-only,
certificate reload with a session open across it, SNI, static files over TLS, encrypted keys, mutual TLS, and TLS
to backends (custom CA, SNI, verification failure, insecure, client certificates). docs/behaviour.md, "TLS".
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from conftest import run_bridge, write_atomic, ws_connect
from tlsutil import PKI, TLSEchoBackend, client_context, peer_cn, peer_serial, tls_socket
from wsraw import RawWS, read_http_response, upgrade_request


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"), "wsbridge test CA")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki-other"), "some other CA")


def wss(bridge, path: str = "/", ctx: ssl.SSLContext | None = None, **kw):
    return ws_connect(f"wss://127.0.0.1:{bridge.port}{path}", ssl=ctx, server_hostname="localhost", **kw)


def raw_wss(bridge, ctx: ssl.SSLContext, path: str = "/", extra=None, server_hostname: str = "localhost"):
    """An upgrade over TLS by hand: (socket, response)."""
    s = tls_socket(bridge.port, ctx, server_hostname)
    s.sendall(upgrade_request("localhost", bridge.port, path, extra=extra))
    return s, read_http_response(s, 10)


def echo_once(ws, payload: bytes) -> None:
    """Send and read back the same bytes (the backend's reads come back as one message each)."""
    ws.send(payload)
    got = b""
    while len(got) < len(payload):
        got += ws.recv(timeout=10)
    assert got == payload


def tls_args(cert) -> list[str]:
    return ["--cert", str(cert.cert), "--key", str(cert.key)]


# ---------------------------------------------------------------------------------------------
# Termination


def test_wss_round_trip_and_plain_on_the_same_port(bridge_factory, backends, pki):
    echo = backends.echo()
    server = pki.server()
    b = bridge_factory(*tls_args(server), target=echo.addr)
    ctx = client_context(pki.ca)
    payload = os.urandom(300_000)
    with wss(b, ctx=ctx) as ws:
        echo_once(ws, payload)
        assert ws.socket.version() in ("TLSv1.2", "TLSv1.3")
    # The same port still speaks ws://.
    with ws_connect(b.url()) as ws:
        echo_once(ws, b"plain")
    # /healthz over https too.
    s = tls_socket(b.port, ctx)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    resp = read_http_response(s)
    s.close()
    assert resp.status == 200 and resp.body == b"ok\n"


def test_ssl_only_refuses_plain_with_a_400(bridge_factory, backends, pki):
    echo = backends.echo()
    server = pki.server()
    b = bridge_factory(*tls_args(server), "--ssl-only", target=echo.addr)
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    s.sendall(upgrade_request("127.0.0.1", b.port))
    resp = read_http_response(s, 10)
    s.close()
    assert resp.status == 400, str(resp)
    assert resp.body == b"this port requires TLS: use wss:// or https://\n"
    assert resp.closed
    with wss(b, ctx=client_context(pki.ca)) as ws:
        echo_once(ws, b"over tls")
    # The readiness self-check (a plain upgrade with the process's secret) still gets through.
    s = tls_socket(b.port, client_context(pki.ca))
    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    resp = read_http_response(s)
    s.close()
    assert resp.status == 200 and resp.body == b"ready\n", str(resp)


def test_tls_below_the_minimum_version_is_refused(bridge_factory, backends, pki):
    echo = backends.echo()
    b = bridge_factory(*tls_args(pki.server()), "--ssl-version", "tlsv1_3", target=echo.addr)
    ctx = client_context(pki.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_socket(b.port, ctx).close()
    ctx13 = client_context(pki.ca)
    with tls_socket(b.port, ctx13) as s:
        assert s.version() == "TLSv1.3"


def test_reload_of_a_renewed_certificate_keeps_the_open_session(bridge_factory, backends, pki, tmp_path):
    echo = backends.echo()
    first = pki.server()
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    tokens = tmp_path / "tokens.conf"
    tokens.write_text(f"echo: {echo.addr}\n")
    # With a targets file, SIGHUP reloads both the targets and the certificates.
    b = bridge_factory("--cert", cert, "--key", key, "--targets", tokens)
    ctx = client_context(pki.ca)
    assert peer_serial(b.port, ctx) == first.serial()
    with wss(b, "/?token=echo", ctx=ctx) as ws:
        echo_once(ws, b"before")
        # Renewal: new files replace the old ones (key first, then the certificate, as tools do).
        renewed = pki.server()
        mark = len(b.stderr.snapshot())
        write_atomic(key, renewed.key.read_text())
        write_atomic(cert, renewed.cert.read_text())
        assert b.stderr.wait_for(r"TLS certificates reloaded", 10, start=mark), b.log()
        deadline = time.monotonic() + 10
        while peer_serial(b.port, ctx) != renewed.serial():
            assert time.monotonic() < deadline, "the renewed certificate is not served"
            time.sleep(0.2)
        echo_once(ws, b"after: the session opened with the old certificate goes on")
        # A bad pair (a key that is not the certificate's) keeps the renewed one in force and says why.
        mark = len(b.stderr.snapshot())
        write_atomic(key, pki.server().key.read_text())
        assert b.stderr.wait_for(r"does not belong to the certificate.*previous certificates stay in force", 10, start=mark), b.log()
        assert peer_serial(b.port, ctx) == renewed.serial()
        echo_once(ws, b"still alive")
        # SIGHUP reloads too (the files are good again).
        third = pki.server()
        cert.write_bytes(third.cert.read_bytes())
        key.write_bytes(third.key.read_bytes())
        mark = len(b.stderr.snapshot())
        b.signal(signal.SIGHUP)
        assert b.stderr.wait_for(r"TLS certificates reloaded", 10, start=mark), b.log()
        assert b.stderr.wait_for(r"SIGHUP: reloading targets", 10, start=mark), b.log()
        assert peer_serial(b.port, ctx) == third.serial()
        echo_once(ws, b"and after SIGHUP")


def test_sni_picks_the_certificate_by_server_name(bridge_factory, backends, pki):
    echo = backends.echo()
    default = pki.server("localhost")
    a = pki.issue("a.example.test", dns=("a.example.test",))
    wild = pki.issue("wildcard", dns=("*.b.example.test",))
    b = bridge_factory(*tls_args(default), *tls_args(a), *tls_args(wild), target=echo.addr)
    ctx = client_context(pki.ca)
    assert peer_cn(b.port, ctx, "a.example.test") == "a.example.test"
    assert peer_cn(b.port, ctx, "x.b.example.test") == "wildcard"
    assert peer_cn(b.port, ctx, "localhost") == "localhost"
    nohost = client_context(None)
    assert peer_cn(b.port, nohost, "unknown.example.test") == "localhost"
    with ws_connect(f"wss://127.0.0.1:{b.port}/", ssl=ctx, server_hostname="a.example.test") as ws:
        echo_once(ws, b"sni")


def test_static_files_over_tls_are_complete(bridge_factory, backends, pki, tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    body = os.urandom(700_000)
    (web / "big.bin").write_bytes(body)
    (web / "index.html").write_text("<p>hi</p>\n")
    echo = backends.echo()
    b = bridge_factory(*tls_args(pki.server()), "--web", web, target=echo.addr)
    ctx = client_context(pki.ca)
    for path, expected in (("/big.bin", body), ("/", b"<p>hi</p>\n")):
        s = tls_socket(b.port, ctx)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        resp = read_http_response(s, 20)
        s.close()
        assert resp.status == 200, str(resp)
        assert resp.body == expected


def test_encrypted_key_with_a_password_file_or_variable(bridge_factory, backends, pki, tmp_path, wsbridge_bin):
    echo = backends.echo()
    server = pki.server(key_password="s3cret pass")
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\n")
    b = bridge_factory(*tls_args(server), "--key-password-file", pw, target=echo.addr)
    with wss(b, ctx=client_context(pki.ca)) as ws:
        echo_once(ws, b"encrypted key")
    # On the command line as websockify takes it, with a warning that every user can read it in ps.
    on_command_line = bridge_factory(*tls_args(server), "--key-password", "s3cret pass", "--metrics-listen", "off", target=echo.addr)
    assert on_command_line.stderr.wait_for(r"warning.*--key-password is visible to every user", 10), on_command_line.log()
    with wss(on_command_line, ctx=client_context(pki.ca)) as ws:
        echo_once(ws, b"password in ps")
    # Without the password: exit 1 with the file named.
    r = run_bridge(wsbridge_bin, *tls_args(server), "127.0.0.1:0", echo.addr)
    assert r.returncode == 1 and str(server.key).encode() in r.stderr and len(r.stderr.splitlines()) == 1, r
    # From the environment.
    from conftest import Bridge

    env_bridge = Bridge.__new__(Bridge)
    import subprocess

    proc = subprocess.Popen(
        [wsbridge_bin, *tls_args(server), "--metrics-listen", "off", "127.0.0.1:0", echo.addr],
        env={**os.environ, "WSBRIDGE_KEY_PASSWORD": "s3cret pass"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        from conftest import LISTENING_RE, LineLog

        log = LineLog(proc.stderr, "env")
        m = log.wait_for(LISTENING_RE, 30)
        assert m, log.text()
        with ws_connect(f"wss://127.0.0.1:{m.group(2)}/", ssl=client_context(pki.ca), server_hostname="localhost") as ws:
            echo_once(ws, b"env password")
    finally:
        proc.terminate()
        proc.wait(15)


def test_bad_certificate_files_are_one_line_errors(wsbridge_bin, backends, pki, tmp_path):
    echo = backends.echo()
    server = pki.server()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for args, needle in (
        (["--cert", str(tmp_path / "missing.pem")], "missing.pem"),
        (["--cert", str(junk), "--key", str(server.key)], "junk.pem"),
        (["--cert", str(server.cert), "--key", str(pki.server().key)], "does not belong"),
    ):
        r = run_bridge(wsbridge_bin, *args, "127.0.0.1:0", echo.addr)
        assert r.returncode == 1, r
        assert needle.encode() in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------------------------------------
# Mutual TLS


def refused_by_tls_alert(port: int, ctx: ssl.SSLContext) -> str:
    """The TLS alert that ended a connection, as the ssl module names it. A server that answers over HTTP, closes
    without an alert, or hangs (a TimeoutError is an OSError too) fails the test."""
    s = None
    try:
        s = tls_socket(port, ctx)
        # TLS 1.3: the alert arrives after the client's Finished, on the first read.
        s.sendall(upgrade_request("localhost", port, "/?token=open"))
        resp = read_http_response(s, 10)
    except ssl.SSLError as e:
        assert "ALERT" in str(e).upper(), f"a TLS error that is not an alert: {e!r}"
        return str(e)
    except TimeoutError:
        pytest.fail("the bridge neither answered nor sent a TLS alert within 10 s")
    finally:
        if s is not None:
            s.close()
    pytest.fail(f"the TLS handshake succeeded and the bridge answered: {resp}")


def test_mutual_tls_accepts_rejects_and_checks_names_per_target(bridge_factory, backends, pki, other_pki, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        f"  open: {echo.addr}\n"
        "  ops:\n"
        f"    backend: {echo.addr}\n"
        "    client_cert_names: [alice, carol@example.test]\n"
    )
    b = bridge_factory(*tls_args(pki.server()), "--verify-client", "--cafile", pki.ca, "--targets", targets)
    alice = pki.client("alice")
    bob = pki.client("bob")
    carol = pki.issue("carol", client=True, emails=("carol@example.test",))
    stranger = other_pki.client("alice")

    with wss(b, "/?token=ops", ctx=client_context(pki.ca, alice)) as ws:
        echo_once(ws, b"alice")
    with wss(b, "/?token=ops", ctx=client_context(pki.ca, carol)) as ws:
        echo_once(ws, b"carol by SAN")
    with wss(b, "/?token=open", ctx=client_context(pki.ca, bob)) as ws:
        echo_once(ws, b"bob may use the open target")
    # A valid certificate the target does not allow: 403.
    s, resp = raw_wss(b, client_context(pki.ca, bob), "/?token=ops")
    s.close()
    assert resp.status == 403 and b"client certificate not allowed" in resp.body, str(resp)

    # No certificate, or one from another CA: the TLS handshake fails with an alert.
    for ctx in (client_context(pki.ca), client_context(pki.ca, stranger)):
        alert = refused_by_tls_alert(b.port, ctx)
        assert alert, f"no TLS alert: {alert!r}"
    # websockify's ClientCertCNAuth: one list for every target.
    cn = bridge_factory(*tls_args(pki.server()), "--verify-client", "--cafile", pki.ca,
                        "--auth-plugin", "ClientCertCNAuth", "--auth-source", "alice carol", target=echo.addr)
    with wss(cn, ctx=client_context(pki.ca, alice)) as ws:
        echo_once(ws, b"alice via ClientCertCNAuth")
    s, resp = raw_wss(cn, client_context(pki.ca, bob))
    s.close()
    assert resp.status == 403, str(resp)
    # Plain connections are refused under --verify-client.
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    s.sendall(upgrade_request("127.0.0.1", b.port, "/?token=open"))
    assert read_http_response(s, 10).status == 400
    s.close()


# ---------------------------------------------------------------------------------------------
# TLS to backends


def test_backend_tls_with_its_own_ca_sni_and_client_certificate(bridge_factory, backends, pki, other_pki, tmp_path):
    backend_cert = other_pki.issue("backend.internal.test", dns=("backend.internal.test",))
    plain_backend = TLSEchoBackend(backend_cert)
    backends.all.append(plain_backend)
    mtls_backend = TLSEchoBackend(backend_cert, client_ca=pki.ca, banner=b"RFB 003.008\n")
    backends.all.append(mtls_backend)
    client = pki.client("wsbridge")
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n"
        "  vnc:\n"
        f"    backend: {plain_backend.addr}\n"
        f"    tls: {{ ca: {other_pki.ca}, server_name: backend.internal.test }}\n"
        "  mtls:\n"
        f"    backend: {mtls_backend.addr}\n"
        "    tls:\n"
        f"      ca: {other_pki.ca}\n"
        "      server_name: backend.internal.test\n"
        f"      client_cert: {client.cert}\n"
        f"      client_key: {client.key}\n"
        "  untrusted:\n"
        f"    backend: {plain_backend.addr}\n"
        "    tls: { server_name: backend.internal.test }\n"
        "  wrong-name:\n"
        f"    backend: {plain_backend.addr}\n"
        f"    tls: {{ ca: {other_pki.ca}, server_name: other.internal.test }}\n"
        "  insecure:\n"
        f"    backend: {plain_backend.addr}\n"
        "    tls: { insecure: true }\n"
    )
    b = bridge_factory("--targets", targets)
    payload = os.urandom(200_000)
    with ws_connect(b.url("/?token=vnc")) as ws:
        echo_once(ws, payload)
    assert plain_backend.server_names[-1] == "backend.internal.test"
    with ws_connect(b.url("/?token=mtls")) as ws:
        assert ws.recv(timeout=10) == b"RFB 003.008\n"  # sent right after the handshake: not lost
        echo_once(ws, b"with a client certificate")
    assert mtls_backend.client_certs[-1] is not None
    assert dict(x[0] for x in mtls_backend.client_certs[-1]["subject"])["commonName"] == "wsbridge"

    for token in ("untrusted", "wrong-name"):
        ws = RawWS.connect(b.connect_host, b.port, f"/?token={token}")
        data, close = ws.read_until_close(15)
        ws.sock.close()
        assert close is not None and close.close_code == 1014, close
        assert close.close_reason == "backend TLS certificate not trusted", close

    with ws_connect(b.url("/?token=insecure")) as ws:
        echo_once(ws, b"not verified")
    assert b.stderr.wait_for(r"backend TLS certificate not verified", 5), b.log()


def test_ssl_target_verifies_the_backend(bridge_factory, backends, other_pki):
    """--ssl-target (websockify): TLS with the system's CAs, so a backend with a private CA is refused (1014)."""
    backend_cert = other_pki.issue("localhost", dns=("localhost",), ips=("127.0.0.1",))
    tls_backend = TLSEchoBackend(backend_cert)
    backends.all.append(tls_backend)
    b = bridge_factory("--ssl-target", target=tls_backend.addr)
    ws = RawWS.connect(b.connect_host, b.port, "/")
    _, close = ws.read_until_close(15)
    ws.sock.close()
    assert close is not None and close.close_code == 1014 and close.close_reason == "backend TLS certificate not trusted", close
    assert tls_backend.handshake_errors or tls_backend.conns, "the bridge never spoke TLS to the backend"


def test_bad_backend_tls_settings_name_the_line(wsbridge_bin, backends, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "t.yaml"
    targets.write_text(f"targets:\n  a:\n    backend: {echo.addr}\n    tls: {{ ca: {tmp_path}/nope.pem }}\n")
    r = run_bridge(wsbridge_bin, "--targets", str(targets), "127.0.0.1:0")
    assert r.returncode == 1 and f"{targets}:4:".encode() in r.stderr and b"nope.pem" in r.stderr, r
    targets.write_text(f"targets:\n  a:\n    backend: {echo.addr}\n    tls: {{ sni: x }}\n")
    r = run_bridge(wsbridge_bin, "--targets", str(targets), "127.0.0.1:0")
    assert r.returncode == 1 and f"{targets}:4:".encode() in r.stderr and b"unknown key 'sni'" in r.stderr, r


# ---------------------------------------------------------------------------------------------
# Promised in docs/behaviour.md "TLS" and the options table (issue 18)


def tls12_context(ca, ciphers: str | None = None, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    ctx = client_context(ca)
    ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def test_certificate_and_key_in_one_file(bridge_factory, backends, pki, tmp_path):
    """"the key is in --key or after the certificate in the same file": --cert alone, the key after the chain."""
    echo = backends.echo()
    issued = pki.server()
    combined = tmp_path / "combined.pem"
    combined.write_bytes(issued.cert.read_bytes() + issued.key.read_bytes())
    b = bridge_factory("--cert", combined, target=echo.addr)
    with wss(b, ctx=client_context(pki.ca)) as ws:
        echo_once(ws, b"one file")
    assert peer_serial(b.port, client_context(pki.ca)) == issued.serial()


def test_a_0x80_first_byte_is_plain_http_and_fails_as_http(bridge_factory, backends, pki):
    """An SSLv2-style hello (first byte 0x80) is not TLS: it is read as plain HTTP and refused with a plain 400."""
    echo = backends.echo()
    b = bridge_factory(*tls_args(pki.server()), target=echo.addr)
    sslv2_hello = bytes([0x80, 0x2E, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]) + os.urandom(37)
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.sendall(sslv2_hello + b"\r\n\r\n")
        resp = read_http_response(s, 10)
    assert resp.status == 400 and resp.body.startswith(b"malformed HTTP request"), str(resp)
    assert resp.header("Connection") == "close", str(resp)


def test_ssl_ciphers_limits_the_tls12_suites(bridge_factory, backends, pki):
    """--ssl-ciphers is an OpenSSL cipher string for TLS 1.2: a suite outside it is refused, one inside works."""
    echo = backends.echo()
    b = bridge_factory(*tls_args(pki.server()), "--ssl-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256", target=echo.addr)
    with tls_socket(b.port, tls12_context(pki.ca, "ECDHE-ECDSA-AES128-GCM-SHA256")) as s:
        assert s.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256", s.cipher()
    with pytest.raises(ssl.SSLError) as refused:
        tls_socket(b.port, tls12_context(pki.ca, "ECDHE-ECDSA-AES256-GCM-SHA384")).close()
    assert "ALERT" in str(refused.value).upper() or "HANDSHAKE" in str(refused.value).upper(), refused.value
    # Without the option the same client gets its suite.
    open_ = bridge_factory(*tls_args(pki.server()), target=echo.addr)
    with tls_socket(open_.port, tls12_context(pki.ca, "ECDHE-ECDSA-AES256-GCM-SHA384")) as s:
        assert s.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384", s.cipher()


@pytest.mark.parametrize("version", ["tlsv1_2", "default"])
def test_ssl_version_tls12_accepts_12_and_13(bridge_factory, backends, pki, version):
    """--ssl-version tlsv1_2 (and `default`, which is tlsv1_2): TLS 1.2 and 1.3 clients are both served."""
    echo = backends.echo()
    b = bridge_factory(*tls_args(pki.server()), "--ssl-version", version, target=echo.addr)
    for tls in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with tls_socket(b.port, tls12_context(pki.ca, version=tls)) as s:
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[tls]
            s.sendall(upgrade_request("localhost", b.port, "/"))
            assert read_http_response(s, 10).status == 101


def test_backend_tls_handshake_failed_is_1014_and_counted(bridge_factory, backends, other_pki, tmp_path):
    """A `tls:` backend that does not speak TLS (it answers the ClientHello with an RFB banner): the 101, then Close
    1014 `backend TLS handshake failed`, counted as kind tls_handshake; an untrusted certificate is kind
    tls_verification (docs/behaviour.md, "TLS to backends")."""
    plain = backends.banner()
    untrusted = TLSEchoBackend(other_pki.issue("backend.internal.test", dns=("backend.internal.test",)))
    backends.all.append(untrusted)
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  vnc:\n    backend: {plain.addr}\n    tls: {{ insecure: true }}\n"
                       f"  untrusted:\n    backend: {untrusted.addr}\n    tls: {{ server_name: backend.internal.test }}\n")
    b = bridge_factory("--targets", targets, "--metrics-on-main-port")
    with RawWS.connect(b.connect_host, b.port, "/?token=untrusted") as ws:
        _, close = ws.read_until_close(15)
    assert close is not None and (close.close_code, close.close_reason) == (1014, "backend TLS certificate not trusted"), close
    with RawWS.connect(b.connect_host, b.port, "/?token=vnc") as ws:
        data, close = ws.read_until_close(15)
    assert data == b"" and close is not None, close
    assert (close.close_code, close.close_reason) == (1014, "backend TLS handshake failed"), close
    s = socket.create_connection((b.connect_host, b.port), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    text = read_http_response(s, 10).body.decode()
    s.close()
    assert 'wsbridge_backend_connect_failures_total{kind="tls_handshake"} 1' in text, text
    assert 'wsbridge_backend_connect_failures_total{kind="tls_verification"} 1' in text, text


def test_reload_of_the_cafile_and_of_the_key_password_file(bridge_factory, backends, pki, other_pki, tmp_path):
    """The CA file of --verify-client and the --key-password-file are watched as the certificates are: a new CA
    admits its clients (and no longer the old CA's), and a key re-encrypted with a new passphrase is read with the
    new password file."""
    echo = backends.echo()
    first = pki.server(key_password="first pass")
    cert, key, pw, ca = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "pw", tmp_path / "clients-ca.pem"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    pw.write_text("first pass\n")
    ca.write_bytes(pki.ca.read_bytes())
    b = bridge_factory("--cert", cert, "--key", key, "--key-password-file", pw, "--verify-client", "--cafile", ca,
                       target=echo.addr)
    old_client, new_client = pki.client("old"), other_pki.client("new")
    with wss(b, ctx=client_context(pki.ca, old_client)) as ws:
        echo_once(ws, b"old CA")
    assert refused_by_tls_alert(b.port, client_context(pki.ca, new_client))

    mark = len(b.stderr.snapshot())
    write_atomic(ca, other_pki.ca.read_text())
    assert b.stderr.wait_for(r"TLS certificates reloaded", 10, start=mark), b.log()
    with wss(b, ctx=client_context(pki.ca, new_client)) as ws:
        echo_once(ws, b"new CA")
    assert refused_by_tls_alert(b.port, client_context(pki.ca, old_client))

    second = pki.server(key_password="second pass")
    mark = len(b.stderr.snapshot())
    write_atomic(pw, "second pass\n")
    write_atomic(key, second.key.read_text())
    write_atomic(cert, second.cert.read_text())
    assert b.stderr.wait_for(r"TLS certificates reloaded", 10, start=mark), b.log()
    deadline = time.monotonic() + 10
    while peer_serial(b.port, client_context(pki.ca, new_client)) != second.serial():
        assert time.monotonic() < deadline, "the re-encrypted key is not served"
        time.sleep(0.1)  # the reload is applied after its log line: polled, bounded


def test_backend_tls_files_are_read_again_at_a_targets_reload(bridge_factory, backends, pki, other_pki, tmp_path):
    """A target's `tls: ca:` file changed takes effect at the next targets reload (SIGHUP), for new sessions."""
    backend = TLSEchoBackend(other_pki.issue("backend.internal.test", dns=("backend.internal.test",)))
    backends.all.append(backend)
    ca = tmp_path / "backend-ca.pem"
    ca.write_bytes(other_pki.ca.read_bytes())
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  vnc:\n    backend: {backend.addr}\n"
                       f"    tls: {{ ca: {ca.name}, server_name: backend.internal.test }}\n")
    b = bridge_factory("--targets", targets)
    with ws_connect(b.url("/?token=vnc")) as ws:
        echo_once(ws, b"trusted")
    ca.write_bytes(pki.ca.read_bytes())  # a CA that did not sign the backend's certificate
    mark = len(b.stderr.snapshot())
    b.signal(signal.SIGHUP)
    assert b.stderr.wait_for(r"SIGHUP: reloading targets", 10, start=mark), b.log()
    deadline = time.monotonic() + 10
    while True:
        close = None
        with RawWS.connect(b.connect_host, b.port, "/?token=vnc") as ws:
            try:
                _, close = ws.read_until_close(0.5)  # a session that works stays open: no Close within 0.5 s
            except TimeoutError:
                pass
        if close is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the reload is applied once the files are stable: polled, bounded
    assert close is not None and (close.close_code, close.close_reason) == (1014, "backend TLS certificate not trusted"), close
