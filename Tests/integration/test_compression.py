"""permessage-deflate (RFC 7692; docs/behaviour.md, "Compression"): negotiated exactly as the RFC says, only where
the operator enables it (`--compression deflate`, a YAML target's `compression:`); byte-exact with Python
`websockets` through the echo target and a TCP relay; fewer bytes on the wire for text-like streams; protocol
errors with their close codes; a decompression bomb ends with 1009 (or waits behind backpressure) with the bridge's
memory bounded.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib

import pytest

from conftest import RSSSampler, run_bridge, ws_connect
from test_faults import hold_handler
from wsraw import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RawWS, encode_frame

KiB = 1 << 10
MiB = 1 << 20
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


def targets_file(tmp_path, body: str) -> str:
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n" + body)
    return str(path)


def extensions_answered(bridge, token: str, offer: str | None) -> str | None:
    extra = [("Sec-WebSocket-Extensions", offer)] if offer is not None else []
    with RawWS.connect(bridge.connect_host, bridge.port, f"/?token={token}", extra=extra) as ws:
        return ws.response.header("Sec-WebSocket-Extensions")


def deflate_message(data: bytes, wbits: int = 15, level: int = 6) -> bytes:
    """One message as a client compresses it (RFC 7692 §7.2.1): raw deflate, sync flush, tail removed."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def terminal_log(size: int) -> bytes:
    """Text like a console's output: prompts, repeated words, numbers that change."""
    lines = []
    n = total = 0
    while total < size:
        lines.append(f"[{n:06d}] kernel: eth0: link up, 1000 Mbps, full duplex; rx={n * 1379} tx={n * 877}\r\n".encode())
        total += len(lines[-1])
        n += 1
    return b"".join(lines)[:size]


# ---------------------------------------------------------------------------------------------
# Negotiation


def test_negotiation_only_where_enabled_and_as_offered(bridge_factory, backends, tmp_path):
    echo = backends.echo()
    targets = targets_file(
        tmp_path,
        f"  on: {{ echo: true, compression: deflate }}\n"
        f"  off: {{ echo: true, compression: off }}\n"
        f"  default: {{ echo: true }}\n"
        f"  tcp: {{ backend: '{echo.addr}', compression: deflate }}\n",
    )
    b = bridge_factory("--targets", targets)  # --compression off: the default
    assert extensions_answered(b, "on", DEFLATE_OFFER) == "permessage-deflate; client_max_window_bits=12"
    assert extensions_answered(b, "tcp", DEFLATE_OFFER) == "permessage-deflate; client_max_window_bits=12"
    assert extensions_answered(b, "off", DEFLATE_OFFER) is None
    assert extensions_answered(b, "default", DEFLATE_OFFER) is None
    assert extensions_answered(b, "on", None) is None  # never an extension that was not offered

    # RFC 7692 §7: parameters echoed where the RFC asks, windows no larger than offered, the first acceptable
    # offer taken, a bad or unsupported one declined without failing the handshake.
    cases = {
        "permessage-deflate": "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover":
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9":
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        "permessage-deflate; server_max_window_bits=8": None,
        "permessage-deflate; server_max_window_bits=8, permessage-deflate": "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover": None,
        "permessage-deflate; no_such_parameter": None,
        "permessage-deflate; client_max_window_bits=16": None,
        "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=\"11\"":
            "permessage-deflate; client_max_window_bits=11",
    }
    for offer, answer in cases.items():
        assert extensions_answered(b, "on", offer) == answer, offer

    # The global switch applies to targets without a choice of their own; a target's `off` still wins.
    b2 = bridge_factory("--targets", targets, "--compression", "deflate")
    assert extensions_answered(b2, "default", DEFLATE_OFFER) == "permessage-deflate; client_max_window_bits=12"
    assert extensions_answered(b2, "off", DEFLATE_OFFER) is None


def test_compression_option_and_yaml_key_are_checked(wsbridge_bin, tmp_path):
    r = run_bridge(wsbridge_bin, "--compression", "gzip", "127.0.0.1:0", "127.0.0.1:1")
    assert r.returncode == 64, r
    assert b"--compression" in r.stderr and b"gzip" in r.stderr, r.stderr
    targets = targets_file(tmp_path, "  a: { echo: true }\n  b: { echo: true, compression: maybe }\n")
    r = run_bridge(wsbridge_bin, "check", targets)
    assert r.returncode != 0
    assert f"{targets}:3".encode() in r.stderr + r.stdout, r
    assert b"'compression' must be 'deflate' or 'off'" in r.stderr + r.stdout, r


# ---------------------------------------------------------------------------------------------
# Byte-exact round trips with Python websockets (which offers permessage-deflate by default)


@pytest.mark.parametrize("compression", ["deflate", "off"])
def test_websockets_round_trips_byte_exact(bridge_factory, backends, tmp_path, compression):
    echo = backends.echo()
    targets = targets_file(tmp_path, f"  echo: {{ echo: true }}\n  tcp: '{echo.addr}'\n")
    b = bridge_factory("--targets", targets, "--compression", compression)
    sizes = [0, 1, 125, 126, 4096, 65535, 65536, 300_000, 4 * MiB]

    # The echo target: each message comes back as one message.
    with ws_connect(b.url("/?token=echo"), compression="deflate") as ws:
        negotiated = [e.name for e in ws.protocol.extensions]
        assert negotiated == (["permessage-deflate"] if compression == "deflate" else [])
        for size in sizes:
            for data in (os.urandom(size), terminal_log(size)):
                ws.send(data)
                assert ws.recv(timeout=30) == data, size
            text = terminal_log(size).decode() + "é€😀"
            ws.send(text)
            assert ws.recv(timeout=30) == text, size

    # A TCP echo backend: a byte stream, so the bytes come back in messages of the backend's reads.
    with ws_connect(b.url("/?token=tcp"), compression="deflate") as ws:
        sent = b"".join(terminal_log(size) + os.urandom(size // 8) for size in sizes)
        writer = threading.Thread(target=lambda: [ws.send(sent[i:i + 256 * KiB]) for i in range(0, len(sent), 256 * KiB)])
        writer.start()
        got = bytearray()
        while len(got) < len(sent):
            got += ws.recv(timeout=30)
        writer.join(30)
        assert bytes(got) == sent


# ---------------------------------------------------------------------------------------------
# On the wire


def read_messages(ws: RawWS, count_bytes: int, timeout: float = 30) -> tuple[bytes, int, list[int]]:
    """Reads data frames until `count_bytes` inflated bytes arrived: (bytes, wire payload bytes, RSV bits seen)."""
    inflater = zlib.decompressobj(-15)
    out = bytearray()
    wire = 0
    rsvs = []
    message = bytearray()
    compressed = False
    deadline = time.monotonic() + timeout
    while len(out) < count_bytes:
        frame = ws.recv_frame(timeout=max(0.1, deadline - time.monotonic()))
        assert frame is not None, f"{len(out)} of {count_bytes} bytes"
        assert frame.opcode in (OP_BINARY, OP_TEXT, OP_CONT), frame
        wire += len(frame.payload)
        rsvs.append(frame.rsv)
        if frame.opcode != OP_CONT:
            compressed = bool(frame.rsv & 0b100)
        else:
            assert frame.rsv == 0, "RSV1 on a continuation frame"
        message += frame.payload
        if frame.fin:
            out += inflater.decompress(bytes(message) + b"\x00\x00\xff\xff") if compressed else message
            message = bytearray()
    return bytes(out), wire, rsvs


def test_backend_text_is_compressed_on_the_wire_and_arrives_byte_exact(bridge_factory, backends, tmp_path):
    log = terminal_log(2 * MiB)
    source = backends.source(log, after="open")
    targets = targets_file(tmp_path, f"  console: {{ backend: '{source.addr}', compression: deflate }}\n")
    b = bridge_factory("--targets", targets)
    with RawWS.connect(b.connect_host, b.port, "/?token=console",
                       extra=[("Sec-WebSocket-Extensions", DEFLATE_OFFER)]) as ws:
        assert ws.response.header("Sec-WebSocket-Extensions") == "permessage-deflate; client_max_window_bits=12"
        got, wire, rsvs = read_messages(ws, len(log))
    assert got == log
    assert all(r in (0, 0b100) for r in rsvs)
    print(f"\nterminal log: {len(log)} bytes sent as {wire} bytes on the wire ({wire / len(log):.1%})")
    assert wire < len(log) / 4, f"{wire} bytes on the wire for {len(log)} bytes of text"


def test_client_compressed_messages_reach_the_backend_byte_exact(bridge_factory, backends, tmp_path):
    collect = backends.collect()
    targets = targets_file(tmp_path, f"  up: {{ backend: '{collect.addr}', compression: deflate }}\n")
    b = bridge_factory("--targets", targets)
    sent = bytearray()
    with RawWS.connect(b.connect_host, b.port, "/?token=up",
                       extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]) as ws:
        # One deflate stream across messages (context takeover), some messages in several frames, Pings between.
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        for i in range(200):
            data = terminal_log(1000 + 97 * i)[i:]
            body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
            body = body[:-4]
            if i % 3 == 0:
                half = len(body) // 2
                ws.send_raw(encode_frame(OP_BINARY, body[:half], fin=False, rsv=0b100))
                ws.send_raw(encode_frame(OP_PING, b"p"))
                ws.send_raw(encode_frame(OP_CONT, body[half:], fin=True))
            else:
                ws.send_raw(encode_frame(OP_BINARY, body, rsv=0b100))
            sent += data
        ws.send_raw(encode_frame(OP_BINARY, b"plain, not compressed"))
        sent += b"plain, not compressed"
        conn = collect.wait_conn()
        assert conn.wait_bytes(len(sent), 30), f"{len(conn.received())} of {len(sent)} bytes"
        ws.send_close(1000)
    assert conn.received()[: len(sent)] == bytes(sent)


# ---------------------------------------------------------------------------------------------
# Protocol errors


def close_after(ws: RawWS, frames: bytes) -> tuple[int | None, str]:
    ws.send_raw(frames)
    _, close = ws.read_until_close(timeout=10)
    assert close is not None, "no Close frame"
    return close.close_code, close.close_reason


@pytest.mark.parametrize(
    "offer, frames, code, reason",
    [
        (None, encode_frame(OP_BINARY, deflate_message(b"x"), rsv=0b100), 1002, "reserved bits set"),
        (DEFLATE_OFFER, encode_frame(OP_BINARY, b"\xff\xff\xff", rsv=0b100), 1007, "invalid compressed data"),
        (DEFLATE_OFFER, encode_frame(OP_PING, b"", rsv=0b100), 1002, "compressed control frame"),
        (DEFLATE_OFFER, encode_frame(OP_BINARY, b"a", fin=False) + encode_frame(OP_CONT, b"b", rsv=0b100), 1002,
         "RSV1 set on a continuation frame"),
        (DEFLATE_OFFER, encode_frame(OP_TEXT, deflate_message(b"ok \xc3\x28"), rsv=0b100), 1007,
         "invalid UTF-8 in text message"),
        (DEFLATE_OFFER, encode_frame(OP_BINARY, b"x", rsv=0b010), 1002, "reserved bits set"),
    ],
    ids=["rsv1-not-negotiated", "invalid-deflate", "compressed-ping", "rsv1-continuation", "bad-utf8-inflated",
         "rsv2"],
)
def test_compressed_session_protocol_errors(bridge_factory, tmp_path, offer, frames, code, reason):
    targets = targets_file(tmp_path, "  echo: { echo: true, compression: deflate }\n")
    b = bridge_factory("--targets", targets)
    extra = [("Sec-WebSocket-Extensions", offer)] if offer else []
    with RawWS.connect(b.connect_host, b.port, "/?token=echo", extra=extra) as ws:
        assert (ws.response.header("Sec-WebSocket-Extensions") is not None) == (offer is not None)
        assert close_after(ws, frames) == (code, reason)
    # The server goes on.
    with ws_connect(b.url("/?token=echo"), compression="deflate") as ws:
        ws.send(b"after")
        assert ws.recv(timeout=10) == b"after"


# ---------------------------------------------------------------------------------------------
# Bombs


def bomb(size: int) -> bytes:
    """`size` zero bytes as one compressed message: about a thousandth of its size."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    body = b"".join(c.compress(chunk) for _ in range(size // MiB)) + c.flush(zlib.Z_SYNC_FLUSH)
    return body[:-4]


def test_a_bomb_ends_with_1009_at_the_message_limit_and_memory_stays_bounded(bridge_factory, backends, tmp_path):
    collect = backends.collect()
    targets = targets_file(tmp_path, f"  up: {{ backend: '{collect.addr}', compression: deflate }}\n")
    b = bridge_factory("--targets", targets, "--max-message-size", str(16 * MiB), "--max-frame-size", str(MiB))
    body = bomb(1024 * MiB)  # 1 GiB of zeros in about 1 MiB
    assert len(body) <= MiB
    with ws_connect(b.url("/?token=up"), compression="deflate") as warm:
        warm.send(b"warm")
    idle = b.rss_kib()
    with RSSSampler(b) as rss:
        with RawWS.connect(b.connect_host, b.port, "/?token=up",
                           extra=[("Sec-WebSocket-Extensions", DEFLATE_OFFER)]) as ws:
            # One message in frames of at most --max-frame-size: 1009 comes from the inflated size, not the frames.
            pieces = [body[i:i + 256 * KiB] for i in range(0, len(body), 256 * KiB)]
            frames = b"".join(
                encode_frame(OP_BINARY if i == 0 else OP_CONT, piece, fin=i == len(pieces) - 1,
                             rsv=0b100 if i == 0 else 0)
                for i, piece in enumerate(pieces)
            )
            try:
                ws.send_raw(frames, timeout=30)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the bridge closed after its 1009 while the rest was still being sent
            _, close = ws.read_until_close(timeout=30)
    assert close is not None and (close.close_code, close.close_reason) == (1009, "message too big")
    # The backend got the inflated bytes up to the limit, all zero, and no more.
    conn = collect.wait_conn(1)
    assert conn.wait_end(15)
    got = conn.received()
    assert len(got) <= 16 * MiB and got == bytes(len(got)), len(got)
    growth = rss.peak - idle
    print(f"\nbomb: 1 GiB in {len(body)} bytes; backend got {len(got)} bytes; RSS grew {growth} KiB")
    assert growth < 16 * 1024, f"RSS grew {growth} KiB during a decompression bomb"


def test_a_bomb_into_a_backend_that_does_not_read_waits_behind_backpressure(bridge_factory, backends, tmp_path):
    release = threading.Event()
    hold = backends.custom(hold_handler(release), "hold", rcvbuf=64 * KiB)
    targets = targets_file(tmp_path, f"  hold: {{ backend: '{hold.addr}', compression: deflate }}\n"
                                     f"  echo: {{ echo: true, compression: deflate }}\n")
    b = bridge_factory("--targets", targets)  # --max-message-size: 64 MiB
    with ws_connect(b.url("/?token=echo"), compression="deflate") as warm:
        warm.send(b"warm")
        assert warm.recv(timeout=10) == b"warm"
    idle = b.rss_kib()
    body = bomb(60 * MiB)  # under the message limit: only backpressure bounds it
    with RSSSampler(b) as rss:
        with RawWS.connect(b.connect_host, b.port, "/?token=hold",
                           extra=[("Sec-WebSocket-Extensions", DEFLATE_OFFER)]) as ws:
            ws.send_raw(encode_frame(OP_BINARY, body, rsv=0b100), timeout=30)
            # The bridge read all of the 60 KiB or so, and inflated only what the backend's buffers took. Another
            # session is served meanwhile.
            with ws_connect(b.url("/?token=echo"), compression="deflate", open_timeout=15) as other:
                other.send(terminal_log(100 * KiB))
                assert other.recv(timeout=15) == terminal_log(100 * KiB)
            held = rss.peak - idle
            release.set()  # the backend now reads: everything arrives
            conn = hold.wait_conn()
            assert conn.wait_bytes(60 * MiB, 60), f"{len(conn.received())} of {60 * MiB} bytes"
            ws.send_close(1000)
    assert conn.received()[: 60 * MiB] == bytes(60 * MiB)
    print(f"\nbomb into a backend that does not read: RSS grew {held} KiB while held")
    assert held < 8 * 1024, f"RSS grew {held} KiB while a bomb waited for a backend that does not read"


def test_many_small_compressed_messages_into_a_backend_that_does_not_read_stay_small(bridge_factory, backends,
                                                                                     tmp_path):
    """Each inflated message is 64 bytes: what waits for the backend is counted by its bytes (256 KiB before the
    bridge stops reading), so each must hold storage of about its size, not the 64 KiB buffer it was inflated
    into (that would be 256 MiB)."""
    release = threading.Event()
    hold = backends.custom(hold_handler(release), "hold", rcvbuf=64 * KiB)
    targets = targets_file(tmp_path, f"  hold: {{ backend: '{hold.addr}', compression: deflate }}\n")
    b = bridge_factory("--targets", targets)
    # client_no_context_takeover: each message is compressed on its own, so one batch can be sent many times.
    messages = [b"%07d: a line of a console, 64 bytes with its number......\n" % i for i in range(1000)]
    batch = b"".join(encode_frame(OP_BINARY, deflate_message(m), rsv=0b100) for m in messages)
    repeat = 64 * MiB // len(batch)
    stream = b"".join(messages) * repeat
    idle = b.rss_kib()
    with RSSSampler(b) as rss:
        with RawWS.connect(b.connect_host, b.port, "/?token=hold",
                           extra=[("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover")]) as ws:
            assert "client_no_context_takeover" in ws.response.header("Sec-WebSocket-Extensions")
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KiB)
            ws.sock.settimeout(120)
            sender = threading.Thread(target=ws.sock.sendall, args=(batch * repeat,), daemon=True)
            sender.start()
            # 64 MiB into a backend that reads nothing: the bridge must push back, and the sender then blocks
            # for good. 10 s bounds the wait for that; RSS is bounded whether or not it came by then.
            sender.join(10)
            pushed_back = sender.is_alive()
            held = rss.peak - idle
            release.set()
            conn = hold.wait_conn()
            sender.join(120)
            assert not sender.is_alive(), "the bridge stopped reading after the backend did"
            assert conn.wait_bytes(len(stream), 120), f"{len(conn.received())} of {len(stream)} bytes"
    assert pushed_back, "64 MiB went into a backend that reads nothing without backpressure"
    assert conn.received()[: len(stream)] == stream
    print(f"\n{len(stream) // 64} messages of 64 bytes into a backend that does not read: RSS grew {held} KiB")
    assert held < 16 * 1024, f"RSS grew {held} KiB while small messages waited for the backend"


# ---------------------------------------------------------------------------------------------
# Memory per compressed session


def test_memory_per_compressed_session_is_bounded(bridge_factory, tmp_path):
    targets = targets_file(tmp_path, "  echo: { echo: true, compression: deflate }\n")
    b = bridge_factory("--targets", targets)
    count = 200
    before = b.rss_kib()
    clients = []
    try:
        for i in range(count):
            ws = RawWS.connect(b.connect_host, b.port, "/?token=echo",
                               extra=[("Sec-WebSocket-Extensions", DEFLATE_OFFER)])
            clients.append(ws)
            # A message each way, so that both directions' zlib state is made.
            ws.send_raw(encode_frame(OP_BINARY, deflate_message(terminal_log(4096), wbits=12), rsv=0b100))
        for ws in clients:
            got, _, _ = read_messages(ws, 4096)
            assert got == terminal_log(4096)
        per_session = (b.rss_kib() - before) / count
        print(f"\n{count} compressed sessions with zlib state both ways: {per_session:.1f} KiB each")
        assert per_session <= 96, f"{per_session:.1f} KiB per compressed session"
    finally:
        for ws in clients:
            ws.abort()
