"""Participants as ``participants/runtime.py`` and ``participants/inbox.py`` run them.

Per delivery, one transaction: a compensation first cancels its action if that never
ran; a key with a final outcome in the inbox is answered from it; otherwise the handler
runs and its outcome (success with its effect, or a permanent failure) commits with the
inbox row, while a retryable failure rolls back. Only then is the reply published, and
only after its confirm is the command acked, so a crash or a lost reply means the
broker hands the command over again.

What a handler does is planned per idempotency key from the run's moods: success, a
retryable failure n times (then success or a permanent failure), a permanent failure,
or a success whose reply comes after the step's timeout.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.core.effects import SendCommand
from orchestrator.core.events import ReplyFailed, ReplySucceeded
from orchestrator.core.state import JSON, Kind

from .sim_messages import CommandMessage, EffectRecord, Host, Reply, ReplyMessage

__all__ = ["Moods", "Participant", "Plan", "ReplyIds", "draw_moods"]

SUCCESS = "success"
RETRYABLE = "retryable"
PERMANENT = "permanent"

SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

Stored = tuple[str, JSON]
"""An inbox row: its final status and, for a success, the result."""


class ReplyIds(StrEnum):
    """How a participant names its replies (the orchestrator drops a reply id it has seen)."""

    PER_COMMAND = "per_command"
    """``reply-<command message id>`` for every reply, as ``participants/runtime.py`` once
    did. A redelivered command whose first run failed retryably may succeed on its second
    run, and that success then carries the failure's id and is dropped as a duplicate."""
    PER_OUTCOME = "per_outcome"
    """``reply-<command message id>`` for a final outcome (one per key, kept in the inbox) and
    a fresh id for each retryable failure, which nothing stores: what the runtime does."""


@dataclass(frozen=True)
class Plan:
    """What the handler does on its n-th run for one key (the last outcome repeats)."""

    outcomes: tuple[str, ...]
    slow: bool = False
    """The first run's reply comes late: after its step's timeout, as a rule."""

    def outcome(self, run: int) -> str:
        """The outcome of run ``run`` (0 for the first)."""
        return self.outcomes[min(run, len(self.outcomes) - 1)]


@dataclass(frozen=True)
class Moods:
    """The mix of plans in one run, by weight (a bag to draw from)."""

    action: tuple[str, ...]
    compensation: tuple[str, ...]


def draw_moods(rng: random.Random) -> Moods:
    """The run's mix: some runs never fail, others are mostly flaky, refused or slow."""
    action = ["ok"] * 6
    for mood in ("flaky", "flaky_then_refused", "refused", "slow"):
        action += [mood] * rng.choice((0, 1, 3))
    compensation = ["ok"] * 6
    for mood, weights in (("flaky", (0, 1, 3)), ("slow", (0, 1, 2)), ("refused", (0, 0, 0, 1))):
        compensation += [mood] * rng.choice(weights)
    return Moods(tuple(action), tuple(compensation))


def _plan(rng: random.Random, mood: str) -> Plan:
    if mood == "flaky":
        return Plan((RETRYABLE,) * rng.randint(1, 3) + (SUCCESS,))
    if mood == "flaky_then_refused":
        return Plan((RETRYABLE,) * rng.randint(1, 2) + (PERMANENT,))
    if mood == "refused":
        return Plan((PERMANENT,))
    return Plan((SUCCESS,), slow=mood == "slow")


class Participant:
    """One participant service with its database (the inbox) and its handlers."""

    def __init__(
        self,
        name: str,
        host: Host,
        moods: Moods,
        *,
        inbox: bool = True,
        reply_ids: ReplyIds = ReplyIds.PER_OUTCOME,
    ) -> None:
        self.name = name
        self.host = host
        self.moods = moods
        self.use_inbox = inbox
        """False only to show the checker catches what the inbox prevents."""
        self.reply_ids = reply_ids
        self.retryable_replies = 0
        self.inbox: dict[str, Stored] = {}
        self.plans: dict[str, Plan] = {}
        self.runs: Counter[str] = Counter()

    def on_command(self, message: CommandMessage) -> None:
        """Handle one delivery of a command (see the module docstring)."""
        host = self.host
        rng = host.rng
        faults = host.faults
        crash = host.faulty and rng.random() < faults.participant_crash
        if crash and rng.random() < 0.5:
            self._crashed(message, "before its commit")
            return
        reply, slow = self._transaction(message)
        if crash:
            self._crashed(message, "after its commit, before the reply")
            return
        if host.faulty and rng.random() < faults.drop:
            host.stats.drops += 1
            if host.trace is not None:
                host.note(f"{self.name}: FAULT reply to {message.message_id} lost; requeued")
            host.deliver_command(message, host.delay())
            return
        after = host.delay() + (host.between(1_000_000, 45_000_000) if slow else 0)
        host.deliver_reply(
            ReplyMessage(self._reply_id(message, reply), message.saga_id, reply), after
        )
        if host.faulty and rng.random() < faults.lost_confirm:
            # The reply is on its way but the participant never heard so: it requeues.
            host.stats.lost_confirms += 1
            if host.trace is not None:
                host.note(f"{self.name}: FAULT confirm of the reply to {message.message_id} lost")
            host.deliver_command(message, host.delay())
        elif rng.random() < faults.duplicate:
            host.stats.duplicates += 1
            host.deliver_command(message, host.delay())

    def _reply_id(self, message: CommandMessage, reply: Reply) -> str:
        reply_id = f"reply-{message.message_id}"
        if self.reply_ids is ReplyIds.PER_COMMAND or not _retryable(reply):
            return reply_id
        self.retryable_replies += 1
        return f"{reply_id}-retryable-{self.retryable_replies}"

    def _crashed(self, message: CommandMessage, when: str) -> None:
        host = self.host
        host.stats.participant_crashes += 1
        if host.trace is not None:
            host.note(f"{self.name}: FAULT crashed handling {message.message_id} {when}")
        # The broker requeues the unacked delivery once the process is gone; it restarts.
        host.deliver_command(message, host.between(200_000, 2_000_000))

    def _transaction(self, message: CommandMessage) -> tuple[Reply, bool]:
        """The inbox transaction; returns the reply and whether it comes slowly."""
        host = self.host
        send = message.send
        key = send.idempotency_key
        if self.use_inbox:
            if send.action_key is not None and send.action_key not in self.inbox:
                self.inbox[send.action_key] = (CANCELLED, None)
                host.stats.cancelled_actions += 1
            stored = self.inbox.get(key)
            if stored is not None:
                host.stats.inbox_answers += 1
                return _stored_reply(send, stored), False
        plan = self.plans.get(key)
        if plan is None:
            bag = self.moods.action if send.kind is Kind.ACTION else self.moods.compensation
            plan = self.plans[key] = _plan(host.rng, host.rng.choice(bag))
        run = self.runs[key]
        self.runs[key] = run + 1
        host.stats.handler_runs += 1
        outcome = plan.outcome(run)
        if outcome == RETRYABLE:
            return _failure(send, "flaky", retryable=True), False
        if outcome == PERMANENT:
            self.inbox[key] = (FAILED, None)
            return _failure(send, "refused", retryable=False), False
        result = {"v": f"{send.step}@{self.name}"}
        self.inbox[key] = (SUCCEEDED, result)
        host.effects.append(EffectRecord(key, message.saga_id, send.step, send.kind, host.now))
        if host.trace is not None:
            host.note(f"{self.name}: effect committed for {key} (attempt {send.attempt})")
        return _success(send, result), plan.slow and run == 0


def _retryable(reply: Reply) -> bool:
    return isinstance(reply, ReplyFailed) and reply.retryable


def _stored_reply(send: SendCommand, stored: Stored) -> Reply:
    status, result = stored
    if status == SUCCEEDED:
        return _success(send, result)
    if status == CANCELLED:
        return _failure(send, CANCELLED, retryable=False)
    return _failure(send, "refused", retryable=False)


def _success(send: SendCommand, result: JSON) -> ReplySucceeded:
    return ReplySucceeded(send.step, send.kind, send.attempt, send.idempotency_key, result)


def _failure(send: SendCommand, code: str, *, retryable: bool) -> ReplyFailed:
    return ReplyFailed(
        send.step,
        send.kind,
        send.attempt,
        send.idempotency_key,
        code,
        f"{code} at {send.step}",
        retryable,
    )
