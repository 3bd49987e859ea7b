"""Upstreams for the gateway's connection tests: the fake provider (api.bench.fake_upstream) served
over TLS by hypercorn, which speaks HTTP/2 where the client offers it (ALPN), under a certificate
from a throwaway CA made here; a TCP front that drops the first connections it accepts before a
byte passes (a connection that fails to open) and relays the rest; and a server that reads a
request and hangs up without a word (a request that reached the upstream, then lost)."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

from api.bench import fake_upstream as fk


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """(the CA's certificate, the server's certificate, its key), PEM files in `directory`: a CA
    made for this run, and a certificate it signed for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokentill test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Thread(threading.Thread):
    """An asyncio server on a thread of its own: `serving()` runs until stop()."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        await self.serving(self._stopping)

    async def serving(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    def begin(self) -> None:
        self.start()
        if not self.ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")

    def stop(self) -> None:
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)
        self.join(timeout=10)


class TLSFake(_Thread):
    """The fake provider over TLS on 127.0.0.1:`port`, offering `alpn` (h2 first: HTTP/2 where the
    client offers it). Each call's `http_version` and peer (one per connection) are in `fake.calls`."""

    def __init__(self, port: int, cert: Path, key: Path, alpn: tuple[str, ...] = ("h2", "http/1.1"),
                 max_streams: int = 100) -> None:
        super().__init__()
        self.fake, self.port = fk.FakeUpstream(), port
        self.config = Config()
        self.config.bind = [f"127.0.0.1:{port}"]
        self.config.certfile, self.config.keyfile = str(cert), str(key)
        self.config.alpn_protocols = list(alpn)
        self.config.h2_max_concurrent_streams = max_streams
        self.config.keep_alive_timeout = 120  # longer than httpx keeps a connection idle (5 s)
        self.config.graceful_timeout = 1
        self.config.loglevel = "WARNING"
        self.config.accesslog = self.config.errorlog = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def serving(self, stop: asyncio.Event) -> None:
        server = asyncio.create_task(serve(self.fake, self.config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        self.ready.set()
        await server


class DroppingFront(_Thread):
    """A TCP front on 127.0.0.1:`port` for `target`: it closes the first `drops` connections it
    accepts before any byte passes (to a TLS client, a connection that failed to open: the request
    was never sent), and relays the others both ways. `accepted` counts the connections."""

    def __init__(self, port: int, target: tuple[str, int], drops: int) -> None:
        super().__init__()
        self.port, self.target, self.drops, self.accepted = port, target, drops, 0

    async def serving(self, stop: asyncio.Event) -> None:
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.ready.set()
        async with server:
            await stop.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted <= self.drops:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class HangingUp(_Thread):
    """A plain HTTP server on 127.0.0.1:`port` that reads each request whole, counts it in
    `requests`, and closes the connection without answering."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port, self.requests = port, 0
        self.bodies: list[bytes] = []

    async def serving(self, stop: asyncio.Event) -> None:
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.ready.set()
        async with server:
            await stop.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            self.bodies.append(await reader.readexactly(length))
            self.requests += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

