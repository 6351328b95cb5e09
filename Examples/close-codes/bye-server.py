#!/usr/bin/env python3
"""A TCP backend that greets and hangs up: the close-codes example's "backend closes" case.

    python3 Examples/close-codes/bye-server.py [--host 127.0.0.1] [--port 7001]

For every connection it writes `bye\n` and closes the connection. Prints `bye-server listening on HOST:PORT`
once it accepts connections; SIGINT and SIGTERM stop it with exit status 0. Standard library only.
"""

import argparse
import asyncio
import signal


async def serve(host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"bye\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"bye-server listening on {bound[0]}:{bound[1]}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description="TCP server that writes 'bye' and closes each connection.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
