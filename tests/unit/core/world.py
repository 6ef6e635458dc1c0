"""A simulated world for property tests: random participants, a fake clock, noise.

:class:`World` drives one saga through :func:`decide` to the end. Every choice (what a
participant answers, whether a reply is late, when noise is injected) is drawn from
hypothesis, so a failing run shrinks and replays. Participants are modelled either with an
idempotent inbox (a key that succeeded or failed for good is answered the same way again)
or without one (every delivery is handled afresh).

Every call of ``decide`` goes through :meth:`World.feed`, which checks the rules that hold
for a single decision; :func:`check_run` checks the whole run afterwards.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime

from hypothesis import strategies as st

from orchestrator.core.effects import SendCommand
from orchestrator.core.events import (
    DeadlinePassed,
    Event,
    OperatorAbort,
    OperatorResolve,
    OperatorRetry,
    ReplyFailed,
    ReplySucceeded,
    TimerFired,
)
from orchestrator.core.machine import DEFINITION_ERRORS, Decision, decide, start
from orchestrator.core.state import (
    JSON,
    DeadlinePurpose,
    Kind,
    SagaState,
    SagaStatus,
    StepState,
)
from orchestrator.definitions.model import SagaDefinition

from .builders import T0, current_attempt, sends
from .checks import check_decision, check_start
from .noise import noise_events
from .strategies import LATE_OUTCOMES, action_outcomes

__all__ = ["MAX_MOVES", "SAGA_ID", "Entry", "World"]

SAGA_ID = "saga-p"
INPUT: dict[str, JSON] = {"x": 7}
MAX_MOVES = 200
"""Events that move the world (replies, timers, operator actions) a run may take."""
MAX_NOISE = 40
"""Duplicate, stale, unknown and refused events a run may inject on top."""

Reply = ReplySucceeded | ReplyFailed


@dataclass(frozen=True)
class Entry:
    """One call of ``decide``: the state before, the event, and what it decided."""

    before: SagaState
    event: Event
    now: datetime
    decision: Decision
    noise: bool


class World:
    """Participants, a broker that delays replies, a clock and an operator, all drawn."""

    def __init__(
        self,
        data: st.DataObject,
        saga: SagaDefinition,
        idempotent: bool,
        *,
        late_heavy: bool = False,
    ) -> None:
        self.data = data
        self.definition = saga
        self.idempotent = idempotent
        self.late_heavy = late_heavy
        self.now = T0
        self.first = start(SAGA_ID, saga, INPUT, self.now)
        check_start(self.first, self.now)
        self.state = self.first.state
        self.log: list[Entry] = []
        self.moves = 0
        self.noise_count = 0
        self.decided: dict[str, Reply] = {}
        """Idempotent inbox: the final answer per idempotency key."""
        self.pending: list[Reply] = []
        """Replies sent by participants but not delivered yet (late)."""
        self.delivered: list[Reply] = []
        self.action_effects: Counter[str] = Counter()
        self.comp_trouble: Counter[str] = Counter()
        self.comp_budget = data.draw(
            st.sampled_from([0, 1, 3, 6]), label="compensation failures per step"
        )
        self.comp_fails_for_good = data.draw(st.booleans(), label="a compensation fails for good")
        if late_heavy:
            # First attempts are often late, their replies held back until the saga
            # compensates; a retry is often refused for good; the broker redelivers: late
            # successes reach steps that failed for good, and reach them twice.
            self.outcomes = ["success"] * 5 + ["late"] * 5
            self.retry_outcomes = ["permanent"] * 3 + ["success"] * 2 + ["late", "retryable"]
            self.pending_rate, self.redelivery = 40, 3
            self.hold_late = data.draw(
                st.sampled_from(["compensating", "terminal"]), label="late replies wait until"
            )
        else:
            self.outcomes = self.retry_outcomes = action_outcomes(data)
            self.pending_rate = data.draw(st.sampled_from([10, 25, 45]), label="late rate")
            self.redelivery = data.draw(st.sampled_from([0, 1, 3]), label="redelivery weight")
            self.hold_late = data.draw(
                st.sampled_from(["never", "compensating"]), label="late replies wait until"
            )
        self.refused_keys: set[str] = set()
        """Compensation keys a participant answered with a permanent failure."""
        self.operator_retries = 0
        self.resolved = False
        self.in_flight: dict[tuple[str, Kind], SendCommand] = {}
        self._note_sends(self.first)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Drive the saga until it is terminal and nothing is left to deliver."""
        while self.moves < MAX_MOVES:
            status = self.state.status
            if status.terminal and self.armed():
                self.progress()  # stopped for an operator: steps of its group are awaited
                continue
            deadline = self.state.deadline
            if deadline is not None and self.draw(st.integers(0, 30), "deadline passes") == 0:
                self.now = max(self.now, deadline)
                self.move(DeadlinePassed())
                continue
            if status.terminal:
                if self.pending:
                    self.deliver_pending()
                    continue
                if status is SagaStatus.FAILED and self.operator_acts():
                    continue
                for _ in range(self.draw(st.integers(0, 3), "noise after the end")):
                    self.noise()
                return
            move = self.draw(st.integers(0, 99), "move")
            if move < 55:
                self.progress()
            elif move < 55 + self.pending_rate and self.pending and self.may_deliver_late():
                self.deliver_pending()
            elif move < 55 + self.pending_rate:
                self.progress()
            elif move < 96 and self.noise_count < MAX_NOISE:
                self.noise()
            elif move < 98 and status is SagaStatus.RUNNING:
                self.move(OperatorAbort(reason="drawn"))
            elif self.noise_count < MAX_NOISE:
                self.refused_operator()
            else:
                self.progress()
        raise AssertionError(
            f"saga not terminal after {MAX_MOVES} moves: {self.state.status.value}"
        )

    def armed(self) -> list[StepState]:
        """The steps waiting for a reply or a timer (several in a parallel group)."""
        return [step for step in self.state.steps if step.deadline is not None]

    def draw(self, strategy: st.SearchStrategy[int], label: str) -> int:
        return self.data.draw(strategy, label=label)

    def operator_acts(self) -> bool:
        """At a failed saga, the operator retries, resolves, or leaves it; True if they acted."""
        choice = self.draw(st.integers(0, 2), "operator: 0 retry, 1 resolve, 2 leave")
        if choice == 0 and self.operator_retries < len(self.definition.steps) + 1:
            self.operator_retries += 1
            decision = self.move(OperatorRetry(reason="drawn"))
            if decision.refusal is not None:
                # Only a step that was never sent (its payload or condition is at fault).
                errors = [s.error.code for s in self.state.steps if s.error is not None]
                assert set(errors) & set(DEFINITION_ERRORS), decision.refusal
                return False
            return True
        if choice == 1:
            decision = self.move(OperatorResolve(reason="drawn"))
            assert decision.refusal is None, decision.refusal
            self.resolved = True
            return True
        return False

    def progress(self) -> None:
        """Answer the command the saga waits on, or let its deadline pass."""
        armed = self.armed()
        assert armed, f"a {self.state.status.value} saga waits on nothing"
        waiting = armed[0] if len(armed) == 1 else self.data.draw(st.sampled_from(armed), "which")
        deadline = waiting.deadline
        assert deadline is not None
        if deadline.purpose is DeadlinePurpose.RETRY:
            self.fire(waiting)
            return
        command = self.in_flight[(waiting.name, deadline.kind)]
        assert command.attempt == current_attempt(waiting, deadline.kind)
        if deadline.kind is Kind.ACTION:
            self.answer_action(command, waiting)
        else:
            self.answer_compensation(command, waiting)

    # -- participants -----------------------------------------------------------------------

    def answer_action(self, command: SendCommand, waiting: StepState) -> None:
        if self.answer_from_inbox(command, waiting):
            return
        mood = self.outcomes if command.attempt == 1 else self.retry_outcomes
        if self.late_heavy and command.step == self.definition.steps[0].name:
            mood = ["success"]  # something to compensate while late replies come in
        outcome = self.data.draw(st.sampled_from(mood), label="action outcome")
        if outcome == "lost":
            self.fire(waiting)  # the command was lost: no effect, no reply
            return
        late = outcome == "late"
        if late:
            outcome = self.data.draw(st.sampled_from(LATE_OUTCOMES), label="late outcome")
        if outcome == "success":
            self.action_effects[command.step] += 1
            reply: Reply = self.success(command, {"v": f"{command.step}#{command.attempt}"})
        else:
            reply = self.failure(command, retryable=outcome == "retryable")
        self.remember(command, reply)
        self.send_back(reply, waiting, late)

    def answer_compensation(self, command: SendCommand, waiting: StepState) -> None:
        if self.answer_from_inbox(command, waiting):
            return
        fresh_key = ":r" in command.idempotency_key
        if (
            self.comp_fails_for_good
            and not fresh_key
            and self.draw(st.integers(0, 1), "compensation fails for good")
        ):
            reply: Reply = self.failure(command, retryable=False)
            self.remember(command, reply)
            self.send_back(reply, waiting, late=False)
            return
        choice = 0
        if self.comp_trouble[command.step] < self.comp_budget:
            choice = self.draw(st.integers(0, 99), "compensation outcome")
        if choice >= 50:
            self.comp_trouble[command.step] += 1
        if 75 <= choice < 90:
            self.fire(waiting)  # lost
            return
        late = choice >= 90
        succeeded = choice < 50 or (late and self.draw(st.integers(0, 1), "late comp succeeds"))
        if succeeded:
            reply = self.success(command, {"undone": command.step})
        else:
            reply = self.failure(command, retryable=True)
        self.remember(command, reply)
        self.send_back(reply, waiting, late)

    def answer_from_inbox(self, command: SendCommand, waiting: StepState) -> bool:
        """An idempotent participant answers a key it has settled without running again."""
        if not self.idempotent or command.idempotency_key not in self.decided:
            return False
        reply = replace(self.decided[command.idempotency_key], attempt=command.attempt)
        self.remember(command, reply)
        late = self.draw(st.integers(0, 4), "inbox answer late") == 0
        self.send_back(reply, waiting, late)
        return True

    def remember(self, command: SendCommand, reply: Reply) -> None:
        settled = isinstance(reply, ReplySucceeded) or not reply.retryable
        if self.idempotent and settled:
            self.decided[command.idempotency_key] = reply
        if (
            isinstance(reply, ReplyFailed)
            and not reply.retryable
            and command.kind is Kind.COMPENSATION
        ):
            self.refused_keys.add(command.idempotency_key)

    def send_back(self, reply: Reply, waiting: StepState, late: bool) -> None:
        if late:
            self.pending.append(reply)
            self.fire(waiting)
        else:
            self.deliver(reply)

    @staticmethod
    def success(command: SendCommand, result: JSON) -> ReplySucceeded:
        return ReplySucceeded(
            command.step, command.kind, command.attempt, command.idempotency_key, result
        )

    @staticmethod
    def failure(command: SendCommand, *, retryable: bool) -> ReplyFailed:
        code = "flaky" if retryable else "refused"
        return ReplyFailed(
            command.step,
            command.kind,
            command.attempt,
            command.idempotency_key,
            code,
            f"{code} at {command.step}",
            retryable,
        )

    # -- delivery ---------------------------------------------------------------------------

    def deliver(self, reply: Reply) -> None:
        self.delivered.append(reply)
        self.move(reply)
        # At-least-once delivery: the broker may hand the same reply over again at once.
        if self.redelivery and self.draw(st.integers(0, 3), "redelivered") < self.redelivery:
            self.noise_count += 1
            self.ignored(reply)

    def may_deliver_late(self) -> bool:
        """Some worlds hold late replies back while the saga runs (a slow reply queue)."""
        if self.hold_late == "terminal":
            return self.state.status.terminal
        return self.hold_late == "never" or self.state.status is not SagaStatus.RUNNING

    def deliver_pending(self) -> None:
        # Often the newest: the reply of the step that just failed for good.
        index = self.draw(st.integers(-3, len(self.pending) - 1), "which late reply")
        self.deliver(self.pending.pop(max(index, -1)))

    def fire(self, waiting: StepState) -> None:
        deadline = waiting.deadline
        assert deadline is not None
        self.now = max(self.now, deadline.at)
        self.move(
            TimerFired(
                waiting.name,
                deadline.kind,
                current_attempt(waiting, deadline.kind),
                deadline.purpose,
            )
        )

    # -- noise: events that must change nothing --------------------------------------------

    def noise(self) -> None:
        """Inject a duplicate, stale, early, unknown or mis-keyed event; it must be ignored."""
        self.noise_count += 1
        for event in noise_events(self.data, self.state, self.now, self.delivered):
            self.ignored(event)

    def refused_operator(self) -> None:
        """An operator action the saga's status does not allow: refused, nothing changes."""
        self.noise_count += 1
        status = self.state.status
        events: list[Event] = []
        if status is not SagaStatus.RUNNING:
            events.append(OperatorAbort(reason="refused"))
        if status is not SagaStatus.FAILED:
            events += [OperatorRetry(reason="refused"), OperatorResolve(reason="refused")]
        for event in events:
            decision = self.ignored(event)
            assert decision.refusal, f"{event} on a {status.value} saga was not refused"

    # -- feeding ----------------------------------------------------------------------------

    def move(self, event: Event) -> Decision:
        self.moves += 1
        return self.feed(event, noise=False)

    def ignored(self, event: Event) -> Decision:
        return self.feed(event, noise=True)

    def feed(self, event: Event, *, noise: bool) -> Decision:
        before = self.state
        decision = decide(before, event, self.now)
        assert decide(before, event, self.now) == decision, "decide is not deterministic"
        self.log.append(Entry(before, event, self.now, decision, noise))
        check_decision(before, event, decision, self.now, noise=noise)
        if not noise:
            # Every event is idempotent: the same event again, at once, is a duplicate.
            again = decide(decision.state, event, self.now)
            check_decision(decision.state, event, again, self.now, noise=True)
        self.state = decision.state
        self._note_sends(decision)
        return decision

    def _note_sends(self, decision: Decision) -> None:
        for command in sends(decision):
            self.in_flight[(command.step, command.kind)] = command
