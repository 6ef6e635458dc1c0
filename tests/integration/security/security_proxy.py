"""A TLS-terminating proxy in front of the test broker, so TLS is tested without touching
the broker's configuration: clients speak TLS to the proxy, which forwards the bytes in
plain AMQP to RabbitMQ. With ``require_client_cert`` it is a mutual-TLS endpoint (a
client without a certificate the CA signed fails the handshake), as RabbitMQ is with
``ssl_options.verify = verify_peer`` and ``fail_if_no_peer_cert = true``."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType

from .security_certs import Certificates


def server_context(certs: Certificates, *, require_client_cert: bool) -> ssl.SSLContext:
    """The proxy's side: the localhost certificate, and client verification when asked."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return context


class TlsProxy:
    """``async with TlsProxy(context, host, port) as proxy``: listens on ``proxy.port``."""

    def __init__(self, context: ssl.SSLContext, upstream_host: str, upstream_port: int) -> None:
        self._context = context
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.client_names: list[str] = []
        """The common name of each client certificate presented ('' for none)."""

    async def __aenter__(self) -> TlsProxy:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, ssl=self._context, ssl_handshake_timeout=10
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = writer.get_extra_info("peercert") or {}
        names = [
            value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"
        ]
        self.client_names.append(names[0] if names else "")
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for end in (up_writer, writer):
                end.close()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
