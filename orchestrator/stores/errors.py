"""The SQL store's own errors, and the translation of driver exceptions into store errors.

The port's errors (:class:`~orchestrator.store.StoreError` and its subclasses) live in
:mod:`orchestrator.store`; the few below only exist for this adapter. Nothing from
``sqlalchemy.exc``, ``asyncpg`` or ``sqlite3`` leaves the store: :func:`translate` turns
each into a store error whose message is one sentence naming the (password-masked) database.
"""

from __future__ import annotations

import sqlalchemy.exc as sa_exc

from orchestrator.store import SchemaNotReady, StaleVersion, StoreError, StoreUnavailable

__all__ = [
    "BadDatabaseUrl",
    "InvalidValue",
    "MigrationsOutOfDate",
    "is_unique_violation",
    "translate",
]


class InvalidValue(StoreError, ValueError):
    """A value the database cannot store as given (too long, naive datetime, NUL character)."""


class BadDatabaseUrl(StoreError):
    """The database URL is malformed or names a driver the store does not support."""


class MigrationsOutOfDate(StoreError):
    """The table definitions and the migrations disagree: a migration is missing."""


# PostgreSQL asks the client to run the transaction again: serialization failure, deadlock.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
# Connection exceptions (08...), operator intervention such as a shutdown (57P...), and
# refusals at connect time: bad password (28...), no such database.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P", "28", "3D000")
# Too busy to serve this now: lock_timeout, too many connections.
_BUSY_SQLSTATES = frozenset({"55P03", "53300"})
_SQLITE_BUSY = ("database is locked", "database table is locked")
# The tables are missing: PostgreSQL's undefined_table, SQLite's "no such table".
_NO_TABLE_SQLSTATE = "42P01"


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code if isinstance(code, str) else None


def _cause(exc: BaseException) -> str:
    """The driver's own message, first line only (the rest repeats the SQL)."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    text = str(source).strip().splitlines()
    message = text[0] if text else type(source).__name__
    return message.rstrip(".")


def translate(exc: BaseException, where: str) -> StoreError:
    """The store error for a driver exception raised while talking to the database ``where``.

    ``where`` is the masked URL. Unique violations are not handled here: the caller knows
    which constraint it hit (a duplicate saga, a history race) and translates those itself.
    """
    if isinstance(exc, StoreError):
        return exc
    code = _sqlstate(exc)
    if code in _RETRY_SQLSTATES:
        return StaleVersion(
            f"the database at {where} aborted the transaction to resolve a conflict with"
            f" another one ({_cause(exc)}); run it again"
        )
    cause = _cause(exc)
    if isinstance(exc, sa_exc.TimeoutError):
        return StoreUnavailable(
            f"the database at {where} is busy: no connection came free in the pool in time"
        )
    if code in _BUSY_SQLSTATES or cause.startswith(_SQLITE_BUSY):
        return StoreUnavailable(f"the database at {where} is busy: {cause}")
    if code == _NO_TABLE_SQLSTATE or cause.startswith("no such table"):
        return SchemaNotReady(
            f"the database at {where} is not migrated: run `saga db upgrade` ({cause})"
        )
    if (
        isinstance(exc, OSError | ConnectionError)
        or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)
        or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        or (code is not None and code.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES))
    ):
        return StoreUnavailable(f"the database at {where} cannot be reached: {cause}")
    # Class 22 is "data exception" (a NUL character, a number out of range...).
    if isinstance(exc, sa_exc.DataError) or (code is not None and code.startswith("22")):
        return InvalidValue(f"the database at {where} refused a value: {cause}")
    if isinstance(exc, sa_exc.StatementError) and isinstance(exc.orig, ValueError | TypeError):
        return InvalidValue(f"a value cannot be stored in the database at {where}: {exc.orig}")
    if isinstance(exc, sa_exc.IntegrityError):
        return StoreError(f"the database at {where} refused a write: {cause}")
    return StoreError(f"the database at {where} failed: {cause}")


def is_unique_violation(exc: BaseException) -> bool:
    """True when ``exc`` is a duplicate key (a primary key or unique constraint)."""
    if not isinstance(exc, sa_exc.IntegrityError):
        return False
    if _sqlstate(exc) == "23505":
        return True
    name = getattr(exc.orig, "sqlite_errorname", None)
    return name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")
