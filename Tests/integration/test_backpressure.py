"""Backpressure and memory bounds (docs/behaviour.md, "Relay": backpressure both ways;
"--max-frame-size": payload is streamed, so this is policy, not memory)."""

from __future__ import annotations

import os
import socket
import threading
import time


from conftest import RSSSampler, ws_connect
from wsraw import OP_BINARY, RawWS, encode_frame

KiB = 1 << 10
MiB = 1 << 20


def warm_up(url: str) -> None:
    with ws_connect(url) as ws:
        for _ in range(3):
            ws.send(b"w" * 4096)
            got = b""
            while len(got) < 4096:
                got += ws.recv(timeout=10)


def settle_rss(bridge, seconds: float = 1.0) -> int:
    """Max RSS over a short quiet period (sampling)."""
    end = time.monotonic() + seconds
    peak = 0
    while time.monotonic() < end:
        peak = max(peak, bridge.rss_kib())
        time.sleep(0.05)
    return peak


def test_flood_and_vanish(bridge_factory, backends):
    """A client floods 16 MiB without reading, then vanishes with a reset: the backend
    connection is closed within 10 s and the bridge's memory returns near its idle level."""
    echo = backends.echo(rcvbuf=64 * KiB)  # small kernel buffers: the flood meets pushback early
    b = bridge_factory(target=echo.addr)
    warm_up(b.url())
    idle = settle_rss(b)

    ws = RawWS.connect(b.connect_host, b.port, rcvbuf=64 * KiB)
    frame = encode_frame(OP_BINARY, os.urandom(64 * KiB), mask_key=os.urandom(4))
    total = 16 * MiB
    sent = 0
    with RSSSampler(b) as rss:
        ws.sock.settimeout(3)  # a send blocked this long: the bridge is pushing back
        t0 = time.monotonic()
        view = memoryview(frame)
        try:
            while sent < total and time.monotonic() - t0 < 30:
                off = 0
                while off < len(frame):
                    off += ws.sock.send(view[off:])
                sent += 64 * KiB  # payload bytes
        except (socket.timeout, TimeoutError):
            pass  # pushed back: stop flooding
        conn = echo.wait_conn(1)  # connection 0 was the warm-up session
        ws.abort()
        t_abort = time.monotonic()
        ended = conn.wait_end(10)
        print(f"flood: backend end seen {time.monotonic() - t_abort:.2f}s after the reset "
              f"(eof={conn.eof}, error={conn.error!r})")
        assert ended, (
            f"backend connection still open 10s after the client vanished "
            f"(sent {sent} payload bytes before stopping)"
        )
        assert time.monotonic() - t_abort <= 10
        # memory returns near idle
        deadline = time.monotonic() + 10
        now = b.rss_kib()
        while now > idle + 20 * KiB and time.monotonic() < deadline:
            time.sleep(0.2)  # sampling
            now = b.rss_kib()
    print(f"flood: sent {sent} B, idle {idle} KiB, peak {rss.peak} KiB, after {now} KiB")
    assert now <= idle + 20 * KiB, (
        f"RSS {now} KiB did not return within 20 MiB of idle {idle} KiB (peak {rss.peak} KiB, "
        f"sent {sent} bytes)"
    )


def _slow_backend_transfer(bridge_factory, backends, chunks: list[int]):
    total = sum(chunks)
    col = backends.collect(chunk=64 * KiB, delay=0.05, rcvbuf=128 * KiB)
    b = bridge_factory(target=col.addr)
    # a tiny first message through the collector is the warm-up; idle is measured after it
    payload = os.urandom(total)
    with ws_connect(b.url()) as ws:
        ws.send(b"w")
        conn = col.wait_conn()
        assert conn.wait_bytes(1, 10)
        idle = settle_rss(b, 0.5)
        errors: list[BaseException] = []

        def sender():
            try:
                off = 0
                for n in chunks:
                    ws.send(payload[off : off + n])
                    off += n
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        with RSSSampler(b) as rss:
            t = threading.Thread(target=sender, daemon=True)
            t.start()
            ok = conn.wait_bytes(1 + total, 90)
            t.join(10)
        assert not errors, errors
        assert ok, f"only {len(conn.received()) - 1} of {total} bytes reached the slow backend in 90s"
    got = conn.received()
    assert got[1:] == payload, "bytes at the backend differ from the bytes sent"
    growth = rss.peak - idle
    print(f"slow backend {len(chunks)} message(s): idle {idle} KiB, peak {rss.peak} KiB, growth {growth} KiB")
    assert growth < 32 * MiB // KiB, (
        f"bridge RSS grew by {growth} KiB (idle {idle} KiB, peak {rss.peak} KiB) while relaying "
        f"{total} bytes to a slow backend: it buffers instead of pushing back"
    )


def test_slow_backend_many_messages(bridge_factory, backends):
    _slow_backend_transfer(bridge_factory, backends, [256 * KiB] * 128)


def test_slow_backend_one_32mib_frame(bridge_factory, backends):
    _slow_backend_transfer(bridge_factory, backends, [32 * MiB])


def test_slow_reading_client(bridge_factory, backends):
    payload = os.urandom(64 * MiB)
    src = backends.source(payload, after="close")
    b = bridge_factory(target=src.addr)
    idle = settle_rss(b, 0.5)

    ws = RawWS.connect(b.connect_host, b.port, rcvbuf=64 * KiB)
    try:
        with RSSSampler(b) as rss:
            # do not read for a while: the bridge must stop reading the backend
            time.sleep(3)  # the client's deliberate stall (RSS is sampled meanwhile)
            stalled_peak = rss.peak
            data, close = ws.read_until_close(timeout=90)
        assert close is not None, f"no Close after {len(data)} bytes"
        assert (close.close_code, close.close_reason) == (1000, "backend closed"), close
        assert len(data) == len(payload), f"received {len(data)} of {len(payload)} bytes"
        assert data == payload, "bytes differ"
    finally:
        ws.close()
    growth = rss.peak - idle
    print(f"slow client: idle {idle} KiB, peak while stalled {stalled_peak} KiB, peak {rss.peak} KiB")
    assert growth < 32 * MiB // KiB, (
        f"bridge RSS grew by {growth} KiB (idle {idle} KiB, peak {rss.peak} KiB, "
        f"peak while the client stalled {stalled_peak} KiB) relaying 64 MiB to a slow client"
    )
