"""TLS for every AMQP connection the product opens, and masking of broker URLs.

The TLS settings (``SAGA_AMQP_CA_FILE``, ``SAGA_AMQP_CERT_FILE``, ``SAGA_AMQP_KEY_FILE``)
are checked once, at the entry point, and then travel inside the broker URL as the query
parameters aio-pika itself understands (``cafile``, ``certfile``, ``keyfile``). The URL is
what every connection of the product is built from (the services, ``saga start``, the DLQ
tool, the DLQ depth gauge), so none of them can forget the CA or the client certificate;
and a URL alone reproduces a connection exactly.

A connection over ``amqps://`` always verifies the broker: its certificate must chain to
the CA file (or to the system's trust store when none is given) and name the host of the
URL. There is deliberately no way to turn verification off.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from yarl import URL

from orchestrator.errors import SagaError

__all__ = [
    "CA_FILE_VARIABLE",
    "CERT_FILE_VARIABLE",
    "KEY_FILE_VARIABLE",
    "TlsError",
    "TlsSettings",
    "amqp_url_from_env",
    "client_context",
    "masked_url",
    "url_user",
]

CA_FILE_VARIABLE = "SAGA_AMQP_CA_FILE"
CERT_FILE_VARIABLE = "SAGA_AMQP_CERT_FILE"
KEY_FILE_VARIABLE = "SAGA_AMQP_KEY_FILE"
URL_VARIABLE = "SAGA_AMQP_URL"

_CA_PARAM = "cafile"
_CERT_PARAM = "certfile"
_KEY_PARAM = "keyfile"
_MASK = "******"


class TlsError(SagaError):
    """A TLS setting cannot be used: a file is missing or unreadable, or settings clash."""


@dataclass(frozen=True)
class TlsSettings:
    """Which CA to trust and which client certificate to present (mutual TLS)."""

    ca_file: Path | None = None
    """PEM bundle of the CAs that may sign the broker's certificate; None: the system's."""
    cert_file: Path | None = None
    """PEM client certificate, for a broker that requires one; always with ``key_file``."""
    key_file: Path | None = None
    """The unencrypted PEM private key of ``cert_file``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TlsSettings:
        """Read and check the ``SAGA_AMQP_*_FILE`` variables (a sentence on any mistake)."""
        settings = cls(
            ca_file=_path(environ, CA_FILE_VARIABLE),
            cert_file=_path(environ, CERT_FILE_VARIABLE),
            key_file=_path(environ, KEY_FILE_VARIABLE),
        )
        settings.check(
            ca_name=CA_FILE_VARIABLE, cert_name=CERT_FILE_VARIABLE, key_name=KEY_FILE_VARIABLE
        )
        return settings

    @classmethod
    def from_url(cls, url: str) -> TlsSettings:
        """The settings a URL carries (see the module docstring)."""
        query = URL(url).query
        return cls(
            ca_file=_query_path(query.get(_CA_PARAM)),
            cert_file=_query_path(query.get(_CERT_PARAM)),
            key_file=_query_path(query.get(_KEY_PARAM)),
        )

    @property
    def configured(self) -> bool:
        """True when any of the three files is set."""
        return any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    def check(
        self,
        *,
        ca_name: str = f"the URL's {_CA_PARAM}",
        cert_name: str = f"the URL's {_CERT_PARAM}",
        key_name: str = f"the URL's {_KEY_PARAM}",
    ) -> None:
        """Refuse, with a sentence naming the setting and the file, what would fail later:
        half a client certificate, a missing file, a file that is not PEM, a key that does
        not belong to its certificate, or a key protected by a passphrase."""
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = (
                (cert_name, key_name) if self.cert_file is not None else (key_name, cert_name)
            )
            raise TlsError(
                f"{given} is set but {missing} is not: a client certificate needs both "
                "the certificate and its private key"
            )
        if self.ca_file is not None:
            _load_ca(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self.ca_file, ca_name)
        if self.cert_file is not None and self.key_file is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # A certificate file must parse on its own first, so that a failure of the pair
            # below can be blamed on the key (or on the two not matching).
            _load_ca(context, self.cert_file, cert_name, what="certificate")
            _load_pair(context, self.cert_file, self.key_file, cert_name, key_name)

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate and host name."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file is not None:
            _load_ca(context, self.ca_file, f"the CA file {self.ca_file}")
        if self.cert_file is not None and self.key_file is not None:
            _load_pair(
                context,
                self.cert_file,
                self.key_file,
                f"the client certificate {self.cert_file}",
                f"the client key {self.key_file}",
            )
        # create_default_context already sets both; stated so that no later edit loosens it.
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def applied_to(self, url: str) -> str:
        """``url`` carrying these settings; refused for a URL that is not ``amqps://``."""
        if not self.configured:
            return url
        parsed = URL(url)
        if parsed.scheme != "amqps":
            raise TlsError(
                f"TLS files are set, but {URL_VARIABLE} ({masked_url(url)}) is not an "
                "amqps:// URL; use amqps:// (RabbitMQ's TLS port is 5671 by default) so "
                "that the connection is encrypted"
            )
        query = dict(parsed.query)
        for key, value in (
            (_CA_PARAM, self.ca_file),
            (_CERT_PARAM, self.cert_file),
            (_KEY_PARAM, self.key_file),
        ):
            if value is not None:
                query[key] = str(value)
        return str(parsed.with_query(query))


def amqp_url_from_env(environ: Mapping[str, str], default: str) -> str:
    """``SAGA_AMQP_URL`` (or ``default``) with the TLS files of the environment applied."""
    url = environ.get(URL_VARIABLE, default)
    return TlsSettings.from_env(environ).applied_to(url)


def client_context(url: str) -> ssl.SSLContext | None:
    """The verifying TLS context for an ``amqps://`` URL, None for plain ``amqp://``."""
    parsed = URL(url)
    if parsed.scheme != "amqps":
        return None
    if parsed.query.get("no_verify_ssl", "0") != "0":
        raise TlsError(
            f"{masked_url(url)} asks not to verify the broker's certificate (no_verify_ssl), "
            f"which is not supported; name the CA that signed it in {CA_FILE_VARIABLE}"
        )
    settings = TlsSettings.from_url(url)
    settings.check()
    return settings.context()


def url_user(url: str) -> str:
    """The user a connection to ``url`` logs in as (RabbitMQ's ``guest`` when none is given)."""
    return URL(url).user or "guest"


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``******``, fit for logs and error messages."""
    try:
        parsed = URL(url)
    except ValueError:
        return "(an unparseable URL)"
    if parsed.password is None:
        return url
    return str(parsed.with_password(_MASK))


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = environ.get(name, "").strip()
    return Path(raw) if raw else None


def _query_path(raw: str | None) -> Path | None:
    return Path(raw) if raw else None


def _refuse_passphrase() -> NoReturn:
    raise _Encrypted


class _Encrypted(Exception):
    """The key file asks for a passphrase (never prompted for: services run unattended)."""


def _load_ca(
    context: ssl.SSLContext, path: Path, name: str, *, what: str = "CA certificate"
) -> None:
    try:
        context.load_verify_locations(cafile=str(path))
    except FileNotFoundError:
        raise TlsError(f"{name} names {path}, which does not exist") from None
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise TlsError(
                f"{name} names {path}, which holds no {what} in PEM format ({exc.reason or exc})"
            ) from None
        raise TlsError(f"{name} names {path}, which cannot be read: {exc.strerror}") from None


def _load_pair(
    context: ssl.SSLContext, cert: Path, key: Path, cert_name: str, key_name: str
) -> None:
    try:
        context.load_cert_chain(str(cert), str(key), password=_refuse_passphrase)
    except _Encrypted:
        raise TlsError(
            f"{key_name} names {key}, a private key protected by a passphrase; "
            "give the key without one (and protect the file with its permissions)"
        ) from None
    except FileNotFoundError:
        raise TlsError(f"{key_name} names {key}, which does not exist") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"{key_name} names {key}, which is not the private key of the certificate "
                f"{cert} named by {cert_name}"
            ) from None
        raise TlsError(
            f"{key_name} names {key}, which holds no private key in PEM format "
            f"({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise TlsError(f"{key_name} names {key}, which cannot be read: {exc.strerror}") from None
