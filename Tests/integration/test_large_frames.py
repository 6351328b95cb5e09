"""Frames larger than the per-session memory bound are relayed byte-exact with bounded memory (issue 5;
docs/behaviour.md: "--max-frame-size ... Payload is streamed, so this is policy, not memory").

Self-contained (no fixtures from conftest.py): run with
    WSBRIDGE_BIN=.build/release/wsbridge python3 -m pytest -q Tests/integration/test_large_frames.py
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

KiB = 1 << 10
MiB = 1 << 20
BLOCK = MiB  # the payload is a random block repeated; a multiple of 4, so every block is masked alike


def bridge_bin() -> str:
    path = os.environ.get("WSBRIDGE_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("WSBRIDGE_BIN must point at the wsbridge binary", pytrace=False)
    return path


class Sink:
    """A TCP backend that reads everything, checks it against the repeated block, and counts."""

    def __init__(self, block: bytes):
        self.doubled = block + block
        self.count = 0
        self.mismatch_at: int | None = None
        self.eof = threading.Event()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn, _ = self.lsock.accept()
        with conn:
            while True:
                try:
                    data = conn.recv(BLOCK)
                except OSError:
                    break
                if not data:
                    break
                offset = self.count % BLOCK
                if self.mismatch_at is None and data != self.doubled[offset : offset + len(data)]:
                    self.mismatch_at = self.count
                self.count += len(data)
        self.eof.set()

    def close(self) -> None:
        self.lsock.close()


class Bridge:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [bridge_bin(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.port = None
        deadline = time.monotonic() + 30
        while self.port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode()
            m = re.search(r"listening on \S+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            elif not line and self.proc.poll() is not None:
                break
        assert self.port, "wsbridge did not start"
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for _ in iter(self.proc.stderr.readline, b""):
            pass

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class PeakRSS:
    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.bridge.rss_kib())
            self.stop.wait(0.05)

    def __enter__(self) -> "PeakRSS":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


def upgrade(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def masked(block: bytes, key: bytes) -> bytes:
    n = len(block)
    return (int.from_bytes(block, "little") ^ int.from_bytes(key * (n // 4), "little")).to_bytes(n, "little")


def frame_header(length: int, key: bytes) -> bytes:
    return bytes([0x82, 0x80 | 127]) + struct.pack("!Q", length) + key


def settle_rss(bridge: Bridge, seconds: float = 1.0) -> int:
    end, peak = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        peak = max(peak, bridge.rss_kib())
        time.sleep(0.05)
    return peak


def test_256mib_frame_relayed_byte_exact_with_bounded_memory():
    """One 256 MiB binary frame to a counting sink: every byte arrives in order, and the bridge's RSS grows by far
    less than the frame (it streams payload instead of buffering the frame)."""
    total = 256 * MiB
    block = os.urandom(BLOCK)
    key = os.urandom(4)
    wire_block = masked(block, key)
    sink = Sink(block)
    bridge = Bridge("--max-frame-size", str(1 << 30), "127.0.0.1:0", f"127.0.0.1:{sink.port}")
    try:
        idle = settle_rss(bridge, 0.5)
        s = upgrade(bridge.port)
        with PeakRSS(bridge) as rss:
            s.sendall(frame_header(total, key))
            for _ in range(total // BLOCK):
                s.sendall(wire_block)
            # Close 1000: the bridge flushes to the backend, then half-closes it.
            s.sendall(bytes([0x88, 0x82]) + key + masked(struct.pack("!H", 1000) + b"\0\0", key)[:2])
            reply = s.recv(16)
            assert sink.eof.wait(60), f"backend saw no EOF; {sink.count} of {total} bytes arrived"
        s.close()
        assert reply[:4] == b"\x88\x02\x03\xe8", reply  # Close 1000 back
        assert sink.mismatch_at is None, f"bytes differ from offset {sink.mismatch_at}"
        assert sink.count == total, f"{sink.count} of {total} bytes"
        growth = rss.peak - idle
        assert growth < 32 * MiB // KiB, f"RSS grew {growth} KiB (idle {idle}, peak {rss.peak}) for a 256 MiB frame"
    finally:
        bridge.stop()
        sink.close()


def test_frame_announcing_2_to_63_minus_1_bytes_is_streamed():
    """A frame header with the largest length RFC 6455 allows is accepted (max-frame-size permitting) and its
    payload streamed: the first 16 MiB reach the backend before the client goes away."""
    sent = 16 * MiB
    block = os.urandom(BLOCK)
    key = os.urandom(4)
    wire_block = masked(block, key)
    sink = Sink(block)
    bridge = Bridge("--max-frame-size", str((1 << 63) - 1), "127.0.0.1:0", f"127.0.0.1:{sink.port}")
    try:
        s = upgrade(bridge.port)
        s.sendall(frame_header((1 << 63) - 1, key))
        for _ in range(sent // BLOCK):
            s.sendall(wire_block)
        deadline = time.monotonic() + 30
        while sink.count < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        s.close()
        assert sink.count == sent, f"{sink.count} of {sent} bytes reached the backend"
        assert sink.mismatch_at is None, f"bytes differ from offset {sink.mismatch_at}"
        # the client left mid-frame: the bridge closes the backend within close-timeout (5 s)
        assert sink.eof.wait(15), "backend connection still open after the client left"
    finally:
        bridge.stop()
        sink.close()
