#!/usr/bin/env python3
"""A TCP echo server behind TLS, with a certificate from its own CA (certs/backend-ca.pem) for the name
echo.internal: the kind of backend websockify's --ssl-target cannot reach (websockify#506).

    python3 Examples/tls/tls-echo.py [PORT]      (default 7443, on 127.0.0.1)
"""

import os
import socket
import ssl
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 7443


def serve(conn: ssl.SSLSocket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass


def main() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(HERE, "certs", "echo-internal.pem"), os.path.join(HERE, "certs", "echo-internal.key"))
    listener = socket.create_server(("127.0.0.1", PORT))
    print(f"TLS echo on 127.0.0.1:{PORT} (echo.internal)", flush=True)
    while True:
        raw, _ = listener.accept()
        try:
            conn = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
