#!/usr/bin/env python3
"""Runs one step of scripts/test and makes sure nothing it started outlives it.

    run_step.py --name NAME --kind setup|check|tests --timeout SECONDS --log FILE --record FILE
                [--junit FILE] [--quiet] -- COMMAND [ARG...]

The step's output goes to FILE (and to stdout unless --quiet). This process makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER), so every process the step starts stays its descendant even when it starts a session of
its own (`start_new_session`, setsid, double-forking daemons such as `redis-server --daemonize yes`): when the
step's command exits, or when its deadline passes, every descendant still alive gets SIGTERM, then SIGKILL 10 s
later, and is reaped. Those still alive when the command exited are listed as left running.

The record (JSON) says: name, kind, junit, status (ok | failed | timeout), rc, seconds, left_running. The exit
status is the command's, or 124 when it timed out. scripts/lib/summary.py reads the records.
"""

import argparse
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 10


def make_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def children_map() -> dict:
    """pid -> parent pid of every process (a snapshot of /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces or parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 2 and fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int) -> list:
    parents = children_map()
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                found.append(pid)
                frontier.append(pid)
    return found


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = []
    text = " ".join(argv) or "?"
    return f"{pid} {text[:160]}"


def reap_all() -> dict:
    """Reaps every child that has ended (as the subreaper, orphans of the step are ours); pid -> exit code."""
    ended = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended[pid] = os.waitstatus_to_exitcode(status)


def kill_descendants() -> None:
    """SIGTERM to every descendant, SIGKILL to those still there after the grace period; all reaped."""
    me = os.getpid()
    deadline = time.monotonic() + GRACE_SECONDS
    sig = signal.SIGTERM
    while True:
        reap_all()
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            if time.monotonic() >= deadline + GRACE_SECONDS:
                # Unkillable (uninterruptible sleep): say so instead of waiting for ever.
                print("scripts/test: still alive after SIGKILL: " + ", ".join(describe(p) for p in pids))
                return
            time.sleep(0.05)
            continue
        if time.monotonic() >= deadline:
            sig = signal.SIGKILL
            continue
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--kind", choices=["setup", "check", "tests"], required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--junit")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")

    make_subreaper()
    # Our own SIGTERM/SIGINT (the run is being stopped) ends the step the same way as its deadline.
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.monotonic()
    log = open(args.log, "wb")
    out = None if args.quiet else sys.stdout.buffer
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def copy_output() -> None:
        # Ends when every holder of the pipe's write end is gone: the descendants are killed below.
        while True:
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                return
            log.write(chunk)
            log.flush()
            if out is not None:
                out.write(chunk)
                out.flush()

    copier = threading.Thread(target=copy_output, daemon=True)
    copier.start()

    # As the subreaper, this process inherits every orphan of the step: reap them as they end (a step may check
    # that what it stopped is gone, and a zombie still counts as there), and take the command's own status then.
    rc = None
    pidfd = os.pidfd_open(child.pid)
    deadline = started + args.timeout
    timed_out = False
    while rc is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if stopping.is_set():
            break
        select.select([pidfd], [], [], min(left, 0.1))
        rc = reap_all().get(child.pid)
    os.close(pidfd)

    left_running, ended = [], []
    if rc is None:
        # Timed out or stopped: the command itself is one of the descendants to end.
        ended = [describe(pid) for pid in descendants(os.getpid())]
        kill_descendants()
        rc = 124 if timed_out else 143
    else:
        child.returncode = rc
        left_running = [describe(pid) for pid in descendants(os.getpid())]
        kill_descendants()
    copier.join(timeout=5)
    seconds = time.monotonic() - started

    note = ""
    if timed_out:
        note = f"\nscripts/test: step {args.name} timed out after {args.timeout:.0f} s; its {len(ended)} process(es) killed:\n"
    elif stopping.is_set():
        note = f"\nscripts/test: step {args.name} was stopped; its {len(ended)} process(es) killed:\n"
    note += "".join(f"  {line}\n" for line in ended)
    if left_running:
        note += f"scripts/test: step {args.name} left {len(left_running)} process(es) running, killed now:\n"
        note += "".join(f"  {line}\n" for line in left_running)
    if note:
        log.write(note.encode())
        sys.stdout.write(note)
        sys.stdout.flush()
    log.close()

    status = "ok" if rc == 0 else ("timeout" if timed_out else "failed")
    record = {
        "name": args.name,
        "kind": args.kind,
        "junit": args.junit,
        "status": status,
        "rc": rc,
        "seconds": round(seconds, 1),
        "timeout": args.timeout,
        "left_running": left_running,
        "log": args.log,
    }
    with open(args.record, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())
