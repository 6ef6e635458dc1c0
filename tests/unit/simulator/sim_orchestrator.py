"""The orchestrator as ``engine.py``, ``outbox.py`` and ``timers.py`` run it, over a store model.

Durable (kept through a crash): the last committed state of every saga, the outbox rows,
the ids of processed start requests and replies, and the committed decisions (which the
checker reads). Everything else dies with the process: publishes waiting for a confirm,
armed timers, the delivery being handled.

Every input is one transaction, applied whole or not at all: mark the message processed,
decide, write the new state and the outbox rows. After the commit the rows are published
at once, and marked sent when their confirm arrives; a publish that is not confirmed is
swept up again after a grace period. After a restart every unsent row is published again,
every stored deadline is armed again, and the broker hands over every unacked delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from core.builders import T0, current_attempt

from orchestrator.core.effects import SendCommand
from orchestrator.core.events import Event, TimerFired
from orchestrator.core.machine import Decision, start
from orchestrator.core.state import JSON, Deadline, SagaState, StepState
from orchestrator.definitions.model import SagaDefinition

from .sim_messages import CommandMessage, Host, Reply, ReplyMessage

__all__ = ["Committed", "Decide", "Orchestrator", "OutboxRow", "SagaSpec", "at_of", "clock_of"]

Decide = Callable[[SagaState, Event, datetime], Decision]

_MICROSECOND = timedelta(microseconds=1)


def clock_of(at: int) -> datetime:
    """The datetime of simulated microsecond ``at``."""
    return T0 + timedelta(microseconds=at)


def at_of(moment: datetime) -> int:
    """The simulated microsecond of ``moment`` (exact: deadlines are whole microseconds)."""
    return (moment - T0) // _MICROSECOND


@dataclass(frozen=True)
class SagaSpec:
    """A saga the run starts: which definition, with what input, when its request arrives."""

    saga_id: str
    definition: SagaDefinition
    input: JSON
    start_at: int


class Committed(NamedTuple):
    """One committed decision: the state it started from (None for the start) and its event."""

    at: int
    before: SagaState | None
    event: Event | None
    decision: Decision


@dataclass
class OutboxRow:
    """A command to publish until a confirm says the broker has it."""

    message: CommandMessage
    sent: bool = False


@dataclass
class _LastCommit:
    saga_id: str
    before: SagaState
    rows: list[OutboxRow]
    processed: str | None


class Orchestrator:
    """One orchestrator process and its database; see the module docstring."""

    def __init__(self, host: Host, decide: Decide, *, durable: bool = True) -> None:
        self.host = host
        self.decide = decide
        self.durable = durable
        """False only to show the checker catches a store that loses commits in a crash."""
        # The database.
        self.states: dict[str, SagaState] = {}
        self.log: dict[str, list[Committed]] = {}
        self.unsent: dict[str, OutboxRow] = {}
        self.processed: set[str] = set()
        self.replies: dict[str, Reply] = {}
        """The reply processed under each reply id (to tell a copy from a different reply)."""
        # The process.
        self.up = True
        self.incarnation = 0
        self.crashes_left = host.faults.orchestrator_crashes
        self.armed: dict[str, int] = {}
        self.parked: list[Callable[[], None]] = []
        """Deliveries the broker holds (unacked, or sent while the process was down)."""
        self._ids = 0
        self._last: _LastCommit | None = None

    # -- inputs -------------------------------------------------------------------------

    def on_start(self, spec: SagaSpec) -> None:
        """A start request: create the saga and send its first step."""

        def again() -> None:
            self.on_start(spec)

        if not self.up or self.crash_point("a start request is consumed, before its commit"):
            self.parked.append(again)
            return
        request = f"start-{spec.saga_id}"
        if request in self.processed:
            self.host.stats.replies_deduplicated += 1
        else:
            decision = start(spec.saga_id, spec.definition, spec.input, clock_of(self.host.now))
            rows = self.commit(spec.saga_id, None, None, decision, request)
            if not self.after_commit(spec.saga_id, rows):
                self.parked.append(again)
                return
        self.maybe_redelivered(again)

    def on_reply(self, message: ReplyMessage) -> None:
        """A participant's reply: dropped by its id if seen before, else decided on."""

        def again() -> None:
            self.on_reply(message)

        if not self.up or self.crash_point("a reply is consumed, before its commit"):
            self.parked.append(again)
            return
        if message.message_id in self.processed:
            self.host.stats.replies_deduplicated += 1
            if self.replies.get(message.message_id) != message.reply:
                self.host.stats.conflicting_replies += 1
                if self.host.trace is not None:
                    self.host.note(
                        f"orchestrator: {message.message_id} seen before; unread: {message.reply}"
                    )
        else:
            self.replies[message.message_id] = message.reply
            before = self.states[message.saga_id]
            now = clock_of(self.host.now)
            decision = self.decide(before, message.reply, now)
            rows = self.commit(message.saga_id, before, message.reply, decision, message.message_id)
            if not self.after_commit(message.saga_id, rows):
                self.parked.append(again)
                return
        self.maybe_redelivered(again)

    def on_timer(self, saga_id: str, incarnation: int) -> None:
        """The timer loop found a deadline that passed (if it is still the saga's deadline)."""
        if not self.up or incarnation != self.incarnation:
            return
        before = self.states[saga_id]
        found = _deadline(before)
        if found is None:
            return
        step, deadline = found
        if at_of(deadline.at) > self.host.now:
            return  # armed for an older deadline; the commit that set this one armed it
        if self.crash_point("a timer is claimed, before its commit"):
            return
        self.host.stats.timers_fired += 1
        event = TimerFired(
            step.name, deadline.kind, current_attempt(step, deadline.kind), deadline.purpose
        )
        decision = self.decide(before, event, clock_of(self.host.now))
        rows = self.commit(saga_id, before, event, decision, None)
        self.after_commit(saga_id, rows)

    # -- the transaction ----------------------------------------------------------------

    def commit(
        self,
        saga_id: str,
        before: SagaState | None,
        event: Event | None,
        decision: Decision,
        processed: str | None,
    ) -> list[OutboxRow]:
        """Write the decision, its outbox rows and the processed id, all at once."""
        host = self.host
        host.stats.decisions += 1
        self.states[saga_id] = decision.state
        self.log.setdefault(saga_id, []).append(Committed(host.now, before, event, decision))
        if processed is not None:
            self.processed.add(processed)
        rows = []
        for effect in decision.effects:
            if isinstance(effect, SendCommand):
                self._ids += 1
                row = OutboxRow(CommandMessage(f"m{self._ids}", saga_id, effect))
                self.unsent[row.message.message_id] = row
                rows.append(row)
        if before is not None:
            self._last = _LastCommit(saga_id, before, rows, processed)
        if host.trace is not None:
            sent = ", ".join(
                f"{r.message.message_id}={_describe_send(r.message.send)}" for r in rows
            )
            host.note(
                f"orchestrator: {saga_id} {_describe_event(event)} -> "
                f"{decision.state.status.value}{' sends ' + sent if sent else ''}"
                f"{'' if decision.changed else ' (ignored)'}"
            )
        return rows

    def after_commit(self, saga_id: str, rows: list[OutboxRow]) -> bool:
        """Publish the new rows and arm the saga's deadline; False if the process died first."""
        if self.crash_point("after a commit, before its publishes and ack"):
            return False
        for row in rows:
            self.publish_soon(row, again=False)
        self.arm(saga_id)
        return True

    def maybe_redelivered(self, again: Callable[[], None]) -> None:
        """At-least-once: the broker may hand a handled delivery over again (a lost ack)."""
        host = self.host
        if host.rng.random() < host.faults.duplicate:
            host.stats.duplicates += 1
            host.schedule(host.delay(), again)

    # -- the outbox relay ---------------------------------------------------------------

    def publish_soon(self, row: OutboxRow, *, again: bool, after: int = 0) -> None:
        """Publish ``row`` from this process (a crash cancels it: the sweep takes over)."""
        incarnation = self.incarnation
        delay = after + self.host.between(100, 2_000)
        self.host.schedule(delay, lambda: self.publish(row, incarnation, again=again))

    def publish(self, row: OutboxRow, incarnation: int, *, again: bool) -> None:
        """One publish with a confirm; a message the broker accepted is durable."""
        host = self.host
        if not self.up or incarnation != self.incarnation or row.sent:
            return
        if again:
            host.stats.republished += 1
        faults = host.faults
        if host.faulty and host.rng.random() < faults.drop:
            host.stats.drops += 1
            if host.trace is not None:
                host.note(f"orchestrator: FAULT publish of {row.message.message_id} lost")
            self.publish_soon(row, again=True, after=host.between(5_000_000, 6_000_000))
            return
        host.deliver_command(row.message, host.delay())
        if self.crash_point("a command is published, before its confirm"):
            return
        if host.faulty and host.rng.random() < faults.lost_confirm:
            host.stats.lost_confirms += 1
            if host.trace is not None:
                host.note(f"orchestrator: FAULT confirm of {row.message.message_id} lost")
            self.publish_soon(row, again=True, after=host.between(5_000_000, 6_000_000))
            return
        host.schedule(host.between(100, 5_000), lambda: self.confirmed(row, incarnation))

    def confirmed(self, row: OutboxRow, incarnation: int) -> None:
        """The broker's confirm: mark the row sent (if this process still lives)."""
        if self.up and incarnation == self.incarnation:
            row.sent = True
            self.unsent.pop(row.message.message_id, None)

    # -- timers -------------------------------------------------------------------------

    def arm(self, saga_id: str) -> None:
        """Wake the timer loop when the saga's deadline passes (it polls every 0.2 s)."""
        found = _deadline(self.states[saga_id])
        if found is None:
            return
        at = at_of(found[1].at)
        if self.armed.get(saga_id) == at:
            return
        self.armed[saga_id] = at
        incarnation = self.incarnation
        host = self.host
        delay = max(at - host.now, 0) + host.between(0, 200_000)
        host.schedule(delay, lambda: self.on_timer(saga_id, incarnation))

    # -- crashes ------------------------------------------------------------------------

    def crash_point(self, where: str) -> bool:
        """A named crash point: maybe die here (during the fault phase, while crashes are left)."""
        host = self.host
        if not self.crashes_left or not host.faulty:
            return False
        if host.rng.random() >= host.faults.crash_point:
            return False
        self.crash(where)
        return True

    def crash_at_random(self) -> None:
        """A crash at a moment chosen in advance, whatever the process is doing."""
        if self.up and self.crashes_left:
            self.crash("at a random moment")

    def crash(self, where: str) -> None:
        """Die: the process's memory is gone; the database keeps what was committed."""
        host = self.host
        self.up = False
        self.incarnation += 1
        self.crashes_left -= 1
        host.stats.orchestrator_crashes += 1
        self.armed.clear()
        if host.trace is not None:
            host.note(f"orchestrator: FAULT crashed {where}")
        if not self.durable and self._last is not None:
            self._lose_last_commit(self._last)
        self._last = None
        host.schedule(host.between(50_000, 2_000_000), self.restart)

    def _lose_last_commit(self, last: _LastCommit) -> None:
        self.states[last.saga_id] = last.before
        for row in last.rows:
            self.unsent.pop(row.message.message_id, None)
        if last.processed is not None:
            self.processed.discard(last.processed)

    def restart(self) -> None:
        """Come back: sweep the outbox, arm every deadline, take the held deliveries."""
        host = self.host
        self.up = True
        if host.trace is not None:
            host.note(f"orchestrator: restarted; {len(self.unsent)} outbox rows unsent")
        for row in list(self.unsent.values()):
            self.publish_soon(row, again=True)
        for saga_id in self.states:
            self.arm(saga_id)
        parked, self.parked = self.parked, []
        for again in parked:
            host.schedule(host.delay(), again)


def _deadline(state: SagaState) -> tuple[StepState, Deadline] | None:
    for step in state.steps:
        if step.deadline is not None:
            return step, step.deadline
    return None


def _describe_send(send: SendCommand) -> str:
    return f"{send.step}/{send.kind.value}#{send.attempt}"


def _describe_event(event: Event | None) -> str:
    if event is None:
        return "start"
    name = type(event).__name__
    step = getattr(event, "step", "")
    kind = getattr(event, "kind", None)
    attempt = getattr(event, "attempt", "")
    return f"{name}({step}/{kind.value if kind else ''}#{attempt})"
