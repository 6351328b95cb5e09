"""TokenRedis (issue 9): websockify's Redis data as it is, TTL expiry, pub/sub revocation across instances,
Redis down (503, live sessions untouched, optional stale answers) and back (docs/behaviour.md, "Routing")."""

from __future__ import annotations

import contextlib
import re
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
