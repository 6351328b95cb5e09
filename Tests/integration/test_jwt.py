"""JWTTokenApi (issue 9): websockify's command line and key file, signed tokens verified by each instance alone
(docs/behaviour.md, "Routing"). Tokens are signed here with the standard library (HS256); the other algorithms,
rotation and claims are covered by the Swift tests (JWTTokenResolverTests)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from conftest import run_bridge, ws_connect
from wsraw import http_exchange, upgrade_request

SECRET = b"websockify-shared-secret-0123456789"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims: dict, secret: bytes = SECRET, header: dict | None = None) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def key_file(tmp_path):
    # websockify (jwcrypto) reads a symmetric key file as the base64url of the secret.
    path = tmp_path / "jwt.key"
    path.write_text(b64url(SECRET) + "\n")
    return path


def answer(b, token: str):
    return http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, f"/?token={token}"))


def test_websockify_jwt_token_api(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    host, port = echo.addr.rsplit(":", 1)
    b = bridge_factory("--token-plugin", "JWTTokenApi", "--token-source", str(key_file(tmp_path)), "--metrics-listen", "off")
    good = hs256({"host": host, "port": int(port), "exp": int(time.time()) + 60})
    with ws_connect(b.url(f"/?token={good}")) as ws:
        ws.send(b"signed")
        assert ws.recv(timeout=5) == b"signed"
    # The port as a string, as some issuers write it; Authorization: Bearer works too.
    with ws_connect(b.url("/"), additional_headers={"Authorization": f"Bearer {hs256({'host': host, 'port': port})}"}) as ws:
        ws.send(b"x")
        assert ws.recv(timeout=5) == b"x"
    cases = {
        hs256({"host": host, "port": int(port), "exp": int(time.time()) - 120}): b"invalid token: expired",
        hs256({"host": host, "port": int(port), "nbf": int(time.time()) + 120}): b"invalid token: not yet valid",
        hs256({"host": host, "port": int(port)}, secret=b"wrong"): b"invalid token: bad signature",
        hs256({"host": host}): b"invalid token: no host/port or target claim",
    }
    for token, reason in cases.items():
        resp = answer(b, token)
        assert (resp.status, resp.body.strip()) == (403, reason), resp
    assert answer(b, "not-a-jwt").status == 404


def test_target_claim_names_a_target_of_the_targets_file(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  lab:\n    token: never-handed-out-{time.time_ns()}\n    backend: {echo.addr}\n")
    b = bridge_factory(
        "--token-plugin", "JWTTokenApi", "--token-source", str(key_file(tmp_path)), "--targets", str(targets),
        "--jwt-audience", "wsbridge", "--metrics-listen", "off",
    )
    token = hs256({"target": "lab", "aud": "wsbridge", "exp": int(time.time()) + 60})
    with ws_connect(b.url(f"/?token={token}")) as ws:
        ws.send(b"named")
        assert ws.recv(timeout=5) == b"named"
    assert answer(b, hs256({"target": "lab", "aud": "other"})).status == 403


def test_bad_key_file_exits_1(wsbridge_bin, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    r = run_bridge(wsbridge_bin, "--token-plugin", "JWTTokenApi", "--token-source", str(bad), "127.0.0.1:0")
    assert r.returncode == 1 and b"bad.pem" in r.stderr, r.stderr


def test_key_directory_reloads_on_sighup_and_through_a_data_swap(bridge_factory, backends, tmp_path):
    """Keys on a mounted Secret: a `..data` swap replaces the key (the old one stops verifying), and SIGHUP
    re-reads the keys too."""
    import os
    import signal

    echo = backends.echo()
    host, port = echo.addr.rsplit(":", 1)
    root = tmp_path / "keys"
    root.mkdir()

    def secret_update(secret: bytes, stamp: str) -> None:
        payload = root / f"..{stamp}"
        payload.mkdir()
        (payload / "jwt.key").write_text(b64url(secret) + "\n")
        os.symlink(payload.name, root / "..data_tmp")
        os.rename(root / "..data_tmp", root / "..data")
        if not os.path.lexists(root / "jwt.key"):
            os.symlink("..data/jwt.key", root / "jwt.key")

    old, new = SECRET, b"a-rotated-secret-0123456789-0123456789"
    secret_update(old, "1")
    b = bridge_factory("--token-plugin", "JWTTokenApi", "--token-source", str(root), "--metrics-listen", "off")
    claims = {"host": host, "port": int(port)}
    assert answer(b, hs256(claims, old)).status == 101
    secret_update(new, "2")
    deadline = time.monotonic() + 10
    while answer(b, hs256(claims, new)).status != 101 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the bridge until the reload is in force, bounded
    assert answer(b, hs256(claims, new)).status == 101, b.log()
    assert answer(b, hs256(claims, old)).status == 403
    mark = len(b.stderr.snapshot())
    b.signal(signal.SIGHUP)
    assert b.stderr.wait_for(r"SIGHUP: reloading JWT keys", 10, start=mark), b.log()
    assert b.stderr.wait_for(r"JWT keys reloaded", 10, start=mark), b.log()


def test_public_key_as_bare_base64_der_is_refused_as_hmac_secret(wsbridge_bin, tmp_path):
    """A public key pasted as bare base64 DER (the PEM body, as identity providers show it) would make anyone with
    the public key able to sign HS256 tokens: it is refused at load, saying why."""
    import subprocess

    pem = tmp_path / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(pem)],
                   check=True, capture_output=True)
    public = subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout"], check=True, capture_output=True).stdout.decode()
    bare = tmp_path / "idp.key"
    bare.write_text("".join(line for line in public.splitlines() if not line.startswith("-----")) + "\n")
    r = run_bridge(wsbridge_bin, "--token-plugin", "JWTTokenApi", "--token-source", str(bare), "127.0.0.1:0")
    assert r.returncode == 1, r.stderr
    assert b"idp.key" in r.stderr and b"refused as an HMAC secret" in r.stderr and b"EC" in r.stderr, r.stderr


def test_close_at_exp(bridge_factory, backends, tmp_path):
    import pytest
    from websockets.exceptions import ConnectionClosed

    echo = backends.echo()
    host, port = echo.addr.rsplit(":", 1)
    b = bridge_factory(
        "--token-plugin", "JWTTokenApi", "--token-source", str(key_file(tmp_path)), "--jwt-close-at-exp",
        "--metrics-listen", "off",
    )
    expires = time.time() + 1.5
    token = hs256({"host": host, "port": int(port), "exp": int(expires) + 1})
    with ws_connect(b.url(f"/?token={token}")) as ws:
        ws.send(b"a")
        assert ws.recv(timeout=5) == b"a"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        closed_at = time.time()
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token expired")
        # Closed when exp passes: not before it (0.05 s for the clocks' reading), and not after exp plus the
        # 5 s leeway (which bounds when a session may start, not its end); the margin is for a loaded machine.
        exp = int(expires) + 1
        assert exp - 0.05 <= closed_at < exp + 4, f"closed {closed_at - exp:+.2f}s from exp"


def test_a_short_hmac_secret_loads_with_a_warning(bridge_factory, backends, tmp_path):
    """websockify (jwcrypto) accepts HMAC secrets of any length and its own test key is short: refusing them would
    break deployments at the switch, so they load with a loud warning (and tokens signed with them verify)."""
    echo = backends.echo()
    host, port = echo.addr.rsplit(":", 1)
    secret = b"short-secret"
    path = tmp_path / "short.key"
    path.write_text(b64url(secret) + "\n")
    b = bridge_factory("--token-plugin", "JWTTokenApi", "--token-source", str(path), "--metrics-listen", "off")
    m = b.stderr.wait_for(rf"warning.*{path}: HMAC secret of {len(secret)} bytes", 10)
    assert m, b.log()
    good = hs256({"host": host, "port": int(port)}, secret=secret)
    with ws_connect(b.url(f"/?token={good}")) as ws:
        ws.send(b"short key")
        assert ws.recv(timeout=5) == b"short key"
    resp = answer(b, hs256({"host": host, "port": int(port)}, secret=b"other-secret"))
    assert (resp.status, resp.body.strip()) == (403, b"invalid token: bad signature")
