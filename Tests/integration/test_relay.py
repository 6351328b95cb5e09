"""Relay: byte-exact transfer both ways with a real client (websockets), in every target mode."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import write_token_file, ws_connect
from wsraw import OP_BINARY, OP_CONT, OP_TEXT, RawWS

MiB = 1 << 20


def echo_roundtrip(ws, data: bytes, timeout: float = 60.0) -> bytes:
    """Send ``data`` as one message from a thread while collecting the echoed binary messages
    until as many bytes came back (the backend may split or merge reads)."""
    errors: list[BaseException] = []

    def sender():
        try:
            ws.send(data)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < len(data):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"echo of {len(data)} bytes: only {len(got)} received within {timeout}s")
        msg = ws.recv(timeout=left)
        assert isinstance(msg, bytes), f"backend data must arrive as binary messages, got {type(msg)}"
        got += msg
    t.join(max(0.0, deadline - time.monotonic()))
    assert not errors, errors
    return bytes(got)


def recv_exactly(ws, n: int, timeout: float = 30.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < n:
        msg = ws.recv(timeout=max(0.001, deadline - time.monotonic()))
        assert isinstance(msg, bytes), type(msg)
        got += msg
    return bytes(got)


@pytest.mark.parametrize("size", [1, 125, 126, 127, 65535, 65536, MiB, 8 * MiB])
def test_echo_sizes(echo_bridge, size):
    b, echo = echo_bridge
    data = os.urandom(size)
    with ws_connect(b.url(), subprotocols=["binary"]) as ws:
        assert ws.subprotocol == "binary"
        got = echo_roundtrip(ws, data)
        assert len(got) == len(data)
        assert got == data
    conn = echo.wait_conn()
    assert conn.wait_end(10), "backend did not see the end of the session"
    assert conn.received() == data


def test_echo_empty_message(echo_bridge):
    """An empty message carries no bytes; the relay goes on with the next message."""
    b, echo = echo_bridge
    with ws_connect(b.url()) as ws:
        ws.send(b"")
        ws.send(b"Z")
        assert recv_exactly(ws, 1) == b"Z"
    conn = echo.wait_conn()
    assert conn.wait_end(10)
    assert conn.received() == b"Z"


def test_many_messages_in_order(echo_bridge):
    b, echo = echo_bridge
    msgs = [os.urandom(n) for n in [1, 2, 3, 100, 1000, 5000, 70000, 7, 0, 9] * 20]
    expected = b"".join(msgs)
    with ws_connect(b.url()) as ws:
        errors = []

        def sender():
            try:
                for m in msgs:
                    ws.send(m)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        assert recv_exactly(ws, len(expected)) == expected
        t.join(10)
        assert not errors


def test_text_frames_forwarded_as_bytes(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    text = "héllo wörld ✓ 🚀"
    with ws_connect(b.url()) as ws:
        ws.send(text)
        conn = col.wait_conn()
        raw = text.encode("utf-8")
        assert conn.wait_bytes(len(raw), 10)
        assert conn.received() == raw


def test_text_echo_comes_back_binary(echo_bridge):
    b, _ = echo_bridge
    text = "ünïcödé ✓"
    with ws_connect(b.url()) as ws:
        ws.send(text)
        got = recv_exactly(ws, len(text.encode()))
        assert got == text.encode("utf-8")


def test_fragmented_binary_message(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    frags = [os.urandom(n) for n in (10, 0, 70000, 1, 300)]
    expected = b"".join(frags)
    with ws_connect(b.url()) as ws:
        ws.send(frags)
        conn = col.wait_conn()
        assert conn.wait_bytes(len(expected), 10)
        assert conn.received() == expected
        ws.send(b"after")
        assert conn.wait_bytes(len(expected) + 5, 10)
    assert conn.wait_end(10)
    assert conn.received() == expected + b"after"


def test_fragmented_text_message(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    frags = ["frag-one ", "frag-twö ", "", "✓"]
    expected = "".join(frags).encode()
    with ws_connect(b.url()) as ws:
        ws.send(frags)
        conn = col.wait_conn()
        assert conn.wait_bytes(len(expected), 10)
        assert conn.received() == expected


def test_utf8_code_point_split_across_fragments(bridge_factory, backends):
    """UTF-8 is validated across fragments: a code point split between frames is valid."""
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    euro = "€".encode()  # 3 bytes
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_frame(OP_TEXT, b"a" + euro[:1], fin=False)
        ws.send_frame(OP_CONT, euro[1:2], fin=False)
        ws.send_frame(OP_CONT, euro[2:] + b"z", fin=True)
        conn = col.wait_conn()
        assert conn.wait_bytes(5, 10)
        assert conn.received() == b"a" + euro + b"z"
        ws.send_close(1000)
        _, close = ws.read_until_close()
        assert close is not None and close.close_code == 1000, close


def test_interleaved_ping_inside_fragmented_message(bridge_factory, backends):
    col = backends.collect()
    b = bridge_factory(target=col.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_frame(OP_BINARY, b"part1-", fin=False)
        ws.send_frame(0x9, b"ping-in-the-middle")
        ws.send_frame(OP_CONT, b"part2", fin=True)
        f = ws.recv_frame()
        assert f is not None and f.opcode == 0xA and f.payload == b"ping-in-the-middle", f
        conn = col.wait_conn()
        assert conn.wait_bytes(11, 10)
        assert conn.received() == b"part1-part2"


def _one_session(url: str, size: int) -> tuple[int, bool]:
    data = os.urandom(size)
    with ws_connect(url) as ws:
        got = echo_roundtrip(ws, data, timeout=90)
    return size, got == data


def test_concurrent_sessions(echo_bridge):
    b, echo = echo_bridge
    sizes = [1 + (i * 7919) % 300_000 for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda s: _one_session(b.url(), s), sizes))
    bad = [s for s, ok in results if not ok]
    assert not bad, f"{len(bad)} of 50 sessions were not byte-exact (sizes {bad})"
    assert len(echo.conns) == 50


def test_ping_pong(echo_bridge):
    b, _ = echo_bridge
    with ws_connect(b.url()) as ws:
        for payload in (b"", b"p", os.urandom(125)):
            assert ws.ping(payload).wait(10), f"no pong for a ping with {len(payload)} bytes"
        # data still flows after control frames
        assert echo_roundtrip(ws, b"after-ping") == b"after-ping"


def test_pong_echoes_ping_payload_raw(echo_bridge):
    b, _ = echo_bridge
    with RawWS.connect(b.connect_host, b.port) as ws:
        payload = os.urandom(125)
        ws.send_frame(0x9, payload)
        f = ws.recv_frame()
        assert f is not None and f.opcode == 0xA and f.payload == payload and f.fin and not f.masked, f


def test_unsolicited_pong_is_ignored(echo_bridge):
    b, _ = echo_bridge
    with RawWS.connect(b.connect_host, b.port) as ws:
        ws.send_frame(0xA, b"unsolicited")
        ws.send_frame(OP_BINARY, b"data")
        f = ws.recv_frame()
        assert f is not None and f.opcode == OP_BINARY and f.payload == b"data", f


def test_banner_arrives_before_client_sends(bridge_factory, backends):
    banner = b"RFB 003.008\n"
    ban = backends.banner(banner)
    b = bridge_factory(target=ban.addr)
    with ws_connect(b.url(), subprotocols=["binary"]) as ws:
        assert recv_exactly(ws, len(banner), timeout=10) == banner
        ws.send(b"RFB 003.008\n")
        conn = ban.wait_conn()
        assert conn.wait_bytes(12, 10)
        assert conn.received() == b"RFB 003.008\n"


def test_backend_data_is_binary_frames(bridge_factory, backends):
    banner = b"\xff\xfe not utf-8 \x00"
    ban = backends.banner(banner)
    b = bridge_factory(target=ban.addr)
    with RawWS.connect(b.connect_host, b.port) as ws:
        got = b""
        while len(got) < len(banner):
            f = ws.recv_frame()
            assert f is not None and f.opcode == OP_BINARY and f.fin and not f.masked and f.rsv == 0, f
            got += f.payload
        assert got == banner


def test_token_file_mode(bridge_factory, backends, tmp_path):
    e1, e2 = backends.echo(), backends.echo()
    f = write_token_file(tmp_path / "tokens", {"alpha": e1.addr, "beta": e2.addr})
    b = bridge_factory("--targets", f)
    for tok, be in (("alpha", e1), ("beta", e2)):
        data = os.urandom(100_000)
        with ws_connect(b.url(f"/?token={tok}")) as ws:
            assert echo_roundtrip(ws, data) == data
        assert be.wait_conn().wait_end(10)
        assert be.conns[0].received() == data
    assert len(e1.conns) == 1 and len(e2.conns) == 1


def test_token_file_format_details(bridge_factory, backends, tmp_path):
    """websockify format: comments, blank lines, tabs after the separator, colons in the token."""
    e1, e2, e3 = backends.echo(), backends.echo(), backends.echo()
    f = tmp_path / "tokens.cfg"
    f.write_text(
        "# comment line\n"
        "\n"
        f"one: {e1.addr}\n"
        f"two:\t{e2.addr}\n"
        f"a:b: {e3.addr}\n"
    )
    b = bridge_factory("--targets", f)
    for tok, be in (("one", e1), ("two", e2), ("a:b", e3)):
        with ws_connect(b.url(f"/?token={tok}")) as ws:
            assert echo_roundtrip(ws, tok.encode()) == tok.encode()
        assert len(be.conns) == 1


def test_yaml_mode(bridge_factory, backends, tmp_path):
    e1, e2, e3 = backends.echo(), backends.echo(), backends.echo()
    f = tmp_path / "targets.yaml"
    f.write_text(
        "targets:\n"
        f"  short: {e1.addr}\n"
        "  long:\n"
        f"    backend: {e2.addr}\n"
        "  named:\n"
        "    token: s3cr3t-random-token\n"
        f"    backend: {e3.addr}\n"
    )
    b = bridge_factory("--targets", f)
    for tok, be in (("short", e1), ("long", e2), ("s3cr3t-random-token", e3)):
        data = os.urandom(50_000)
        with ws_connect(b.url(f"/?token={tok}")) as ws:
            assert echo_roundtrip(ws, data) == data
        assert len(be.conns) == 1
    # the key of an entry with an explicit token is only a name
    from wsraw import http_exchange, upgrade_request

    resp = http_exchange(b.connect_host, b.port, upgrade_request(b.connect_host, b.port, "/?token=named"))
    assert resp.status == 404, str(resp)


def test_yml_extension(bridge_factory, backends, tmp_path):
    e = backends.echo()
    f = tmp_path / "targets.yml"
    f.write_text(f"targets:\n  tok: {e.addr}\n")
    b = bridge_factory("--targets", f)
    with ws_connect(b.url("/?token=tok")) as ws:
        assert echo_roundtrip(ws, b"yml") == b"yml"


def test_targets_directory(bridge_factory, backends, tmp_path):
    e1, e2 = backends.echo(), backends.echo()
    d = tmp_path / "targets.d"
    d.mkdir()
    (d / "10-first").write_text(f"first: {e1.addr}\n")
    (d / "20-second.yaml").write_text(f"targets:\n  second: {e2.addr}\n")
    (d / ".hidden").write_text("this is not a valid line\n")
    b = bridge_factory("--targets", d)
    for tok, be in (("first", e1), ("second", e2)):
        with ws_connect(b.url(f"/websockify?token={tok}")) as ws:
            assert echo_roundtrip(ws, tok.encode() * 1000) == tok.encode() * 1000
        assert len(be.conns) == 1


def test_unix_target(bridge_factory, backends):
    ue = backends.unix_echo()
    b = bridge_factory("--unix-target", ue.path)
    data = os.urandom(300_000)
    with ws_connect(b.url()) as ws:
        assert echo_roundtrip(ws, data) == data
    assert len(ue.conns) == 1


def test_yaml_unix_target(bridge_factory, backends, tmp_path):
    ue = backends.unix_echo()
    f = tmp_path / "targets.yaml"
    f.write_text(f"targets:\n  console:\n    unix: {ue.path}\n")
    b = bridge_factory("--targets", f)
    with ws_connect(b.url("/?token=console")) as ws:
        assert echo_roundtrip(ws, b"unix!") == b"unix!"


@pytest.mark.parametrize("form", ["[::1]:{port}", "::1:{port}"], ids=["bracketed", "bare"])
def test_ipv6_target(bridge_factory, tmp_path, form):
    import socket as _s

    try:
        lsock = _s.socket(_s.AF_INET6, _s.SOCK_STREAM)
        lsock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    lsock.listen(8)
    lsock.settimeout(15)
    port = lsock.getsockname()[1]

    def serve():
        try:
            s, _ = lsock.accept()
        except OSError:
            return
        with s:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        f = tmp_path / "tokens"
        f.write_text(f"v6: {form.format(port=port)}\n")
        b = bridge_factory("--targets", f)
        with ws_connect(b.url("/?token=v6")) as ws:
            assert echo_roundtrip(ws, b"over ipv6") == b"over ipv6"
    finally:
        lsock.close()
