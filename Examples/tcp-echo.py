#!/usr/bin/env python3
"""A tiny TCP echo server: the backend of wsbridge's Quick start.

    python3 Examples/tcp-echo.py [--host 127.0.0.1] [--port 7000]

Every byte a client sends is written back.  When the client shuts down its
write side (EOF), the server finishes echoing what it has read, then shuts
down its own write side, so half-close can be seen end to end.  It stops
reading from a client that does not read its echoes (backpressure), as a
real backend would.

Prints one line, `echo listening on HOST:PORT`, once it accepts connections
(with the real port when --port 0 is given).  SIGINT and SIGTERM stop it
cleanly with exit status 0.  Standard library only, Python 3.8 or newer.
"""

import argparse
import asyncio
import os
import signal
import sys

READ_SIZE = 64 * 1024


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:  # the client shut down its write side
                break
            writer.write(data)
            await writer.drain()  # wait while the client does not read
        if writer.can_write_eof():
            writer.write_eof()  # half-close: our write side, after every echo
    except (ConnectionError, OSError):
        pass  # a client that resets is nothing to report
    except asyncio.CancelledError:  # shutting down: do not wait for a peer that does not read
        writer.transport.abort()
        raise
    finally:
        writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


def display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(host: str, port: int) -> None:
    connections = set()

    async def handle(reader, writer):
        task = asyncio.current_task()
        connections.add(task)
        try:
            await echo(reader, writer)
        except asyncio.CancelledError:
            pass  # shutdown; ending quietly keeps asyncio from logging it
        finally:
            connections.discard(task)

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    bound = server.sockets[0].getsockname()
    print(f"echo listening on {display(bound[0], bound[1])}", flush=True)

    await stop.wait()
    server.close()
    for task in list(connections):
        task.cancel()
    await asyncio.gather(*connections, return_exceptions=True)
    await server.wait_closed()
    print("echo stopped", file=sys.stderr, flush=True)


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return port


def main() -> int:
    parser = argparse.ArgumentParser(description="TCP echo server with half-close (wsbridge example backend).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=7000, help="port to listen on, 0 for any free port (default 7000)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except OSError as error:  # e.g. the port is already in use
        reason = os.strerror(error.errno) if (error.errno or 0) > 0 else (error.strerror or str(error))
        print(f"echo: cannot listen on {display(args.host, args.port)}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
