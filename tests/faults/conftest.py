"""Fault campaigns (RELIABILITY.md section 5): real processes, the local RabbitMQ and
PostgreSQL, faults at seeded moments, and a checker of what came of every saga.

They share the fixtures and helpers of tests/integration (a vhost per test, a database per
test, the subprocess services and the trio participants), put on the import path here.
``SAGA_FAULTS_SCALE=full`` (``make test-faults``) runs every campaign at full size; without
it the campaigns run at the size CI affords.
"""

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _folder in (_TESTS / "integration", _TESTS / "integration" / "runtime"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import pytest  # noqa: E402 - the path above first
from broker import RabbitService  # noqa: E402
from fixtures import (  # noqa: E402
    amqp_url,
    database_url,
    participant_database_url,
    postgres_service,
    rabbit_service,
    seed,
)

from .faultrig import FaultRig  # noqa: E402

__all__ = [
    "amqp_url",
    "database_url",
    "make_rig",
    "participant_database_url",
    "postgres_service",
    "rabbit_service",
    "seed",
]


MakeRig = Callable[..., FaultRig]


@pytest.fixture
async def make_rig(
    tmp_path: Path,
    amqp_url: str,
    database_url: str,
    participant_database_url: str,
    rabbit_service: RabbitService,
    seed: int,
) -> AsyncIterator[MakeRig]:
    """``make_rig(campaign, definition=None)``: a FaultRig on this test's vhost, databases
    and seed, closed (every process stopped) when the test ends."""
    rigs: list[FaultRig] = []

    def make(campaign: str, definition: str | None = None) -> FaultRig:
        rig = FaultRig(
            tmp_path,
            amqp_url,
            database_url,
            participant_database_url,
            rabbit_service,
            campaign=campaign,
            seed=seed,
            definition=definition,
        )
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()
