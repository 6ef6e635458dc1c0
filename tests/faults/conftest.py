"""Fault campaigns (RELIABILITY.md section 5): real processes, the local RabbitMQ and
PostgreSQL, faults at seeded moments, and a checker of what came of every saga.

They share the fixtures and helpers of tests/integration (a vhost per test, a database per
test, the subprocess services and the trio participants), put on the import path here.
``SAGA_FAULTS_SCALE=full`` (``make test-faults``) runs every campaign at full size; without
it the campaigns run at the size CI affords.
"""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _folder in (_TESTS / "integration", _TESTS / "integration" / "runtime"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from fixtures import (  # noqa: E402 - the path above first
    amqp_url,
    database_url,
    participant_database_url,
    postgres_service,
    rabbit_service,
    seed,
)

__all__ = [
    "amqp_url",
    "database_url",
    "participant_database_url",
    "postgres_service",
    "rabbit_service",
    "seed",
]
