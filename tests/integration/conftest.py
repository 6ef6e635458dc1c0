"""The fixtures of tests against real services live in ``fixtures.py``, shared with
tests/faults; a conftest makes them visible to the tests under it."""

from fixtures import (
    amqp_url,
    database_url,
    migrated_store,
    participant_database_url,
    postgres_service,
    postgres_store,
    postgres_url,
    rabbit_service,
    rig,
    seed,
)

__all__ = [
    "amqp_url",
    "database_url",
    "migrated_store",
    "participant_database_url",
    "postgres_service",
    "postgres_store",
    "postgres_url",
    "rabbit_service",
    "rig",
    "seed",
]
