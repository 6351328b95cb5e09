"""Routing (issue 3): websockify's token plugins with their data unchanged, every token source and its
precedence, per-target policy, revocation on reload, and `wsbridge check` (docs/behaviour.md, "Routing")."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import tempfile

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import run_bridge, write_atomic, write_token_file, ws_connect
from test_cli import status_for, wait_status
from test_operability import metrics_port, scrape
from wsraw import http_exchange, upgrade_request


def roundtrip(url: str, payload: bytes = b"ping", **kw) -> None:
    with ws_connect(url, **kw) as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload


def status(b, path: str = "/", extra=None) -> int:
    return http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, path, extra=extra)).status


# ---------------------------------------------------------------------------------------------
# websockify's command lines and data, unchanged


def test_websockify_token_file_with_comments_tabs_and_ipv6(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    port = echo.addr.rsplit(":", 1)[1]
    f = tmp_path / "websockify.cfg"
    # The examples of websockify's documentation: comments, a tab after the colon, IPv6 bare and bracketed.
    f.write_text(f"# comment\nvnc1: 127.0.0.1:{port}\nvnc2:\t127.0.0.1:{port}\nv6: ::1:1\nv6b: [::1]:1\n")
    b = bridge_factory("--token-plugin", "TokenFile", "--token-source", str(f))
    roundtrip(b.url("/?token=vnc1"))
    roundtrip(b.url("/websockify?token=vnc2"))
    b2 = bridge_factory("--token-plugin", "websockify.token_plugins.TokenFile", "--token-source", str(f))
    roundtrip(b2.url("/?token=vnc1"))
    b3 = bridge_factory("--target-config", str(f))
    roundtrip(b3.url("/?token=vnc1"))


def test_token_files_with_crlf_cr_and_a_bom_read_as_websockify_reads_them(bridge_factory, backends, tmp_path):
    """Python reads text files with universal newlines: CRLF and lone CR end lines too. A CRLF file that starts
    with a comment used to load empty (Swift's "\\r\\n" is one Character, so the file was one comment line)."""
    echo = backends.echo()
    crlf = tmp_path / "windows.cfg"
    crlf.write_bytes(f"# written on Windows\r\nw1: {echo.addr}\r\nw2:\t{echo.addr}\r\n".encode())
    cr = tmp_path / "old-mac.cfg"
    cr.write_bytes(f"# lone CR\rm1: {echo.addr}\r".encode())
    bom = tmp_path / "bom.cfg"
    bom.write_bytes(b"\xef\xbb\xbf" + f"b1: {echo.addr}\n".encode())
    for f, tokens in ((crlf, ["w1", "w2"]), (cr, ["m1"]), (bom, ["b1"])):
        b = bridge_factory("--token-plugin", "TokenFile", "--token-source", str(f))
        for token in tokens:
            roundtrip(b.url(f"/?token={token}"), token.encode())
        assert status_for(b, "missing") == 404
        assert "line skipped" not in b.log(), b.log()


def test_the_same_token_in_two_token_files_last_one_wins(bridge_factory, backends, tmp_path):
    first, second = backends.collect(), backends.collect()
    d = tmp_path / "tokens.d"
    d.mkdir()
    (d / "a.cfg").write_text(f"vm: {first.addr}\n")
    (d / "b.cfg").write_text(f"vm: {second.addr}\n")
    b = bridge_factory("--token-plugin", "TokenFile", "--token-source", str(d))
    assert b.stderr.wait_for(re.escape(f"{d}/b.cfg:1: ") + r".*already defined at " + re.escape(f"{d}/a.cfg:1"), 10), b.log()
    with ws_connect(b.url("/?token=vm")) as ws:
        ws.send(b"to the last definition")
        conn = second.wait_conn()
        assert conn.wait_bytes(len(b"to the last definition"), 10)
    assert not first.conns, "the first definition was used"


def test_missing_token_file_at_start_is_a_warning_then_served_once_written(bridge_factory, backends, tmp_path):
    """websockify starts without the file (a management system writes it later) and answers unknown tokens."""
    echo = backends.echo()
    f = tmp_path / "later.cfg"
    b = bridge_factory("--token-plugin", "TokenFile", "--token-source", str(f))
    assert b.stderr.wait_for(re.escape(f"{f}: no such file or directory"), 10), b.log()
    assert status_for(b, "late") == 404
    write_atomic(f, f"late: {echo.addr}\n")
    # Found at the first connection: an unknown token re-reads the files that changed (no SIGHUP, no poll).
    assert status_for(b, "late") == 101
    roundtrip(b.url("/?token=late"), b"written after start")


def rereads(port: int) -> float:
    return scrape(port).get("wsbridge_targets_rereads_total", 0.0)


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_a_token_written_just_before_connecting_is_found_at_once(bridge_factory, backends, tmp_path, layout):
    """OpenNebula writes one token file per VM into a --target-config directory and hands the URL to the browser at
    once; websockify reads the files at every lookup. wsbridge re-reads changed files for an unknown token before
    answering 404, so the first connection gets its 101 (not only after the next poll)."""
    echo = backends.echo()
    source = tmp_path / ("tokens.d" if layout == "directory" else "tokens.cfg")
    if layout == "directory":
        source.mkdir()
        write_token_file(source / "vm-1", {"vm-1": echo.addr})
    else:
        write_token_file(source, {"vm-1": echo.addr})
    b = bridge_factory("--target-config", str(source), "--metrics-listen", "127.0.0.1:0")
    port = metrics_port(b)
    assert status_for(b, "vm-2") == 404
    assert rereads(port) == 0, "an unchanged file was read again"
    if layout == "directory":
        write_token_file(source / "vm-2", {"vm-2": echo.addr})
    else:
        write_token_file(source, {"vm-1": echo.addr, "vm-2": echo.addr})
    roundtrip(b.url("/?token=vm-2"), b"right after writing")
    assert status_for(b, "vm-3") == 404, "an unknown token is still unknown"
    roundtrip(b.url("/?token=vm-1"))


def test_a_flood_of_unknown_tokens_rereads_at_most_once_per_interval(bridge_factory, backends, tmp_path):
    """The file is rewritten before a flood of unknown tokens: they arrive within the re-read interval of the last
    look, so they all wait for one look (single flight, one read) and then get 404."""
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens.cfg", {"a": echo.addr})
    b = bridge_factory("--targets", str(f), "--token-reread-interval", "5", "--metrics-listen", "127.0.0.1:0")
    port = metrics_port(b)
    write_token_file(f, {"a": echo.addr, "late": echo.addr})
    assert status_for(b, "late") == 101
    assert rereads(port) == 1
    write_token_file(f, {"a": echo.addr, "late": echo.addr}, header="# rewritten\n")
    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(lambda i: status_for(b, f"unknown-{i}"), range(30)))
    assert statuses == [404] * 30
    # One look for the whole flood: it reads the files unless the watcher's poll has applied the rewrite first.
    assert rereads(port) <= 2, "the flood read the files more than once"


def test_dotted_plugin_names_are_websockifys_or_refused(wsbridge_bin, bridge_factory, backends, tmp_path):
    """websockify's full dotted names map to the built-ins; another module's class with the same last component
    (x.TokenFile) is not websockify's plugin and is refused with a message saying so."""
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens", {"a": echo.addr})
    for plugin in ("x.TokenFile", "mycompany.plugins.TokenFile", "websockify.auth_plugins.TokenFile",
                   "websockify.token_plugins.x.TokenFile", "websockify.token_plugins."):
        r = run_bridge(wsbridge_bin, "--token-plugin", plugin, "--token-source", str(f), "127.0.0.1:0")
        assert r.returncode == 64, (plugin, r.returncode, r.stderr)
        assert b"cannot load Python plugins" in r.stderr and plugin.encode() in r.stderr, (plugin, r.stderr)
    r = run_bridge(wsbridge_bin, "--auth-plugin", "x.BasicHTTPAuth", "--auth-source", "u:p", "127.0.0.1:0", echo.addr)
    assert r.returncode == 64 and b"cannot load Python plugins" in r.stderr, r.stderr
    ok = bridge_factory("--token-plugin", "websockify.token_plugins.ReadOnlyTokenFile", "--token-source", str(f))
    roundtrip(ok.url("/?token=a"))
    auth = bridge_factory("--auth-plugin", "websockify.auth_plugins.BasicHTTPAuth", "--auth-source", "u:p", target=echo.addr)
    assert status(auth, "/") == 401


def test_read_only_token_file_is_read_once(bridge_factory, backends, tmp_path):
    """ReadOnlyTokenFile reads its file once: neither SIGHUP nor the poll nor an unknown token reads it again. The
    proof waits for events: each bridge logs that it handled the SIGHUP (its --log-file reopened), and a TokenFile
    bridge given the same change and the same signal serves the new token, so a reloading bridge would have by now."""
    echo = backends.echo()
    f = write_token_file(tmp_path / "tokens", {"a": echo.addr})
    b = bridge_factory("--token-plugin", "ReadOnlyTokenFile", "--token-source", str(f), "--log-file", tmp_path / "ro.log")
    reloading = bridge_factory("--token-plugin", "TokenFile", "--token-source", str(f), "--token-reread-interval", "0",
                               "--log-file", tmp_path / "reloading.log")
    write_token_file(f, {"b": echo.addr})
    marks = {bridge: len(bridge.stderr.snapshot()) for bridge in (b, reloading)}
    for bridge in (b, reloading):
        bridge.signal(signal.SIGHUP)
    for bridge in (b, reloading):
        assert bridge.stderr.wait_for(r"SIGHUP: log file reopened", 10, start=marks[bridge]), bridge.log()
    assert reloading.stderr.wait_for(r"SIGHUP: reloading targets", 10, start=marks[reloading]), reloading.log()
    wait_status(reloading, "b", 101)
    assert status_for(b, "a") == 101
    assert status_for(b, "b") == 404
    assert b.proc.poll() is None, "SIGHUP must not kill a ReadOnlyTokenFile bridge"
    assert "reloading" not in b.log() and "reloaded" not in b.log(), b.log()


def test_token_file_name_directory(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    d = tmp_path / "tokens.d"
    d.mkdir()
    (d / "vnc-1").write_text(echo.addr + "\n")
    (tmp_path / "outside").write_text(echo.addr + "\n")
    b = bridge_factory("--token-plugin", "TokenFileName", "--token-source", str(d))
    roundtrip(b.url("/?token=vnc-1"))
    for token in ("../outside", "..%2Foutside", "%2e%2e%2foutside", "vnc-1/", ".", "..", "/etc/passwd", "..%252foutside"):
        assert status(b, f"/?token={token}") == 404, token
    (d / "vnc-2").write_text(echo.addr)
    wait_status(b, "vnc-2", 101)
    os.symlink(tmp_path / "outside", d / "link")
    wait_status(b, "link", 101)  # a symlinked token file is data, read like any other: it names a backend only


def test_unix_domain_socket_directory(bridge_factory, backends, tmp_path):
    echo = backends.unix_echo()
    sockdir = os.path.dirname(echo.path)
    other = tempfile.mkdtemp(prefix="wsbo", dir="/tmp")
    os.symlink(echo.path, os.path.join(other, "escaped"))
    os.symlink(echo.path, os.path.join(sockdir, "link"))
    with open(os.path.join(sockdir, "plain"), "w") as fh:
        fh.write("not a socket")
    b = bridge_factory("--token-plugin", "UnixDomainSocketDirectory", "--token-source", sockdir)
    roundtrip(b.url("/?token=echo.sock"))
    for token in ("plain", "link", "../" + os.path.basename(other) + "/escaped", "..%2fescaped", "%2e%2e", "missing"):
        assert status(b, f"/?token={token}") == 404, token


def test_unix_domain_socket_directory_reloads(bridge_factory, backends):
    """UnixDomainSocketDirectory reloads as TokenFile does: a socket that appears is a token at once (the unknown
    token re-reads the directory), and a socket that goes is revoked: its live session gets 1008 `token revoked`."""
    from conftest import Backend, echo_handler

    first = backends.unix_echo()
    sockdir = os.path.dirname(first.path)
    b = bridge_factory("--token-plugin", "UnixDomainSocketDirectory", "--token-source", sockdir)
    second = Backend(echo_handler, name="unix-echo-2", unix_path=os.path.join(sockdir, "second.sock"))
    backends.all.append(second)
    wait_status(b, "second.sock", 101)
    with ws_connect(b.url("/?token=echo.sock")) as ws:
        ws.send(b"before")
        assert ws.recv(timeout=10) == b"before"
        os.unlink(first.path)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=15)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token revoked")
    assert status(b, "/?token=echo.sock") == 404
    roundtrip(b.url("/?token=second.sock"))


def test_unix_target_single_mode(bridge_factory, backends):
    echo = backends.unix_echo()
    b = bridge_factory("--unix-target", echo.path)
    roundtrip(b.url("/"))


# ---------------------------------------------------------------------------------------------
# Token sources


def test_every_token_source_and_its_precedence(bridge_factory, backends, tmp_path):
    e1, e2, e3, e4, e5 = (backends.echo() for _ in range(5))
    f = write_token_file(tmp_path / "t", {"q": e1.addr, "p": e2.addr, "bearer": e3.addr, "proto": e4.addr, "c": e5.addr})
    b = bridge_factory("--targets", str(f), "--token-path", "/t/{token}")
    everything = [("Authorization", "Bearer bearer"), ("Sec-WebSocket-Protocol", "binary, token.proto"), ("Cookie", "token=c")]

    def connect(path: str, extra) -> None:
        headers = [h for h in extra if h[0] != "Sec-WebSocket-Protocol"]
        protocols = [p.strip() for h in extra if h[0] == "Sec-WebSocket-Protocol" for p in h[1].split(",")]
        with ws_connect(b.url(path), additional_headers=headers, subprotocols=protocols or None) as ws:
            ws.send(b"x")
            ws.recv(timeout=10)

    # Which backend got the connection tells which source won: each echo backend counts its connections.
    cases = [
        ("/t/p?token=q", everything, e1),
        ("/t/p", everything, e2),
        ("/", everything, e3),
        ("/", everything[1:], e4),
        ("/", everything[2:], e5),
    ]
    for path, extra, expected in cases:
        before = [len(e.conns) for e in (e1, e2, e3, e4, e5)]
        connect(path, extra)
        after = [len(e.conns) for e in (e1, e2, e3, e4, e5)]
        hit = [i for i in range(5) if after[i] > before[i]]
        assert hit == [(e1, e2, e3, e4, e5).index(expected)], (path, extra, hit)


def test_subprotocol_token_alone_is_selected_for_browsers(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = write_token_file(tmp_path / "t", {"s3cr3t": echo.addr})
    b = bridge_factory("--targets", str(f))
    with ws_connect(b.url("/"), subprotocols=["token.s3cr3t"]) as ws:
        assert ws.subprotocol == "token.s3cr3t"
        ws.send(b"y")
        assert ws.recv(timeout=10) == b"y"


def test_host_token(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = write_token_file(tmp_path / "t", {"vnc-7.example.com": echo.addr})
    b = bridge_factory("--targets", str(f), "--host-token")
    assert status(b, "/", extra=[("Host", "vnc-7.example.com:6080")]) == 101
    assert status(b, "/?token=vnc-7.example.com", extra=[("Host", "other.example.com")]) == 404


def test_tokens_are_redacted_in_every_log_line_and_metric(bridge_factory, backends, tmp_path):
    """Whatever source a token comes from (query, --token-path, Bearer, subprotocol, cookie, Host, a socket's file
    name), accepted or refused, debug logs and /metrics never show it in full."""
    import re
    import secrets
    import time as _time

    from conftest import echo_handler
    from test_operability import get, metrics_port

    echo = backends.echo()
    known = {src: f"{src}-known-{secrets.token_hex(12)}" for src in ("query", "path", "bearer", "proto", "cookie")}
    unknown = {src: f"{src}-unknown-{secrets.token_hex(12)}" for src in known}
    f = write_token_file(tmp_path / "t", {token: echo.addr for token in known.values()})
    b = bridge_factory("--targets", str(f), "--token-path", "/t/{token}", "--log-level", "debug",
                       "--metrics-listen", "127.0.0.1:0")
    mport = metrics_port(b)

    def requests(tokens):
        return [
            (f"/?token={tokens['query']}", []),
            (f"/t/{tokens['path']}", []),
            ("/", [("Authorization", f"Bearer {tokens['bearer']}")]),
            ("/", [("Sec-WebSocket-Protocol", f"binary, token.{tokens['proto']}")]),
            ("/", [("Cookie", f"token={tokens['cookie']}")]),
        ]

    for path, extra in requests(unknown):
        assert status(b, path, extra=extra) == 404, (path, extra)
    for path, extra in requests(known):
        assert status(b, path, extra=extra) == 101, (path, extra)
    # Every session has logged its end before the log is read.
    deadline = _time.monotonic() + 10
    while b.stderr.text().count("session closed") < 5 and _time.monotonic() < deadline:
        _time.sleep(0.05)  # polling the bridge's log, bounded
    assert b.stderr.text().count("session closed") == 5, b.log()
    assert b.stderr.text().count("request refused") >= 5, b.log()
    metrics = get("127.0.0.1", mport, "/metrics").body.decode()

    host_token = f"vnc-{secrets.token_hex(12)}.example.com"
    h = bridge_factory("--targets", str(write_token_file(tmp_path / "h", {host_token: echo.addr})), "--host-token",
                       "--log-level", "debug")
    assert status(h, "/", extra=[("Host", f"{host_token}:6080")]) == 101
    assert status(h, "/", extra=[("Host", f"x{host_token}")]) == 404

    socket_token = f"sock-{secrets.token_hex(12)}"
    sockdir = tempfile.mkdtemp(prefix="wsbr", dir="/tmp")
    backends._add(echo_handler, "unix-echo", unix_path=os.path.join(sockdir, socket_token))
    u = bridge_factory("--token-plugin", "UnixDomainSocketDirectory", "--token-source", sockdir, "--log-level", "debug")
    roundtrip(u.url(f"/?token={socket_token}"))
    deadline = _time.monotonic() + 10
    while "session closed" not in u.stderr.text() and _time.monotonic() < deadline:
        _time.sleep(0.05)  # polling the bridge's log, bounded

    logs = b.stderr.text() + h.stderr.text() + u.stderr.text()
    for token in [*known.values(), *unknown.values(), host_token, socket_token]:
        assert token not in logs, f"token {token} in the log:\n" + "\n".join(l for l in logs.splitlines() if token in l)
        assert token not in metrics, f"token {token} in /metrics"
    # What is left is the redacted form.
    assert re.search(r"uri=/t/path…", b.stderr.text()), b.log()


# ---------------------------------------------------------------------------------------------
# Policy and revocation


def test_allow_clients_and_target_idle_timeout(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    f = tmp_path / "t.yaml"
    write_atomic(
        f,
        f"targets:\n  local:\n    backend: {echo.addr}\n    allow_clients: [127.0.0.0/8]\n    idle_timeout: 0.5\n"
        f"  remote:\n    backend: {echo.addr}\n    allow_clients: [10.0.0.0/8]\n",
    )
    b = bridge_factory("--targets", str(f))
    resp = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/?token=remote"))
    assert (resp.status, resp.body) == (403, b"client address not allowed for this target\n"), str(resp)
    with ws_connect(b.url("/?token=local")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle timeout")


def test_revocation_on_backend_change_and_on_revoke_keep(bridge_factory, backends, tmp_path):
    e1, e2 = backends.echo(), backends.echo()
    f = tmp_path / "t.yaml"
    write_atomic(f, f"targets:\n  moved: {e1.addr}\n  pinned:\n    backend: {e1.addr}\n    on_revoke: keep\n  same: {e1.addr}\n")
    b = bridge_factory("--targets", str(f))
    with ws_connect(b.url("/?token=moved")) as moved, ws_connect(b.url("/?token=pinned")) as pinned, ws_connect(b.url("/?token=same")) as same:
        write_atomic(f, f"targets:\n  moved: {e2.addr}\n  same: {e1.addr}\n")
        b.signal(signal.SIGHUP)
        with pytest.raises(ConnectionClosed) as closed:
            moved.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "target changed")
        for ws in (pinned, same):
            ws.send(b"alive")
            assert ws.recv(timeout=10) == b"alive"
    roundtrip(b.url("/?token=moved"))  # new sessions follow the new file
    assert len(e2.conns) == 1


# ---------------------------------------------------------------------------------------------
# wsbridge check


def test_check_prints_targets_or_every_error(wsbridge_bin, tmp_path):
    good = tmp_path / "good.yaml"
    write_atomic(good, "targets:\n  vnc-lab-1: 10.0.0.5:5900\n  named:\n    token: s3cr3t-token-value\n    backend: db:5432\n    max_sessions: 3\n")
    ok = run_bridge(wsbridge_bin, "check", str(good))
    out = ok.stdout.decode()
    assert ok.returncode == 0, ok.stderr
    assert "named (token s3cr… ) -> db:5432" not in out and "named (token s3cr…) -> db:5432  max_sessions=3" in out, out
    assert "vnc-lab-1" not in out and "vn… -> 10.0.0.5:5900" in out, "token-only names are redacted: " + out
    assert "s3cr3t-token-value" not in out

    bad = tmp_path / "bad.cfg"
    bad.write_text("a: 1.2.3.4:5\nbroken\nb: nohost\n")
    res = run_bridge(wsbridge_bin, "check", str(bad))
    assert res.returncode == 1
    lines = res.stderr.decode().splitlines()
    assert lines[:2] == [f"{bad}:2: expected 'token: host:port' (a colon and a space after the token)", f"{bad}:3: expected host:port, got 'nohost'"], lines


def test_hostname_backends_resolve_at_connect_time_with_happy_eyeballs(bridge_factory, backends, tmp_path):
    # The echo listens on 127.0.0.1 only; "localhost" also resolves to ::1, where nothing listens: the connect
    # must fall back across address families (NIO's Happy Eyeballs, resolving off the event loop).
    echo = backends.echo()
    f = write_token_file(tmp_path / "t", {"byname": f"localhost:{echo.port}"})
    b = bridge_factory("--targets", str(f))
    roundtrip(b.url("/?token=byname"))
