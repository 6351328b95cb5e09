"""BaseTokenAPI / JSONTokenApi (issue 9): websockify's HTTP token API, with a timeout, a TTL cache, negative
caching and the token URL-encoded (docs/behaviour.md, "Routing"). The API is a small http.server here."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest

from conftest import ws_connect
from wsraw import http_exchange, upgrade_request


class TokenAPI:
    """Answers /t/TOKEN from `answers` (status, body, delay); records every path asked."""

    def __init__(self):
        self.answers: dict[str, tuple[int, str, float]] = {}
        self.paths: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.paths.append(self.path)
                status, body, delay = api.answers.get(unquote(self.path.removeprefix("/t/")), (404, "no", 0.0))
                time.sleep(delay)  # a slow API, on purpose
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bridge gave up waiting (the timeout case)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/t/%s"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hits(self, token_path: str) -> int:
        return self.paths.count(token_path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    a = TokenAPI()
    yield a
    a.close()


def answer(b, token: str):
    return http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, f"/?token={token}"))


def api_bridge(bridge_factory, plugin: str, url: str, *extra: str):
    return bridge_factory("--token-plugin", plugin, "--token-source", url, "--metrics-listen", "off", *extra)


def test_base_token_api_hit_miss_and_odd_tokens(bridge_factory, backends, api):
    echo = backends.echo()
    api.answers["good"] = (200, echo.addr + "\n", 0.0)
    odd = "a/b c?&%é"
    api.answers[odd] = (200, echo.addr, 0.0)
    b = api_bridge(bridge_factory, "BaseTokenAPI", api.url)
    with ws_connect(b.url("/?token=good")) as ws:
        ws.send(b"hi")
        assert ws.recv(timeout=5) == b"hi"
    assert answer(b, "missing").status == 404
    from urllib.parse import quote
    resp = answer(b, quote(odd, safe=""))
    assert resp.status == 101, resp
    # Percent-encoded on the way to the API: the token cannot add path segments or a query.
    assert "/t/a%2Fb%20c%3F%26%25%C3%A9" in api.paths, api.paths


def test_json_token_api(bridge_factory, backends, api):
    echo = backends.echo()
    host, port = echo.addr.rsplit(":", 1)
    api.answers["j"] = (200, json.dumps({"host": host, "port": int(port)}), 0.0)
    api.answers["plain"] = (200, echo.addr, 0.0)
    b = api_bridge(bridge_factory, "websockify.token_plugins.JSONTokenApi", api.url)
    with ws_connect(b.url("/?token=j")) as ws:
        ws.send(b"json")
        assert ws.recv(timeout=5) == b"json"
    assert answer(b, "plain").status == 404  # JSONTokenApi wants JSON


def test_timeout_and_server_errors_are_503(bridge_factory, api):
    api.answers["slow"] = (200, "127.0.0.1:1", 3.0)
    api.answers["broken"] = (500, "oops", 0.0)
    b = api_bridge(bridge_factory, "BaseTokenAPI", api.url, "--token-api-timeout", "0.5")
    started = time.monotonic()
    resp = answer(b, "slow")
    took = time.monotonic() - started
    assert (resp.status, resp.body.strip()) == (503, b"token service unavailable: token API unreachable")
    # The API answers after 3 s: the 503 before that is --token-api-timeout 0.5 at work (not the 2 s default,
    # nor the handshake timeout), whatever the load.
    assert 0.45 <= took < 3.0, f"503 after {took:.2f}s with --token-api-timeout 0.5"
    assert answer(b, "broken").status == 503


def test_every_connection_asks_the_api_by_default(bridge_factory, backends, api):
    """As websockify: no cache unless --token-cache-ttl asks for one, so a token the API stops answering is refused
    at the next connection."""
    echo = backends.echo()
    api.answers["c"] = (200, echo.addr, 0.0)
    b = api_bridge(bridge_factory, "BaseTokenAPI", api.url)
    for _ in range(3):
        assert answer(b, "c").status == 101
        assert answer(b, "gone").status == 404
    assert (api.hits("/t/c"), api.hits("/t/gone")) == (3, 3)
    api.answers["c"] = (404, "", 0.0)
    assert answer(b, "c").status == 404


def test_cache_ttl_and_negative_cache(bridge_factory, backends, api):
    echo = backends.echo()
    api.answers["c"] = (200, echo.addr, 0.0)
    # TTLs of 3 s: the six requests below take well under that even on a loaded machine (checked, so that a slow
    # run fails with its reason rather than with a wrong count).
    b = api_bridge(bridge_factory, "BaseTokenAPI", api.url, "--token-cache-ttl", "3", "--token-cache-negative-ttl", "3")
    first = time.monotonic()
    for _ in range(3):
        assert answer(b, "c").status == 101
        assert answer(b, "gone").status == 404
        if _ == 0:
            cached = time.monotonic()  # both answers are cached by now
    assert time.monotonic() - first < 3, "the requests took longer than the cache TTL"
    assert (api.hits("/t/c"), api.hits("/t/gone")) == (1, 1)
    time.sleep(max(0.0, cached + 3.1 - time.monotonic()))  # past both TTLs: time itself is what is tested here
    api.answers["gone"] = (200, echo.addr, 0.0)
    assert answer(b, "c").status == 101
    assert answer(b, "gone").status == 101
    assert (api.hits("/t/c"), api.hits("/t/gone")) == (2, 2)


def test_bad_url_is_a_usage_error(wsbridge_bin):
    from conftest import run_bridge

    r = run_bridge(wsbridge_bin, "--token-plugin", "BaseTokenAPI", "--token-source", "http://api/no-placeholder", "127.0.0.1:0")
    assert r.returncode == 64 and b"%s" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# Answer bodies over 64 KiB (docs/behaviour.md: 503), streamed: never read whole before the check


def test_a_body_of_64_kib_is_read_and_one_byte_more_is_503(bridge_factory, backends, api):
    echo = backends.echo()
    exact = echo.addr + " " * ((64 << 10) - len(echo.addr))  # white space around the target is ignored
    api.answers["exact"] = (200, exact, 0.0)
    api.answers["over"] = (200, exact + " ", 0.0)
    b = api_bridge(bridge_factory, "BaseTokenAPI", api.url)
    assert answer(b, "exact").status == 101
    resp = answer(b, "over")
    assert (resp.status, resp.body.strip(), resp.header("Retry-After")) == (
        503, b"token service unavailable: token API unreachable", "5"), str(resp)


class EndlessAPI:
    """Answers 200 with a body without Content-Length that never ends (until the bridge hangs up); counts the
    bytes it could send."""

    def __init__(self):
        self.sent = 0
        self.done = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                chunk = b" " * (1 << 20)
                try:
                    while api.sent < (512 << 20):
                        self.wfile.write(chunk)
                        api.sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    api.done.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/t/%s"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_endless_body_is_cut_at_64_kib_not_read_to_the_timeout(bridge_factory):
    """A body that never ends: 503 as soon as 64 KiB are exceeded, long before --token-api-timeout (10 s here),
    and the bridge hangs up after a few MiB at most (socket buffers), not after reading hundreds."""
    endless = EndlessAPI()
    try:
        b = api_bridge(bridge_factory, "BaseTokenAPI", endless.url, "--token-api-timeout", "10")
        started = time.monotonic()
        resp = answer(b, "t")
        took = time.monotonic() - started
        assert (resp.status, resp.body.strip()) == (503, b"token service unavailable: token API unreachable"), str(resp)
        assert took < 5, f"503 after {took:.2f}s: the body was read until the timeout"
        assert endless.done.wait(10), "the bridge kept reading the endless body"
        assert endless.sent <= 32 << 20, f"the API sent {endless.sent >> 20} MiB before the bridge hung up"
    finally:
        endless.close()


def test_redirects_are_not_followed(bridge_factory, backends, api):
    """"no redirects followed": a 302 to a path that would answer a backend is not an answer naming one (404),
    and the redirect's target is never asked."""
    echo = backends.echo()
    api.answers["moved"] = (302, "", 0.0)
    api.answers["target"] = (200, echo.addr, 0.0)
    original = api.server.RequestHandlerClass.send_response

    def send_response(handler, code, message=None):
        original(handler, code, message)
        if code == 302:
            handler.send_header("Location", "/t/target")

    api.server.RequestHandlerClass.send_response = send_response
    b = api_bridge(bridge_factory, "BaseTokenAPI", api.url)
    resp = answer(b, "moved")
    assert (resp.status, resp.body.strip()) == (404, b"unknown token"), str(resp)
    assert api.hits("/t/moved") == 1 and api.hits("/t/target") == 0, api.paths


def test_an_https_api_is_verified(bridge_factory, backends, tmp_path):
    """An https:// token API is spoken over TLS with the system's CAs: a certificate from a private CA is not
    trusted, so the lookup is 503 (unreachable), never a backend from an unverified answer."""
    import ssl

    from tlsutil import PKI

    echo = backends.echo()
    pki = PKI(tmp_path / "pki", "private API CA")
    issued = pki.server()
    api = TokenAPI()
    try:
        api.answers["t"] = (200, echo.addr, 0.0)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(issued.cert), str(issued.key))
        api.server.socket = ctx.wrap_socket(api.server.socket, server_side=True)
        url = api.url.replace("http://127.0.0.1", "https://localhost")
        # The API works over TLS for a client that trusts its CA:
        import urllib.request

        with urllib.request.urlopen(url % "t", context=ssl.create_default_context(cafile=str(pki.ca)), timeout=10) as r:
            assert r.read().decode() == echo.addr
        api.paths.clear()
        b = api_bridge(bridge_factory, "BaseTokenAPI", url)
        resp = answer(b, "t")
        assert (resp.status, resp.body.strip()) == (503, b"token service unavailable: token API unreachable"), str(resp)
        assert api.hits("/t/t") == 0, "the bridge sent the token to an API it could not verify"
    finally:
        api.close()
