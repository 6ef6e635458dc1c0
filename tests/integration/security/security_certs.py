"""Certificates for the TLS tests, made with the ``openssl`` binary (the ``cryptography``
package is not a dependency): a CA, a server certificate for ``localhost`` only (so that
connecting to 127.0.0.1 fails the host name check), a client certificate, a second CA that
signed nothing here, a key that belongs to no certificate, and a passphrase-protected key."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Certificates:
    """Where each PEM file is."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    stray_key: Path
    encrypted_key: Path
    client_name: str = "saga-test-client"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")


def _key(cwd: Path, name: str, *extra: str) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", *extra,
             "-out", name, cwd=cwd)  # fmt: skip


def _ca(cwd: Path, name: str, subject: str) -> None:
    _key(cwd, f"{name}.key")
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={subject}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def _signed(cwd: Path, name: str, subject: str, extensions: str) -> None:
    _key(cwd, f"{name}.key")
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj",
             f"/CN={subject}", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(
        extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


def make_certificates(folder: Path) -> Certificates:
    """Write every file into ``folder``; the test fails with a sentence if openssl is missing."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl binary to make certificates", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca", "saga-test-ca")
    _ca(folder, "other-ca", "saga-other-ca")
    _signed(
        folder, "server", "localhost",
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth",
    )  # fmt: skip
    client_name = "saga-test-client"
    _signed(folder, "client", client_name, "extendedKeyUsage=clientAuth")
    _key(folder, "stray.key")
    _key(folder, "encrypted.key", "-aes-128-cbc", "-pass", "pass:secret")
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
        stray_key=folder / "stray.key",
        encrypted_key=folder / "encrypted.key",
        client_name=client_name,
    )
