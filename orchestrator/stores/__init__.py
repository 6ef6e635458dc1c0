"""Adapters of the store port (:mod:`orchestrator.store`): SQLite and PostgreSQL through
SQLAlchemy's async Core.

``tables`` holds the schema (shared with the Alembic migrations), ``mapping`` turns
states into rows and back, ``unit_of_work`` is one transaction, ``sql`` the store, and
``engine`` the engine set-up (drivers, SQLite pragmas, URL masking).
"""

from __future__ import annotations

from orchestrator.stores.engine import mask_url
from orchestrator.stores.errors import BadDatabaseUrl, InvalidValue, MigrationsOutOfDate
from orchestrator.stores.sql import SqlStore
from orchestrator.stores.unit_of_work import SqlUnitOfWork

__all__ = [
    "BadDatabaseUrl",
    "InvalidValue",
    "MigrationsOutOfDate",
    "SqlStore",
    "SqlUnitOfWork",
    "mask_url",
]
