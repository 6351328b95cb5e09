"""permessage-deflate with the browsers' own WebSocket (docs/behaviour.md, "Compression"), in Chromium and in
Firefox: both offer permessage-deflate on every connection (Chromium with `client_max_window_bits`, Firefox ESR
bare). Against a target with `compression: deflate` the page sees the extension negotiated (`WebSocket.extensions`,
which differs between the two as their offers do) and every message comes back
byte-exact (text with non-ASCII characters, binary of every byte value, up to 1 MiB, through the echo target and a
TCP relay); against a target without it nothing is negotiated and the same messages come back the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ARTIFACTS, ROOT, WAIT

LISTENING = re.compile(r"listening on [^ ]+:(\d+)")

# Runs in the page: messages of several sizes, each checked as it comes back; the result in window.__result.
ROUND_TRIPS = r"""
const [url, relay] = arguments;
window.__result = null;
const sizes = [0, 1, 125, 126, 1000, 65535, 65536, 300000, 1 << 20];
function binary(n, seed) {
  const a = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; a[i] = (i % 7 === 0) ? (x >>> 24) : (i & 0xff); }
  return a;
}
function text(n) {
  let s = "";
  for (let i = 0; s.length < n; i++) s += `[${i}] console line ü€😀 ${i * 31}\n`;
  return s.slice(0, n);
}
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const expected = [];
let received = relay ? new Uint8Array(0) : null;
let total = 0;
ws.onopen = () => {
  for (const n of sizes) {
    const b = binary(n, n + 1);
    if (relay) { expected.push(b); total += n; ws.send(b); continue; }
    expected.push(b); ws.send(b);
    const t = text(n); expected.push(t); ws.send(t);
  }
};
function same(a, b) {
  if (typeof a === "string" || typeof b === "string") return a === b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
ws.onmessage = (event) => {
  const data = typeof event.data === "string" ? event.data : new Uint8Array(event.data);
  if (relay) {
    // A byte stream: the bytes come back in messages of the backend's reads.
    const joined = new Uint8Array(received.length + data.length);
    joined.set(received); joined.set(data, received.length); received = joined;
    if (received.length < total) return;
    let offset = 0, ok = received.length === total;
    for (const b of expected) { ok = ok && same(received.subarray(offset, offset + b.length), b); offset += b.length; }
    window.__result = { extensions: ws.extensions, ok, count: received.length };
    ws.close(1000);
    return;
  }
  const want = expected.shift();
  if (!same(data, want)) {
    window.__result = { extensions: ws.extensions, ok: false, count: expected.length, bad: String(want).length };
    ws.close(1000);
  } else if (expected.length === 0) {
    window.__result = { extensions: ws.extensions, ok: true, count: sizes.length * 2 };
    ws.close(1000);
  }
};
ws.onclose = (event) => { if (!window.__result) window.__result = { closed: event.code, reason: event.reason }; };
"""


@pytest.fixture
def compressing_bridge():
    """The release binary on a port of the kernel's, with a TCP echo backend, and targets with and without
    compression."""
    binary = os.environ.get("WSBRIDGE_BIN", str(ROOT / ".build" / "release" / "wsbridge"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wsbridge-compression-"))
    procs: list[subprocess.Popen] = []

    def started(args: list[str], name: str, pattern: re.Pattern) -> tuple[subprocess.Popen, int]:
        log_path = ARTIFACTS / f"compression.{name}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            match = pattern.search(log_path.read_text())
            if match:
                return proc, int(match.group(1))
            time.sleep(0.1)  # polling the log file the process writes
        raise AssertionError(f"{name} did not start: {log_path.read_text()[-2000:]}")

    try:
        _, echo_port = started([sys.executable, "Examples/tcp-echo.py", "--host", "127.0.0.1", "--port", "0"],
                               "tcp-echo", re.compile(r"listening on [^ ]+:(\d+)"))
        targets = work / "targets.yaml"
        targets.write_text(
            "targets:\n"
            "  deflate: { echo: true, compression: deflate }\n"
            "  plain: { echo: true }\n"
            f"  relay: {{ backend: '127.0.0.1:{echo_port}', compression: deflate }}\n"
        )
        _, port = started([binary, "--targets", str(targets), "--metrics-listen", "off", "127.0.0.1:0"],
                          "wsbridge", LISTENING)
        yield port
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def round_trips(browser, url: str, relay: bool = False) -> dict:
    # A page from a file, as the examples are opened (Chromium's local-network checks refuse about:blank).
    browser.get((ROOT / "Examples" / "echo.html").as_uri())
    browser.execute_script(ROUND_TRIPS, url, relay)
    return WebDriverWait(browser, WAIT * 3, poll_frequency=0.2).until(
        lambda b: b.execute_script("return window.__result;"), "the round trips did not finish"
    )


def test_browser_sessions_are_byte_exact_with_compression_on_and_off(compressing_bridge, any_browser):
    port = compressing_bridge
    # Chromium offers `client_max_window_bits`, and is asked to stay within 4 KiB; Firefox ESR offers the bare
    # extension, and gets it bare (the bridge then inflates with a 32 KiB window).
    negotiated = {
        "chromium": "permessage-deflate; client_max_window_bits=12",
        "firefox": "permessage-deflate",
    }[any_browser.engine]
    result = round_trips(any_browser, f"ws://127.0.0.1:{port}/?token=deflate")
    assert result == {"extensions": negotiated, "ok": True, "count": 18}, result
    result = round_trips(any_browser, f"ws://127.0.0.1:{port}/?token=plain")
    assert result == {"extensions": "", "ok": True, "count": 18}, result
    result = round_trips(any_browser, f"ws://127.0.0.1:{port}/?token=relay", relay=True)
    assert result["extensions"] == negotiated, result
    assert result["ok"] is True, result
