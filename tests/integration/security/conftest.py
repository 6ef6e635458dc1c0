"""The security tests drive the runtime tests' participants (alpha, beta, gamma) and rig,
so that folder goes on the import path; the certificates are made once per session."""

import sys
from pathlib import Path

import pytest

from .security_certs import Certificates, make_certificates

_RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
if str(_RUNTIME) not in sys.path:
    sys.path.insert(0, str(_RUNTIME))


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, server and client certificates and some bad files (see security_certs)."""
    return make_certificates(tmp_path_factory.mktemp("certs"))
