#!/usr/bin/env python3
"""The load side of scripts/soak: holds many WebSocket sessions open through the bridge and echoes on each.

    soak_client.py URL --sessions N --hold SECONDS --interval SECONDS --bridge-pid PID

Opens N sessions (at most 200 handshakes in flight), holds them all for --hold seconds while each sends a
32-byte message every --interval seconds (jittered) and checks the echo, then closes each with 1000 and checks
that the bridge answers 1000. Samples the bridge's RSS and open descriptors before, at full load and after.
Prints a report and exits 1 on any error (a refused or failed handshake, a wrong or missing echo, a session
closed early, a close code other than 1000).
"""

import argparse
import asyncio
import os
import random
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self):
        self.opened = 0
        self.echoes = 0
        self.closed_ok = 0
        self.silent = 0  # sessions that completed no echo during the hold
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)
        else:
            self.errors[-1] = f"... and more ({text})"


async def session(index, url, stats, gate, all_open, stop, interval):
    try:
        async with gate:
            ws = await connect(url, open_timeout=60, close_timeout=20, ping_interval=None, compression=None, max_size=None)
        stats.opened += 1
    except Exception as e:  # noqa: BLE001
        stats.error(f"session {index}: handshake failed: {e!r}")
        all_open.release_one()
        return
    all_open.release_one()
    rng = random.Random(index)
    mine = 0
    try:
        await all_open.wait()
        delay = interval * rng.uniform(0.0, 1.0)  # spread the first echoes over one interval
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                break
            except asyncio.TimeoutError:
                pass
            payload = f"{index:06d}:{stats.echoes:012d}:".encode().ljust(32, b"x")
            await ws.send(payload)
            got = b""
            while len(got) < len(payload):
                got += await asyncio.wait_for(ws.recv(), timeout=30)
            if got != payload:
                stats.error(f"session {index}: echo differs")
                return
            stats.echoes += 1
            mine += 1
            delay = interval * rng.uniform(0.5, 1.5)
        if mine == 0:
            stats.silent += 1
        await ws.close(code=1000)
        if ws.close_code == 1000:
            stats.closed_ok += 1
        else:
            stats.error(f"session {index}: closed with {ws.close_code} {ws.close_reason!r}")
    except ConnectionClosed as e:
        stats.error(f"session {index}: closed early: {e!r}")
    except Exception as e:  # noqa: BLE001
        stats.error(f"session {index}: {e!r}")


class Countdown:
    def __init__(self, n: int):
        self.left = n
        self.event = asyncio.Event()
        if n == 0:
            self.event.set()

    def release_one(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--sessions", type=int, default=8000)
    ap.add_argument("--hold", type=float, default=60)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--bridge-pid", type=int, required=True)
    args = ap.parse_args()
    pid = args.bridge_pid

    idle_rss, idle_fds = rss_kib(pid), fds(pid)
    stats = Stats()
    gate = asyncio.Semaphore(200)
    all_open = Countdown(args.sessions)
    stop = asyncio.Event()
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(session(i, args.url, stats, gate, all_open, stop, args.interval))
        for i in range(args.sessions)
    ]
    await all_open.wait()
    opened_in = time.monotonic() - t0
    print(f"soak: {stats.opened} of {args.sessions} sessions open after {opened_in:.1f} s", flush=True)
    peak_rss, peak_fds = rss_kib(pid), fds(pid)
    held_from = time.monotonic()
    while time.monotonic() - held_from < args.hold:
        await asyncio.sleep(min(5.0, args.hold))  # the hold itself: sessions echo meanwhile
        peak_rss, peak_fds = max(peak_rss, rss_kib(pid)), max(peak_fds, fds(pid))
        print(f"soak: {time.monotonic() - held_from:5.1f} s held, {stats.echoes} echoes, "
              f"bridge RSS {rss_kib(pid) // 1024} MiB, {fds(pid)} fds, {len(stats.errors)} errors", flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    after_rss = rss_kib(pid)

    per_session = (peak_rss - idle_rss) / max(1, stats.opened)
    print()
    print(f"sessions opened       {stats.opened} of {args.sessions} (in {opened_in:.1f} s)")
    print(f"held                  {args.hold:.0f} s, {stats.echoes} echoes checked")
    print(f"closed with 1000      {stats.closed_ok}")
    print(f"sessions with no echo {stats.silent}")
    print(f"bridge RSS            idle {idle_rss / 1024:.1f} MiB, held {peak_rss / 1024:.1f} MiB, "
          f"after {after_rss / 1024:.1f} MiB")
    print(f"memory per session    {per_session:.1f} KiB (RSS growth / sessions; relay: client and backend leg)")
    print(f"bridge descriptors    idle {idle_fds}, held {peak_fds}")
    ok = (
        not stats.errors
        and stats.opened == args.sessions
        and stats.closed_ok == args.sessions
        and stats.silent == 0  # every session echoed during the hold
    )
    for e in stats.errors:
        print(f"  error: {e}")
    print(f"soak: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
