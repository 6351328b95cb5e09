"""Certificates made at test time with the openssl CLI, TLS clients and TLS backends for the TLS tests.

Everything is EC P-256 (fast to generate). A `PKI` is a directory with one CA; it issues server and client
certificates with the names asked for.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from conftest import Conn, Backend, read_loop


def openssl(*args: str, cwd: Path | None = None, input: bytes | None = None) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=input, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")


@dataclass
class Issued:
    cert: Path  # leaf certificate followed by the CA (a chain)
    key: Path
    leaf: Path  # leaf alone

    def serial(self) -> int:
        out = subprocess.run(["openssl", "x509", "-in", str(self.leaf), "-noout", "-serial"], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().split("=", 1)[1], 16)


class PKI:
    def __init__(self, directory: Path, name: str = "Test CA"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca_key = self.dir / "ca.key"
        self.ca = self.dir / "ca.pem"
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.ca_key))
        openssl(
            "req", "-x509", "-new", "-key", str(self.ca_key), "-out", str(self.ca), "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )
        self.count = 0

    def issue(
        self,
        cn: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
        client: bool = False,
        days: int = 2,
        name: str | None = None,
        key_password: str | None = None,
    ) -> Issued:
        self.count += 1
        base = self.dir / (name or f"{cn.replace('*', 'star')}-{self.count}")
        key = base.with_suffix(".key")
        csr = base.with_suffix(".csr")
        leaf = base.with_suffix(".leaf.pem")
        chain = base.with_suffix(".pem")
        ext = base.with_suffix(".ext")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        san = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips] + [f"email:{e}" for e in emails]
        lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
        if san:
            lines.append("subjectAltName=" + ",".join(san))
        ext.write_text("\n".join(lines) + "\n")
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key), "-set_serial",
            str(int.from_bytes(os.urandom(8), "big")), "-out", str(leaf), "-days", str(days), "-extfile", str(ext),
        )
        chain.write_bytes(leaf.read_bytes() + self.ca.read_bytes())
        if key_password is not None:
            enc = base.with_suffix(".enc.key")
            openssl("pkcs8", "-topk8", "-in", str(key), "-out", str(enc), "-passout", f"pass:{key_password}", "-v2", "aes-256-cbc")
            key = enc
        return Issued(cert=chain, key=key, leaf=leaf)

    def server(self, name: str = "localhost", **kw) -> Issued:
        return self.issue(name, dns=(name, "localhost"), ips=("127.0.0.1",), **kw)

    def client(self, cn: str, **kw) -> Issued:
        return self.issue(cn, client=True, **kw)


def client_context(ca: Path | None = None, cert: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def tls_socket(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost", timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def peer_serial(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> int:
    with tls_socket(port, ctx, server_hostname) as s:
        der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True, check=True)
    return int(out.stdout.decode().strip().split("=", 1)[1], 16)


def peer_cn(port: int, ctx: ssl.SSLContext, server_hostname: str) -> str:
    with tls_socket(port, ctx, server_hostname) as s:
        der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "multiline"], input=der, capture_output=True, check=True)
    for line in out.stdout.decode().splitlines():
        if "commonName" in line:
            return line.split("=", 1)[1].strip()
    return ""


class TLSEchoBackend(Backend):
    """A TLS echo server (Python's ssl): records the SNI name each client sent and the client certificate."""

    def __init__(self, cert: Issued, *, client_ca: Path | None = None, banner: bytes = b""):
        self.server_names: list[str | None] = []
        self.client_certs: list[dict | None] = []
        self.handshake_errors: list[str] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(client_ca))

        def on_sni(sslobj, name, _ctx):
            self.server_names.append(name)

        ctx.sni_callback = on_sni
        self.ctx = ctx
        self.banner = banner
        super().__init__(self._handle, name="tls-echo")

    def _handle(self, c: Conn) -> None:
        try:
            s = self.ctx.wrap_socket(c.sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.handshake_errors.append(str(e))
            c.set_error(e)
            c.sock.close()
            return
        self.client_certs.append(s.getpeercert() or None)
        try:
            if self.banner:
                s.sendall(self.banner)
            while True:
                b = s.recv(65536)
                if not b:
                    c.set_eof()
                    break
                c.add(b)
                s.sendall(b)
        except (ssl.SSLError, OSError) as e:
            c.set_error(e)
        finally:
            try:
                s.close()
            except OSError:
                pass
