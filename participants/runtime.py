"""Running a :class:`~participants.app.Participant`: consume its queue, run handlers through
the inbox, reply, then ack.

Per delivery: decode after a byte cap (bad input is dead-lettered with its reason);
a command with no handler is dead-lettered (a deployment mistake: deploy the handler,
then replay); otherwise one database transaction claims the key in the inbox, runs
the handler with a session in that transaction and stores the outcome. Only after the
commit is the reply published (with a confirm), and only after that is the command
acked. A crash anywhere means a redelivery that the inbox answers from the stored
outcome, without running the handler again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace as trace_api
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from contracts import EncodeError, MessageRejected, StepCommand, StepReply, decode, encode
from orchestrator import crashpoints
from orchestrator.logs import saga_log_context
from orchestrator.pruning import PruneLoop
from orchestrator.settings import duration, positive_int
from orchestrator.store import StoreUnavailable
from orchestrator.stores.engine import DEFAULT_POOL_SIZE, autovacuum_warning
from orchestrator.stores.errors import translate
from orchestrator.telemetry.identity import trace_id_of
from orchestrator.telemetry.setup import Telemetry
from orchestrator.tls import amqp_url_from_env
from orchestrator.topology import REPLY_QUEUE, participant_queue, participant_topology
from orchestrator.transport import (
    Delivery,
    Subscription,
    Transport,
    TransportUnavailable,
    publish_wire,
)
from participants import inbox
from participants.app import CommandHandler, Participant
from participants.context import StepContext
from participants.errors import PermanentError, StepError, valid_text
from participants.telemetry import ParticipantTelemetry

log = logging.getLogger("participants")

CANCELLED_CODE = "cancelled"
POISON_DEATHS = 3
"""Deaths of the process in one command after which it is dead-lettered as poison: the
first may have been any command's doing, the next two happened while it ran alone. Below
the participant queue's delivery limit (5), which also counts the commands that were merely
in flight beside the poison when the process died."""
_DB_ERRORS = (sa_exc.SQLAlchemyError, OSError)


@dataclass(frozen=True)
class ParticipantSettings:
    """How a participant process connects; built from the environment at the entry point."""

    amqp_url: str
    database_url: str
    prefetch: int = 20
    """``SAGA_PREFETCH``: commands in hand at once (each may hold a database connection)."""
    db_pool_size: int = DEFAULT_POOL_SIZE
    """``SAGA_DB_POOL_SIZE``: connections to the participant's database (handlers beyond
    that many wait for one)."""
    grace_seconds: float = 30.0
    max_message_bytes: int = 256 * 1024
    inbox_retention: timedelta = timedelta(hours=168)
    """``SAGA_INBOX_RETENTION``: how long a key's stored outcome is kept (and answers
    redeliveries and retries of it); a week by default."""
    crash_at: str | None = None
    """Fault tests only: ``SAGA_CRASH_AT`` (see :mod:`orchestrator.crashpoints`)."""

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str]) -> ParticipantSettings:
        """``SAGA_AMQP_URL`` and ``SAGA_PARTICIPANT_DATABASE_URL`` (SQLite file by default).

        ``amqp_url`` carries the TLS files (``SAGA_AMQP_CA_FILE``, ``SAGA_AMQP_CERT_FILE``,
        ``SAGA_AMQP_KEY_FILE``), checked here (see :mod:`orchestrator.tls`). The user in
        the URL is the one the orchestrator's ``SAGA_REPLY_USERS`` must map this
        participant to: every reply carries it as its broker-validated ``user_id``."""
        return cls(
            amqp_url=amqp_url_from_env(environ, "amqp://guest:guest@localhost:5672/"),
            database_url=environ.get(
                "SAGA_PARTICIPANT_DATABASE_URL", f"sqlite+aiosqlite:///./{name}.db"
            ),
            max_message_bytes=positive_int(
                environ, "SAGA_MAX_MESSAGE_BYTES", cls.max_message_bytes
            ),
            db_pool_size=positive_int(environ, "SAGA_DB_POOL_SIZE", cls.db_pool_size),
            prefetch=positive_int(environ, "SAGA_PREFETCH", cls.prefetch),
            inbox_retention=duration(environ, "SAGA_INBOX_RETENTION", cls.inbox_retention),
            crash_at=environ.get("SAGA_CRASH_AT") or None,
        )


class _DatabaseUnavailable(Exception):
    """The participant's own database cannot be reached; the command must wait."""


def _database_unavailable(exc: BaseException) -> bool:
    """True for a lost or refused database connection (not for a handler's own mistakes)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return isinstance(translate(exc, "the participant database"), StoreUnavailable)
    return False


@dataclass(frozen=True)
class _Outcome:
    reply: StepReply
    ran_handler: bool


class ParticipantService:
    """One participant process: see the module docstring."""

    def __init__(
        self,
        participant: Participant,
        settings: ParticipantSettings,
        engine: AsyncEngine,
        transport: Transport,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.participant = participant
        self.telemetry = telemetry or Telemetry.off()
        self._observe = ParticipantTelemetry(self.telemetry, participant.name)
        self.settings = settings
        self.engine = engine
        self.transport = transport
        self._subscription: Subscription | None = None
        self._in_flight = 0
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lane = _Lane()
        self._cautious = True
        self.pruner = PruneLoop(
            self._prune_inbox,
            retention=settings.inbox_retention,
            clock=lambda: datetime.now(UTC),
            what="inbox rows",
        )
        self._pruning: asyncio.Task[None] | None = None
        self.handler_runs = 0
        """Handlers actually run (answers from the inbox do not count)."""
        self.inbox_answers = 0
        """Commands answered from the inbox without running the handler."""

    async def start(self) -> None:
        """Create the inbox table, declare the queues, start consuming."""
        await self._create_tables()
        await self.transport.declare(participant_topology(self.participant.name))
        # Cautious until the first command that is not a redelivery: see _widen.
        self._subscription = await self.transport.consume(
            participant_queue(self.participant.name), self.handle, prefetch=1
        )
        self._pruning = asyncio.create_task(self.pruner.run(), name="inbox-pruner")
        log.info(
            "participant %s running: commands %s",
            self.participant.name,
            ", ".join(self.participant.commands) or "(none)",
        )

    async def _prune_inbox(self, cutoff: datetime, limit: int) -> int:
        try:
            return await inbox.prune(self.engine, before=cutoff, limit=limit)
        except sa_exc.SQLAlchemyError as exc:
            raise translate(exc, "the participant database") from exc

    async def _create_tables(self) -> None:
        """The inbox table and the participant's own tables, if missing.

        Replicas (or participants sharing a database) may start at the same moment: both
        see no table and both create it, and the loser's CREATE fails as a duplicate. It
        then looks again, finds the table, and goes on."""
        for attempt in range(1, 4):
            try:
                await inbox.create_tables(self.engine)
                if self.participant.metadata is not None:
                    metadata = self.participant.metadata
                    async with self.engine.begin() as conn:
                        await conn.run_sync(metadata.create_all, checkfirst=True)
                warning = await autovacuum_warning(
                    self.engine, "the saga_inbox table", "the participant database"
                )
                if warning is not None:
                    log.warning("%s", warning)
                return
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as exc:
                if attempt == 3:
                    raise
                log.info("tables created by another process meanwhile (%s); checking again", exc)
                await asyncio.sleep(0.1 * attempt)

    async def stop(self) -> None:
        """Stop consuming; let handlers in flight finish (up to the grace period); close."""
        self._stopping.set()
        if self._subscription is not None:
            await self._subscription.cancel()
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.grace_seconds)
        except TimeoutError:
            log.warning("handlers still running after the grace period; they will be redelivered")
        self.pruner.stop()
        if self._pruning is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
        await self.transport.close()
        await self.engine.dispose()
        # Flushing waits for the exporter (bounded by its timeout): off the event loop.
        await asyncio.to_thread(self.telemetry.shutdown)

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery from the participant's queue."""
        self._in_flight += 1
        self._idle.clear()
        try:
            if self._cautious and not delivery.redelivered:
                await self._widen()
            with self._observe.processing(delivery) as span:
                await self._handle(delivery, span)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _widen(self) -> None:
        """Take commands ``prefetch`` at a time from now on.

        A process starts taking one command at a time. The commands it finds redelivered
        were in flight when the last process died, and one of them may have killed it: if it
        kills this one too, every command held at that moment goes back with its delivery
        count raised, and the queue's delivery limit would dead-letter bystanders that were
        merely prefetched beside a poison, death after death. The first command that is not
        a redelivery shows the broker has handed out every one that was returned; the
        one-at-a-time consumer then makes way for the full one (a consumer's prefetch is
        fixed when it starts). The command in hand is settled on its own channel."""
        self._cautious = False
        cautious = self._subscription
        if self._stopping.is_set() or cautious is None:
            return
        try:
            full = await self.transport.consume(
                participant_queue(self.participant.name),
                self.handle,
                prefetch=self.settings.prefetch,
            )
        except TransportUnavailable as exc:
            log.warning("could not widen the consumer (%s); still one command at a time", exc)
            self._cautious = True
            return
        self._subscription = full
        await cautious.cancel()
        log.info("no redelivered commands left; taking %d at a time", self.settings.prefetch)

    async def _handle(self, delivery: Delivery, span: trace_api.Span) -> None:
        try:
            command = decode(
                delivery.body,
                delivery.headers,
                expect=StepCommand,
                max_bytes=self.settings.max_message_bytes,
            )
        except MessageRejected as exc:
            log.warning("dead-lettering a message from %s: %s", delivery.queue, exc)
            self._observe.dead_lettered(span, str(exc))
            await delivery.dead_letter(str(exc))
            return
        assert isinstance(command, StepCommand)
        handler = self.participant.handler(command.command)
        if handler is None:
            reason = f"no handler for command '{command.command}'"
            log.error("%s (saga %s, step %s)", reason, command.saga_id, command.step)
            self._observe.dead_lettered(span, reason)
            await delivery.dead_letter(reason)
            return
        # A redelivered command is a suspect: it may be what killed the process last time.
        # It runs alone, so that a death while it runs is its own and no bystander's.
        suspected = delivery.redelivered and bool(delivery.message_id)
        async with self._lane.alone() if suspected else self._lane.together():
            if suspected and await self._is_poison(delivery, span):
                return
            await self._answer(delivery, command, handler, suspected=suspected)
            if suspected:
                with contextlib.suppress(*_DB_ERRORS):
                    await inbox.cleared(self.engine, delivery.message_id or "")

    async def _answer(
        self,
        delivery: Delivery,
        command: StepCommand,
        handler: CommandHandler,
        *,
        suspected: bool,
    ) -> None:
        """Run the command (or answer it from the inbox), reply, then ack.

        The crash points (fault tests) fire only in commands that are not suspects: a
        death while a suspect runs alone counts towards its poison verdict, and the deaths
        the tests inject are no command's fault."""
        started = time.perf_counter()
        with (
            saga_log_context(
                command.saga_id, step=command.step, trace_id=trace_id_of(command.trace)
            ),
            self._observe.handling(command) as handler_span,
        ):
            outcome = await self._run_until_stored(command, handler, crash=not suspected)
            if outcome is None:
                return
            self._observe.handled(
                handler_span,
                command,
                outcome.reply,
                from_inbox=not outcome.ran_handler,
                seconds=time.perf_counter() - started,
            )
        if outcome.ran_handler:
            self.handler_runs += 1
        else:
            self.inbox_answers += 1
        if await self._reply(outcome.reply, delivery.reply_to or REPLY_QUEUE):
            if not suspected:
                crashpoints.crash("participant.after_reply_before_ack")
            await delivery.ack()
        else:
            await delivery.requeue()

    async def _is_poison(self, delivery: Delivery, span: trace_api.Span) -> bool:
        """Dead-letter a redelivered command that killed the process POISON_DEATHS times,
        before the broker's delivery limit also dead-letters the commands that happened to
        be in flight beside it at each death. True when it was dead-lettered."""
        try:
            deaths = await inbox.suspect(self.engine, delivery.message_id or "")
        except _DB_ERRORS as exc:
            log.warning("could not count the deaths of a redelivered command: %s", exc)
            return False
        if deaths < POISON_DEATHS:
            return False
        reason = (
            f"the participant died {deaths} times while handling this command"
            " (a poison message); it is not run again"
        )
        log.error("dead-lettering message %s: %s", delivery.message_id, reason)
        self._observe.dead_lettered(span, reason)
        await delivery.dead_letter(reason)
        with contextlib.suppress(*_DB_ERRORS):
            await inbox.cleared(self.engine, delivery.message_id or "")
        return True

    async def _run_until_stored(
        self, command: StepCommand, handler: CommandHandler, *, crash: bool
    ) -> _Outcome | None:
        """Run the command, holding it through a database outage; None when stopping first."""
        delay = 0.2
        while True:
            try:
                outcome = await self._run(command, handler, crash=crash)
                break
            except _DatabaseUnavailable as exc:
                # Not the handler's fault: answering a failure would spend the step's
                # attempts on an outage. Hold the command and try again; at shutdown leave
                # it unsettled, and the broker hands it out again.
                if self._stopping.is_set():
                    log.warning("stopping with a command not run: %s", exc)
                    return None
                log.warning("participant database unavailable (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
        return outcome

    async def _run(self, command: StepCommand, handler: CommandHandler, *, crash: bool) -> _Outcome:
        key = command.idempotency_key
        logger = logging.LoggerAdapter(
            log,
            {
                "saga_id": command.saga_id,
                "step": command.step,
                "kind": command.kind,
                "idempotency_key": key,
            },
        )
        try:
            async with self.engine.connect() as conn:
                await conn.begin()
                existing = await self._claim(conn, command)
                if existing is not None:
                    await conn.commit()
                    logger.info(
                        "%s %s answered from the inbox (already %s)",
                        command.kind,
                        command.command,
                        existing.status,
                    )
                    return _Outcome(_stored_reply(command, existing), ran_handler=False)
                # The handler's session works in this transaction and commits nothing itself
                # (the inbox row commits with its writes); its rollback is the transaction's.
                session = AsyncSession(bind=conn, join_transaction_mode="rollback_only")
                context = StepContext(
                    saga_id=command.saga_id,
                    saga_name=command.saga_name,
                    step=command.step,
                    kind=command.kind,
                    attempt=command.attempt,
                    idempotency_key=key,
                    action_key=command.action_key,
                    session=session,
                    log=logger,
                )
                try:
                    payload = handler.parse(command.payload)
                    value = await handler.func(payload, context)
                    success = _checked_success(command, value)
                    if crash:
                        crashpoints.crash("participant.before_commit")
                    await session.commit()
                except PermanentError as exc:
                    await session.rollback()
                    return await self._store_permanent_failure(conn, command, exc)
                finally:
                    await session.close()
                await inbox.finish(
                    conn, key=key, status=inbox.InboxStatus.SUCCEEDED, result=success.result
                )
                await conn.commit()
                if crash:
                    crashpoints.crash("participant.after_commit_before_reply")
                return _Outcome(success, ran_handler=True)
        except StepError as exc:
            logger.info("handler failed, retryable: %s", exc)
            return _Outcome(_failure(command, exc.code, exc.message, True), True)
        except Exception as exc:
            if _database_unavailable(exc):
                raise _DatabaseUnavailable(str(exc)) from exc
            logger.exception("handler raised; answering with a retryable failure")
            message = valid_text(f"{type(exc).__name__}: {exc}"[:4000])
            return _Outcome(_failure(command, "handler_error", message, True), True)

    @staticmethod
    async def _claim(conn: AsyncConnection, command: StepCommand) -> sa.Row[Any] | None:
        """Claim the command's key in this transaction (a compensation first cancels its
        action); the stored row when the key already has an outcome."""
        if command.kind == "compensation" and command.action_key:
            await inbox.cancel_action(
                conn, action_key=command.action_key, saga_id=command.saga_id, step=command.step
            )
        return await inbox.claim(
            conn,
            key=command.idempotency_key,
            saga_id=command.saga_id,
            step=command.step,
            kind=command.kind,
        )

    async def _store_permanent_failure(
        self, conn: AsyncConnection, command: StepCommand, exc: PermanentError
    ) -> _Outcome:
        """The handler failed for good: roll back its transaction (its writes and the
        claim) and store the failure in a transaction of its own. Dying before that commits
        means the command is run again, which is safe: nothing of it was kept."""
        await conn.rollback()  # the session rolls back only what it began
        await conn.begin()
        existing = await self._claim(conn, command)
        if existing is not None:  # a copy of the command finished meanwhile: its answer holds
            await conn.commit()
            return _Outcome(_stored_reply(command, existing), ran_handler=True)
        await inbox.finish(
            conn,
            key=command.idempotency_key,
            status=inbox.InboxStatus.FAILED,
            error_code=exc.code,
            error_message=exc.message,
        )
        await conn.commit()
        return _Outcome(_failure(command, exc.code, exc.message, False), ran_handler=True)

    async def _reply(self, reply: StepReply, reply_to: str) -> bool:
        return await publish_wire(self.transport, encode(reply), routing_key=reply_to)


class _Lane:
    """Handlers run together; a suspect runs alone (no other handler runs meanwhile).

    A waiting suspect goes before handlers that have not started yet, so a steady stream of
    commands cannot keep it waiting."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._running = 0
        self._alone = False
        self._waiting_alone = 0

    @contextlib.asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        """Run beside other handlers (not beside a suspect)."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._running += 1
        try:
            yield
        finally:
            async with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """Run once every other handler has finished, and keep the others waiting."""
        async with self._changed:
            self._waiting_alone += 1
            try:
                await self._changed.wait_for(lambda: not self._alone and not self._running)
            finally:
                self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            async with self._changed:
                self._alone = False
                self._changed.notify_all()


def _reply_id(command: StepCommand, *, retryable: bool = False) -> str:
    """One reply id per command message for a final answer (success, permanent failure):
    the inbox keeps it, so a reply re-sent after a crash is the same message and the
    orchestrator drops the copy by its id. A retryable failure is kept nowhere: the command,
    delivered again, runs again and may answer differently, so each such answer gets an id
    of its own (else a later success would be dropped as a copy of the failure)."""
    base = f"reply-{command.message_id}"
    if len(base) > 160:
        base = "reply-" + hashlib.sha256(command.message_id.encode()).hexdigest()
    return f"{base}-{uuid.uuid4().hex[:12]}" if retryable else base


def _checked_success(command: StepCommand, value: Any) -> StepReply:
    """The success reply for a handler's return value, checked to fit on the wire before
    anything commits (a stored result that cannot be sent would be answered forever)."""
    try:
        reply = _success(command, CommandHandler.result(value))
        encode(reply)
    except (TypeError, ValidationError, EncodeError) as exc:
        raise PermanentError(
            "invalid_result", f"the handler for '{command.command}' returned {_why(exc)}"
        ) from None
    return reply


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "a result that is not plain JSON"
    if isinstance(exc, EncodeError):
        return f"a result that cannot be sent: {exc}"
    return f"{exc}".replace("a handler must return", "something else:", 1)


def _success(command: StepCommand, result: Mapping[str, Any]) -> StepReply:
    return StepReply.success(command, result, message_id=_reply_id(command), trace=command.trace)


def _failure(command: StepCommand, code: str, message: str, retryable: bool) -> StepReply:
    return StepReply.failure(
        command,
        code,
        message,
        retryable,
        message_id=_reply_id(command, retryable=retryable),
        trace=command.trace,
    )


def _stored_reply(command: StepCommand, row: sa.Row[Any]) -> StepReply:
    status = inbox.InboxStatus(row.status)
    if status is inbox.InboxStatus.SUCCEEDED:
        return _success(command, row.result or {})
    if status is inbox.InboxStatus.CANCELLED:
        return _failure(
            command,
            CANCELLED_CODE,
            "a compensation for this step ran first; the action will not run",
            False,
        )
    return _failure(
        command, row.error_code or "failed", row.error_message or "failed for good", False
    )
