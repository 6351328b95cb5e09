"""TokenRedis (issue 9): websockify's Redis data as it is, TTL expiry, pub/sub revocation across instances,
Redis down (503, live sessions untouched, optional stale answers) and back (docs/behaviour.md, "Routing")."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import ws_connect
from redisserver import RedisServer
from wsraw import http_exchange, upgrade_request


@pytest.fixture
def redis():
    try:
        server = RedisServer()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    yield server
    server.close()


def redis_bridge(bridge_factory, source: str, *extra: str):
    return bridge_factory("--token-plugin", "TokenRedis", "--token-source", source, "--metrics-listen", "off", *extra)


def answer(b, token: str):
    return http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, f"/?token={token}"))


def wait_answer(b, token: str, status: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        resp = answer(b, token)
        if resp.status == status or time.monotonic() > deadline:
            assert resp.status == status, f"{resp}\n{b.log()}"
            return resp
        time.sleep(0.1)  # polling the bridge until Redis is back


def echo_once(ws, payload: bytes = b"ping") -> None:
    ws.send(payload)
    assert ws.recv(timeout=5) == payload


def test_websockify_values_json_plain_and_unknown(bridge_factory, backends, redis):
    echo = backends.echo()
    redis.cmd("SET", "t-json", '{"host": "%s"}' % echo.addr)
    redis.cmd("SET", "t-plain", echo.addr)
    redis.cmd("SET", "t-spaces", f"  {echo.addr}\n")
    redis.cmd("SET", "t-bad", "not a target")
    b = redis_bridge(bridge_factory, redis.source)
    for token in ("t-json", "t-plain", "t-spaces"):
        with ws_connect(b.url(f"/?token={token}")) as ws:
            echo_once(ws)
    assert (answer(b, "nope").status, answer(b, "nope").body.strip()) == (404, b"unknown token")
    assert answer(b, "t-bad").status == 404
    # websockify's dotted plugin name too
    b2 = redis_bridge(bridge_factory, redis.source.replace("127.0.0.1", "localhost"))
    b3 = bridge_factory("--token-plugin", "websockify.token_plugins.TokenRedis", "--token-source", redis.source, "--metrics-listen", "off")
    assert answer(b2, "t-plain").status == 101 and answer(b3, "t-plain").status == 101


def test_namespace_database_and_acl_user(bridge_factory, backends, tmp_path):
    try:
        server = RedisServer(None, "--user", "default", "off", "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    try:
        server.username, server.password = "alice", "s3cret"
        echo = backends.echo()
        server.cmd("SET", "app:v1:tok", echo.addr, db=3)
        server.cmd("SET", "tok", "127.0.0.1:1", db=0)
        source = f'127.0.0.1:{server.port}:3:s3cret:"app:v1"'
        b = redis_bridge(bridge_factory, source, "--redis-username", "alice")
        with ws_connect(b.url("/?token=tok")) as ws:
            echo_once(ws)
        # A wrong password: Redis refuses AUTH, so the token service is unavailable (503), not "unknown".
        bad = redis_bridge(bridge_factory, f"127.0.0.1:{server.port}:3:wrong:app", "--redis-username", "alice")
        resp = answer(bad, "tok")
        assert resp.status == 503, resp
    finally:
        server.close()


def test_bad_source_is_a_usage_error(wsbridge_bin):
    from conftest import run_bridge

    r = run_bridge(wsbridge_bin, "--token-plugin", "TokenRedis", "--token-source", 'h:1:2:"x', "127.0.0.1:0")
    assert r.returncode == 64 and b"unbalanced double quote" in r.stderr, r.stderr


def test_a_deleted_key_is_refused_at_the_next_connection(bridge_factory, backends, redis):
    """websockify asks Redis at every connection: an operator who deletes a console token expects the next
    connection to be refused. That is the default (no cache), with the revocation channel turned off, so only the
    lookup itself can refuse it."""
    echo = backends.echo()
    redis.cmd("SET", "console", echo.addr)
    b = redis_bridge(bridge_factory, redis.source, "--redis-revoke-channel", "off")
    with ws_connect(b.url("/?token=console")) as ws:
        echo_once(ws)
    assert redis.cmd("DEL", "console") == 1
    resp = answer(b, "console")
    assert (resp.status, resp.body.strip()) == (404, b"unknown token")
    # A key created after an unknown answer is found at once too (no negative cache).
    redis.cmd("SET", "console", echo.addr)
    assert answer(b, "console").status == 101


def test_expire_stops_resolving(bridge_factory, backends, redis):
    echo = backends.echo()
    b = redis_bridge(bridge_factory, redis.source)
    redis.cmd("SET", "short", echo.addr, "PX", "1500")
    set_at = time.monotonic()
    assert answer(b, "short").status == 101
    # The key's expiry in Redis is the event: the first 404 comes once it has passed (polled, bounded).
    wait_answer(b, "short", 404, timeout=10)
    assert time.monotonic() - set_at >= 1.4, "refused before the key expired"


def test_a_configured_cache_keeps_answers_for_its_ttl(bridge_factory, backends, redis):
    """--token-cache-ttl is there for operators who want fewer lookups: a deleted key keeps working until the
    cached answer is older than the TTL (here longer than the test)."""
    echo = backends.echo()
    redis.cmd("SET", "cached", echo.addr)
    b = redis_bridge(bridge_factory, redis.source, "--token-cache-ttl", "3600", "--redis-revoke-channel", "off")
    assert answer(b, "cached").status == 101
    redis.cmd("DEL", "cached")
    assert answer(b, "cached").status == 101


def test_negative_cache_then_created_token_resolves(bridge_factory, backends, redis):
    echo = backends.echo()
    b = redis_bridge(bridge_factory, redis.source, "--token-cache-negative-ttl", "0.5")
    assert answer(b, "later").status == 404
    redis.cmd("SET", "later", echo.addr)
    wait_answer(b, "later", 101, timeout=3)


def test_publish_revokes_sessions_on_every_instance(bridge_factory, backends, redis):
    echo = backends.echo()
    redis.cmd("SET", "victim", echo.addr)
    redis.cmd("SET", "bystander", echo.addr)
    b1 = redis_bridge(bridge_factory, redis.source)
    b2 = redis_bridge(bridge_factory, redis.source)
    for b in (b1, b2):
        assert b.stderr.wait_for(re.compile(r"subscribed to redis channel wsbridge:revoke"), 10), b.log()
    with contextlib.ExitStack() as stack:
        victims = [stack.enter_context(ws_connect(b.url("/?token=victim"))) for b in (b1, b2)]
        keep = stack.enter_context(ws_connect(b1.url("/?token=bystander")))
        for ws in (*victims, keep):
            echo_once(ws)
        redis.cmd("DEL", "victim")
        published = time.monotonic()
        assert redis.cmd("PUBLISH", "wsbridge:revoke", "victim") == 2
        for ws in victims:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")
        # The Close is the event; the docs say "at once (well within a second)". The bound leaves a loaded
        # 2-core machine 2 s more, and still fails a revocation that waits for anything periodic of seconds.
        took = time.monotonic() - published
        assert took < 3.0, f"sessions revoked {took:.2f}s after the PUBLISH"
        echo_once(keep)
        for b in (b1, b2):
            assert answer(b, "victim").status == 404


def test_redis_down_then_back(bridge_factory, backends, redis):
    echo = backends.echo()
    redis.cmd("SET", "live", echo.addr)
    b = redis_bridge(bridge_factory, redis.source, "--token-cache-ttl", "0")
    assert b.stderr.wait_for(re.compile(r"subscribed to redis channel"), 10), b.log()
    with ws_connect(b.url("/?token=live")) as ws:
        echo_once(ws)
        redis.stop()
        lines_before = len(b.stderr.lines)
        started = time.monotonic()
        resp = answer(b, "live")
        assert resp.status == 503, resp
        assert resp.body.strip() == b"token service unavailable: redis unreachable"
        assert resp.header("Retry-After") == "5"
        assert time.monotonic() - started < 2.5
        echo_once(ws)  # the live session is untouched
        redis.start()
        redis.cmd("SET", "live", echo.addr)
        wait_answer(b, "live", 101, timeout=6)
        echo_once(ws)
        # The subscription came back too: a revocation reaches sessions again.
        assert b.stderr.wait_for(re.compile(r"subscribed to redis channel"), 6, start=lines_before), b.log()
        with ws_connect(b.url("/?token=live")) as ws2:
            echo_once(ws2)
            redis.cmd("PUBLISH", "wsbridge:revoke", "live")
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws2.recv(timeout=3)
            assert closed.value.rcvd.code == 1008


def test_stale_answers_while_redis_is_down(bridge_factory, backends, redis):
    echo = backends.echo()
    redis.cmd("SET", "known", echo.addr)
    b = redis_bridge(bridge_factory, redis.source, "--token-cache-ttl", "0.1", "--token-stale-for", "30")
    assert answer(b, "known").status == 101
    redis.stop()
    time.sleep(0.2)  # past the fresh TTL, within the stale bound
    assert answer(b, "known").status == 101
    assert answer(b, "never-seen").status == 503


# ---------------------------------------------------------------------------------------------
# Promised in docs/behaviour.md "Routing" (TokenRedis) and no test covered (issue 18)


def test_a_value_with_host_and_port_fields(bridge_factory, backends, redis):
    """websockify's JSON value with separate fields: {"host": "h", "port": p}."""
    echo = backends.echo()
    host, port = echo.addr.rsplit(":", 1)
    redis.cmd("SET", "fields", '{"host": "%s", "port": %s}' % (host, port))
    redis.cmd("SET", "fields-str", '{"host": "%s", "port": "%s"}' % (host, port))
    b = redis_bridge(bridge_factory, redis.source)
    for token in ("fields", "fields-str"):
        with ws_connect(b.url(f"/?token={token}")) as ws:
            echo_once(ws, token.encode())


def test_a_revoke_channel_of_its_own_name(bridge_factory, backends, redis):
    """--redis-revoke-channel NAME: a token published there closes its sessions with 1008; the default channel
    is then not listened to."""
    echo = backends.echo()
    redis.cmd("SET", "tok", echo.addr)
    b = redis_bridge(bridge_factory, redis.source, "--redis-revoke-channel", "ops:revoked")
    assert b.stderr.wait_for(re.compile(r"subscribed to redis channel ops:revoked"), 10), b.log()
    with ws_connect(b.url("/?token=tok")) as ws:
        echo_once(ws)
        assert redis.cmd("PUBLISH", "wsbridge:revoke", "tok") == 0, "nobody listens on the default channel"
        echo_once(ws)  # and the session is untouched
        assert redis.cmd("PUBLISH", "ops:revoked", "tok") == 1
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")


def test_redis_timeout_bounds_a_redis_that_never_answers(bridge_factory, backends):
    """--redis-timeout 0.5 against a server that accepts and never answers: 503 `redis unreachable` after about
    half a second (not the 1 s default, nor the 10 s handshake timeout); the margin is for a loaded machine."""
    silent = backends.sink()
    b = redis_bridge(bridge_factory, silent.addr, "--redis-timeout", "0.5", "--redis-revoke-channel", "off")
    started = time.monotonic()
    resp = answer(b, "any")
    took = time.monotonic() - started
    assert (resp.status, resp.body.strip()) == (503, b"token service unavailable: redis unreachable"), str(resp)
    assert resp.header("Retry-After") == "5"
    assert 0.45 <= took < 0.95 + 2, f"503 after {took:.2f}s with --redis-timeout 0.5"


def test_lookups_recover_after_redis_stopped_answering_for_a_while(bridge_factory, backends, redis):
    """A Redis that stops answering (SIGSTOP) makes lookups time out (503); once it answers again (SIGCONT) new
    lookups must find keys again: a connection whose command timed out is not used for later commands."""
    echo = backends.echo()
    redis.cmd("SET", "k", echo.addr)
    b = redis_bridge(bridge_factory, redis.source, "--redis-timeout", "0.3", "--redis-revoke-channel", "off")
    assert answer(b, "k").status == 101
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            assert answer(b, "k").status == 503
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    redis.cmd("SET", "other", echo.addr)
    wait_answer(b, "k", 101, timeout=10)
    # Every later answer is right, for each key: no reply is taken for another command's.
    for token, status in (("other", 101), ("missing", 404), ("k", 101), ("missing", 404), ("other", 101)):
        assert answer(b, token).status == status, token


class FreezingProxy:
    """A TCP proxy to Redis whose connections can be frozen: a frozen connection stays open and forwards nothing
    more, as a connection through a dead middlebox does; connections made after the freeze work."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.live: list[threading.Event] = []
        self.sockets: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            frozen = threading.Event()
            self.live.append(frozen)
            self.sockets += [client, server]
            self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, frozen), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or frozen.is_set():
                    frozen.wait()  # frozen: hold the connection open, forward nothing
                    return
                dst.sendall(data)
        except OSError:
            return

    def freeze(self) -> None:
        for frozen in self.live:
            frozen.set()

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


def test_a_connection_whose_command_timed_out_is_replaced(bridge_factory, backends, redis):
    """Connections to Redis that stop answering for good (frozen, still open): the lookups on them time out (503),
    and the bridge replaces them, so lookups succeed again on new connections; it does not keep failing."""
    echo = backends.echo()
    redis.cmd("SET", "k", echo.addr)
    proxy = FreezingProxy(redis.port)
    try:
        b = redis_bridge(bridge_factory, f"127.0.0.1:{proxy.port}", "--redis-timeout", "0.3",
                         "--redis-revoke-channel", "off")
        for _ in range(4):
            assert answer(b, "k").status == 101
        proxy.freeze()
        assert answer(b, "k").status == 503
        wait_answer(b, "k", 101, timeout=10)
        assert proxy.accepted > 1, "the lookup succeeded on a frozen connection?"
    finally:
        proxy.close()


def test_a_subscription_that_stops_answering_is_replaced(bridge_factory, backends, redis):
    """The revocation subscription's connection frozen (open, forwarding nothing): the bridge's liveness PING
    goes unanswered, it subscribes again on a new connection, and a revocation published then closes the session.
    Without the check a dead subscription would miss every revocation, silently."""
    echo = backends.echo()
    redis.cmd("SET", "k", echo.addr)
    proxy = FreezingProxy(redis.port)
    try:
        b = redis_bridge(bridge_factory, f"127.0.0.1:{proxy.port}", "--redis-timeout", "0.5")
        assert b.stderr.wait_for(re.compile(r"subscribed to redis channel wsbridge:revoke"), 10), b.log()
        with ws_connect(b.url("/?token=k")) as ws:
            echo_once(ws)
            mark = len(b.stderr.snapshot())
            proxy.freeze()
            assert b.stderr.wait_for(re.compile(r"redis subscription lost; reconnecting"), 15, start=mark), b.log()
            assert b.stderr.wait_for(re.compile(r"subscribed to redis channel wsbridge:revoke"), 10, start=mark), b.log()
            redis.cmd("DEL", "k")
            # Redis still counts the frozen connection (the proxy holds it open) beside the new one.
            assert redis.cmd("PUBLISH", "wsbridge:revoke", "k") == 2
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")
    finally:
        proxy.close()


def test_an_ipv6_redis_source(bridge_factory, backends):
    """An IPv6 host in brackets (`[::1]:PORT`): the lookups go to Redis over IPv6."""
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    try:
        server = RedisServer(None, "--bind", "127.0.0.1 ::1")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    try:
        echo = backends.echo()
        server.cmd("SET", "six", echo.addr)
        b = redis_bridge(bridge_factory, f"[::1]:{server.port}", "--redis-revoke-channel", "off")
        with ws_connect(b.url("/?token=six")) as ws:
            echo_once(ws)
        clients = server.cmd("CLIENT", "LIST").decode()
        assert re.search(r"addr=(\[::1\]|::1):\d+ .*cmd=get", clients), clients
    finally:
        server.close()


def test_lookups_fail_at_once_while_reconnects_back_off(bridge_factory, backends, refused_port):
    """Redis unreachable: after a failed connect, new connects wait (0.1 s doubling to 2 s) and lookups meanwhile
    fail at once, not after --redis-timeout (3 s here); once Redis listens there, lookups succeed again."""
    echo = backends.echo()
    b = redis_bridge(bridge_factory, f"127.0.0.1:{refused_port}", "--redis-timeout", "3", "--redis-revoke-channel", "off")
    for _ in range(5):
        started = time.monotonic()
        resp = answer(b, "k")
        took = time.monotonic() - started
        assert (resp.status, resp.body.strip()) == (503, b"token service unavailable: redis unreachable"), str(resp)
        assert took < 1.5, f"503 after {took:.2f}s: a lookup waited (--redis-timeout 3)"
    server = RedisServer(refused_port)
    try:
        server.cmd("SET", "k", echo.addr)
        wait_answer(b, "k", 101, timeout=10)  # within the 2 s backoff bound, with margin
    finally:
        server.close()
