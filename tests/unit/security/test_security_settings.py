"""The security settings: TLS files and the reply-sender mapping read from the environment,
refused with a sentence when unusable; broker URLs masked. No broker, no certificates
(the files that must parse are tested in tests/integration/security)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from orchestrator.senders import ReplySenders, ReplyUsersError
from orchestrator.settings import Settings
from orchestrator.tls import (
    TlsError,
    TlsSettings,
    amqp_url_from_env,
    client_context,
    masked_url,
    url_user,
)
from participants.runtime import ParticipantSettings

CANARY = "CANARY-7f3a9b"
TLS_URL = "amqps://svc:pw@broker.example:5671/prod"


def test_without_tls_variables_the_url_is_left_exactly_as_given() -> None:
    url = "amqp://u:p@broker:5672/%2F?heartbeat=5"
    assert amqp_url_from_env({"SAGA_AMQP_URL": url}, "amqp://unused/") == url
    assert Settings.from_env({"SAGA_AMQP_URL": url}).amqp_url == url
    assert ParticipantSettings.from_env("alpha", {"SAGA_AMQP_URL": url}).amqp_url == url
    assert Settings.from_env({}).reply_senders is None


def test_a_client_certificate_without_its_key_is_refused_and_the_other_way_round() -> None:
    with pytest.raises(TlsError) as cert_only:
        TlsSettings.from_env({"SAGA_AMQP_CERT_FILE": "/etc/client.pem"})
    assert str(cert_only.value) == (
        "SAGA_AMQP_CERT_FILE is set but SAGA_AMQP_KEY_FILE is not: a client certificate "
        "needs both the certificate and its private key"
    )
    with pytest.raises(TlsError, match=r"^SAGA_AMQP_KEY_FILE is set but SAGA_AMQP_CERT_FILE"):
        TlsSettings.from_env({"SAGA_AMQP_KEY_FILE": "/etc/client.key"})


def test_a_file_that_does_not_exist_is_named_with_its_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    env = {"SAGA_AMQP_URL": TLS_URL, "SAGA_AMQP_CA_FILE": str(missing)}
    with pytest.raises(TlsError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == f"SAGA_AMQP_CA_FILE names {missing}, which does not exist"
    with pytest.raises(TlsError, match=r"^SAGA_AMQP_CA_FILE names .*, which does not exist$"):
        ParticipantSettings.from_env("alpha", env)


def test_a_file_that_is_not_pem_is_refused_with_its_variable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError) as caught:
        TlsSettings.from_env({"SAGA_AMQP_CA_FILE": str(junk)})
    assert str(caught.value).startswith(
        f"SAGA_AMQP_CA_FILE names {junk}, which holds no CA certificate in PEM format ("
    )
    with pytest.raises(TlsError, match=r"^SAGA_AMQP_CA_FILE names .*, which cannot be read"):
        TlsSettings.from_env({"SAGA_AMQP_CA_FILE": str(tmp_path)})  # a folder


def test_tls_files_with_a_plain_amqp_url_are_refused_rather_than_ignored(tmp_path: Path) -> None:
    with pytest.raises(TlsError) as caught:
        TlsSettings(ca_file=tmp_path / "ca.pem").applied_to(f"amqp://u:{CANARY}@host/")
    assert "is not an amqps:// URL" in str(caught.value)
    assert CANARY not in str(caught.value)
    assert "******" in str(caught.value)


def test_the_files_travel_in_the_url_as_aio_pikas_parameters() -> None:
    settings = TlsSettings(Path("/tls/ca b.pem"), Path("/tls/c.pem"), Path("/tls/k.pem"))
    url = settings.applied_to("amqps://svc:pw@broker:5671/prod?heartbeat=5")
    assert url.startswith("amqps://svc:pw@broker:5671/prod?heartbeat=5&cafile=")
    assert TlsSettings.from_url(url) == settings
    assert url_user(url) == "svc"
    assert url_user("amqp://broker/") == "guest"


def test_a_plain_url_has_no_tls_context_and_verification_cannot_be_switched_off() -> None:
    assert client_context("amqp://u:p@broker/") is None
    with pytest.raises(TlsError, match=r"no_verify_ssl.*not supported"):
        client_context(f"amqps://u:{CANARY}@broker/?no_verify_ssl=1")


def test_an_amqps_url_without_files_verifies_against_the_system_trust_store() -> None:
    context = client_context("amqps://u:p@broker/")
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{CANARY}@localhost:5672/",
        f"amqps://svc:{CANARY}@broker:5671/v?cafile=/ca.pem",
        f"amqp://svc:{CANARY}%40x@broker/",
    ],
)
def test_masked_urls_never_show_the_password(url: str) -> None:
    shown = masked_url(url)
    assert CANARY not in shown
    assert ":******@" in shown


def test_reply_users_parse_into_a_mapping() -> None:
    senders = ReplySenders.parse(" alpha = alpha-svc , beta=beta-svc,, ")
    assert senders == ReplySenders({"alpha": "alpha-svc", "beta": "beta-svc"})
    assert ReplySenders.parse("") is None
    assert ReplySenders.parse(" , ") is None
    env = {"SAGA_REPLY_USERS": "alpha=alpha-svc"}
    assert Settings.from_env(env).reply_senders == ReplySenders({"alpha": "alpha-svc"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alpha", "SAGA_REPLY_USERS has 'alpha', which is not participant=user"),
        ("alpha=", "SAGA_REPLY_USERS has 'alpha=', which is not participant=user"),
        ("=svc", "SAGA_REPLY_USERS has '=svc', which is not participant=user"),
        ("al pha=svc", "SAGA_REPLY_USERS names the participant 'al pha', which is not a"),
        ("a=x,a=y", "SAGA_REPLY_USERS maps participant 'a' twice, to 'x' and to 'y'"),
    ],
)
def test_malformed_reply_users_are_refused_with_a_sentence(raw: str, expected: str) -> None:
    with pytest.raises(ReplyUsersError) as caught:
        Settings.from_env({"SAGA_REPLY_USERS": raw})
    assert str(caught.value).startswith(expected)


def test_a_participant_missing_from_the_mapping_is_named() -> None:
    senders = ReplySenders({"alpha": "alpha-svc", "extra": "x"})
    senders.require({"alpha"})
    with pytest.raises(ReplyUsersError) as caught:
        senders.require({"alpha", "gamma", "beta"})
    assert str(caught.value) == (
        "SAGA_REPLY_USERS has no user for participant 'beta', 'gamma', which the saga "
        "definitions use; add beta=<its RabbitMQ user> to it"
    )
