"""TLS to the broker, through a TLS-terminating proxy in front of the test broker (its own
configuration untouched): ``amqps://`` with the right CA and client certificate runs a
saga and reaches the DLQ tool and ``saga start``; a wrong CA, a host name the certificate
is not for, and a missing client certificate are refused, each with one sentence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from broker import RabbitService
from harness import Rig
from testapp import trio_input
from yarl import URL

from orchestrator.core.state import SagaStatus
from orchestrator.dlq import DeadLetterQueues
from orchestrator.settings import Settings
from orchestrator.tls import TlsError, TlsSettings
from orchestrator.transport import TransportUnavailable
from orchestrator.transports.amqp import AmqpTransport
from participants.runtime import ParticipantSettings

from .security_certs import Certificates
from .security_proxy import TlsProxy, server_context
from .security_rig import saga_cli, vhost_of

CANARY = "CANARY-7f3a9b"


async def _proxy(
    rabbit: RabbitService, certs: Certificates, *, mutual: bool
) -> AsyncIterator[TlsProxy]:
    upstream = URL(await rabbit.url())
    context = server_context(certs, require_client_cert=mutual)
    async with TlsProxy(context, upstream.host or "127.0.0.1", upstream.port or 5672) as proxy:
        yield proxy


@pytest.fixture
async def mtls_proxy(
    rabbit_service: RabbitService, certificates: Certificates
) -> AsyncIterator[TlsProxy]:
    """A proxy that requires a client certificate signed by the test CA."""
    async for proxy in _proxy(rabbit_service, certificates, mutual=True):
        yield proxy


@pytest.fixture
async def tls_proxy(
    rabbit_service: RabbitService, certificates: Certificates
) -> AsyncIterator[TlsProxy]:
    """A proxy that requires no client certificate."""
    async for proxy in _proxy(rabbit_service, certificates, mutual=False):
        yield proxy


def _tls_url(amqp_url: str, proxy: TlsProxy, *, host: str = "localhost") -> str:
    plain = URL(amqp_url)
    return str(plain.with_scheme("amqps").with_host(host).with_port(proxy.port))


def _env(
    url: str, certs: Certificates, *, client: bool = True, ca: Path | None = None
) -> dict[str, str]:
    env = {"SAGA_AMQP_URL": url, "SAGA_AMQP_CA_FILE": str(ca or certs.ca)}
    if client:
        env["SAGA_AMQP_CERT_FILE"] = str(certs.client_cert)
        env["SAGA_AMQP_KEY_FILE"] = str(certs.client_key)
    return env


async def test_amqps_with_the_right_ca_and_client_certificate_runs_a_saga(
    tmp_path: Path, amqp_url: str, mtls_proxy: TlsProxy, certificates: Certificates
) -> None:
    env = _env(_tls_url(amqp_url, mtls_proxy), certificates)
    url = Settings.from_env(env).amqp_url
    assert ParticipantSettings.from_env("alpha", env).amqp_url == url
    assert TlsSettings.from_url(url) == TlsSettings(
        certificates.ca, certificates.client_cert, certificates.client_key
    )
    rig = await Rig.create(
        tmp_path, url, f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}",
        f"sqlite+aiosqlite:///{tmp_path / 'participants.db'}",
    )  # fmt: skip
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        [saga_id] = await rig.start([trio_input()])
        record = (await rig.wait_terminal([saga_id]))[saga_id]
        assert record.state.status is SagaStatus.COMPLETED

        # `saga start` and the DLQ tool build their connections from the same settings.
        definitions = {"SAGA_DEFINITIONS": str(rig.definitions_dir)}
        started = await saga_cli(
            "start", "trio", "--input", json.dumps(trio_input()), "--json", env=env | definitions
        )
        assert started.status == 0, started.stderr
        assert json.loads(started.stdout)["created"] is True
        listed = await saga_cli("dlq", "list", "--json", env=env | definitions)
        assert listed.status == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        async with await DeadLetterQueues.connect(url) as dlqs:
            assert await dlqs.exists("saga.orchestrator.replies.dlq")
    finally:
        await rig.close()
    # Every connection went through the proxy, each with the test client's certificate:
    # orchestrator and participants (two each), the start client, the CLI and the DLQ tool.
    assert len(mtls_proxy.client_names) >= 2 * 4 + 1 + 2 + 1
    assert set(mtls_proxy.client_names) == {certificates.client_name}


async def test_a_broker_certificate_from_another_ca_is_refused_with_a_sentence(
    amqp_url: str, tls_proxy: TlsProxy, certificates: Certificates, tmp_path: Path
) -> None:
    url = _tls_url(amqp_url, tls_proxy).replace(":guest@", f":{CANARY}@")
    wrong = Settings.from_env(_env(url, certificates, client=False, ca=certificates.other_ca))
    with pytest.raises(TransportUnavailable) as caught:
        await AmqpTransport(wrong.amqp_url, name="test-wrong-ca").connect()
    message = str(caught.value)
    assert message.startswith("cannot connect to RabbitMQ at amqps://guest:******@localhost:")
    assert "the broker's certificate was not accepted (" in message
    assert "SAGA_AMQP_CA_FILE must name the CA that signed it" in message
    assert CANARY not in message

    # No CA file: the system's trust store, which does not know the test CA either.
    with pytest.raises(TransportUnavailable, match="certificate was not accepted"):
        await AmqpTransport(url, name="test-system-ca").connect()

    # From the command line: the sentence, no traceback, the password masked.
    env = _env(url, certificates, client=False, ca=certificates.other_ca)
    env["SAGA_DEFINITIONS"] = str(tmp_path / "none")
    done = await saga_cli("start", "trio", "--input", "{}", "--timeout", "5s", env=env)
    assert done.status == 1
    # The driver logs its own line first (the CLI leaves logging unconfigured); ours ends it.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot connect to RabbitMQ at amqps://guest:******@")
    assert "certificate was not accepted" in last
    assert "Traceback" not in done.stderr
    assert CANARY not in done.stderr + done.stdout


async def test_a_host_the_certificate_is_not_for_is_refused(
    amqp_url: str, tls_proxy: TlsProxy, certificates: Certificates
) -> None:
    # The server certificate names localhost only.
    url = _tls_url(amqp_url, tls_proxy, host="127.0.0.1")
    settings = Settings.from_env(_env(url, certificates, client=False))
    with pytest.raises(TransportUnavailable) as caught:
        await AmqpTransport(settings.amqp_url, name="test-wrong-host").connect()
    assert "mismatch, certificate is not valid for '127.0.0.1'" in str(caught.value)


async def test_without_a_client_certificate_mutual_tls_refuses_the_connection(
    amqp_url: str, mtls_proxy: TlsProxy, certificates: Certificates
) -> None:
    settings = Settings.from_env(_env(_tls_url(amqp_url, mtls_proxy), certificates, client=False))
    with pytest.raises(TransportUnavailable) as caught:
        await AmqpTransport(settings.amqp_url, name="test-no-client-cert").connect()
    message = str(caught.value)
    assert message.startswith("cannot connect to RabbitMQ at amqps://guest:******@localhost:")
    assert message.endswith(
        "if it requires a client certificate, set SAGA_AMQP_CERT_FILE and SAGA_AMQP_KEY_FILE"
    )
    assert mtls_proxy.client_names == []  # no handshake completed


async def test_unusable_certificate_files_are_refused_before_connecting(
    certificates: Certificates,
) -> None:
    url = "amqps://svc:pw@localhost:5671/v"
    base = {"SAGA_AMQP_URL": url, "SAGA_AMQP_CA_FILE": str(certificates.ca)}
    cert = str(certificates.client_cert)

    stray = base | {"SAGA_AMQP_CERT_FILE": cert, "SAGA_AMQP_KEY_FILE": str(certificates.stray_key)}
    with pytest.raises(TlsError) as caught:
        Settings.from_env(stray)
    assert str(caught.value) == (
        f"SAGA_AMQP_KEY_FILE names {certificates.stray_key}, which is not the private key of "
        f"the certificate {cert} named by SAGA_AMQP_CERT_FILE"
    )

    locked = base | {
        "SAGA_AMQP_CERT_FILE": cert,
        "SAGA_AMQP_KEY_FILE": str(certificates.encrypted_key),
    }
    with pytest.raises(TlsError, match="a private key protected by a passphrase"):
        ParticipantSettings.from_env("alpha", locked)

    key_as_cert = base | {
        "SAGA_AMQP_CERT_FILE": str(certificates.client_key),
        "SAGA_AMQP_KEY_FILE": str(certificates.client_key),
    }
    with pytest.raises(TlsError) as caught:
        Settings.from_env(key_as_cert)
    assert str(caught.value).startswith(
        f"SAGA_AMQP_CERT_FILE names {certificates.client_key}, which holds no certificate in PEM"
    )

    cert_as_key = base | {"SAGA_AMQP_CERT_FILE": cert, "SAGA_AMQP_KEY_FILE": cert}
    with pytest.raises(TlsError, match=r"^SAGA_AMQP_KEY_FILE names .*, which holds no private key"):
        Settings.from_env(cert_as_key)

    with pytest.raises(
        TlsError, match=r"^SAGA_AMQP_CA_FILE names .*, which holds no CA certificate"
    ):
        Settings.from_env(base | {"SAGA_AMQP_CA_FILE": str(certificates.client_key)})

    good = Settings.from_env(
        base | {"SAGA_AMQP_CERT_FILE": cert, "SAGA_AMQP_KEY_FILE": str(certificates.client_key)}
    )
    assert TlsSettings.from_url(good.amqp_url).cert_file == certificates.client_cert
    assert vhost_of(good.amqp_url) == "v"
