"""Builders for the core tests: definitions in Python, replies, and a small saga driver.

Definitions are built directly as :class:`SagaDefinition` objects (no YAML), so these tests
depend on the state machine and the reference renderer only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.core.effects import Effect, Record, SendCommand
from orchestrator.core.events import Event, ReplyFailed, ReplySucceeded, TimerFired
from orchestrator.core.machine import Decision, decide, start
from orchestrator.core.state import (
    JSON,
    DeadlinePurpose,
    HistoryType,
    Kind,
    SagaState,
    SagaStatus,
    StepState,
)
from orchestrator.definitions.model import (
    Backoff,
    CompensationDefinition,
    OnFailure,
    RetryPolicy,
    SagaDefinition,
    StepDefinition,
    StepKind,
)

__all__ = [
    "ORDER",
    "T0",
    "Saga",
    "assert_ignored",
    "backoff",
    "checkout_failing_at",
    "compensated_in_order",
    "current_attempt",
    "definition",
    "order_checkout",
    "records",
    "saga_in",
    "sends",
    "step",
    "types",
]

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""The fake clock's origin."""

_UNSET: JSON = object()


def backoff(initial: float = 0.5, multiplier: float = 2.0, maximum: float = 30.0) -> Backoff:
    """A backoff policy in seconds."""
    return Backoff(
        initial=timedelta(seconds=initial),
        multiplier=multiplier,
        max=timedelta(seconds=maximum),
    )


def step(
    name: str,
    *,
    participant: str | None = None,
    command: str | None = None,
    payload: dict[str, JSON] | None = None,
    compensation: str | None = "undo",
    compensation_payload: dict[str, JSON] | None = None,
    timeout: float = 10.0,
    max_attempts: int = 3,
    retry_backoff: Backoff | None = None,
    kind: StepKind = StepKind.COMPENSATABLE,
    when: str | None = None,
    on_failure: OnFailure = OnFailure.COMPENSATE,
    retry_never: tuple[str, ...] = (),
    retry_on: tuple[str, ...] | None = None,
    group: int | None = None,
) -> StepDefinition:
    """A step on participant ``p_<name>``; ``compensation=None`` for a step with nothing to
    undo (still compensatable, unless ``kind`` says otherwise)."""
    comp = (
        None
        if compensation is None
        else CompensationDefinition(command=compensation, payload=compensation_payload or {})
    )
    return StepDefinition(
        name=name,
        participant=participant or f"p_{name}",
        command=command or f"do_{name}",
        payload=payload or {},
        timeout=timedelta(seconds=timeout),
        retry=RetryPolicy(
            max_attempts=max_attempts,
            backoff=retry_backoff or backoff(),
            on=retry_on,
            never=retry_never,
        ),
        compensation=comp,
        kind=kind,
        when=when,
        on_failure=on_failure,
        group=group,
    )


def definition(
    *steps: StepDefinition,
    output: dict[str, JSON] | None = None,
    name: str = "test_saga",
    deadline: float | None = None,
) -> SagaDefinition:
    """A definition with the given steps (and a deadline in seconds)."""
    limit = None if deadline is None else timedelta(seconds=deadline)
    return SagaDefinition(name=name, version=1, steps=steps, output=output, deadline=limit)


def order_checkout() -> SagaDefinition:
    """PRODUCT.md's ``order_checkout`` example, defaults applied by hand."""
    policy = RetryPolicy(max_attempts=3, backoff=backoff(0.5, 2.0, 30.0))
    return SagaDefinition(
        name="order_checkout",
        version=1,
        description="Reserve stock, charge the card, confirm the order.",
        steps=(
            StepDefinition(
                name="reserve_stock",
                participant="inventory",
                command="reserve",
                payload={"order_id": "${input.order_id}", "note": "order ${input.order_id}"},
                timeout=timedelta(seconds=10),
                retry=policy,
                compensation=CompensationDefinition(
                    command="release",
                    payload={"reservation_id": "${steps.reserve_stock.result.reservation_id}"},
                ),
            ),
            StepDefinition(
                name="charge_card",
                participant="payments",
                command="charge",
                payload={"amount": "${input.amount}"},
                timeout=timedelta(seconds=5),
                retry=RetryPolicy(max_attempts=5, backoff=policy.backoff),
                compensation=CompensationDefinition(
                    command="refund",
                    payload={"charge_id": "${steps.charge_card.result.charge_id}"},
                ),
            ),
            StepDefinition(
                name="send_confirmation",
                participant="notifications",
                command="send_email",
                payload={"order_id": "${input.order_id}"},
                timeout=timedelta(seconds=10),
                retry=policy,
            ),
        ),
        output={"charge_id": "${steps.charge_card.result.charge_id}"},
    )


def current_attempt(step_state: StepState, kind: Kind) -> int:
    """The attempt in flight (or last sent) of a step's action or compensation."""
    if kind is Kind.ACTION:
        return step_state.attempts
    return step_state.compensation.attempts if step_state.compensation is not None else 0


def sends(decision: Decision) -> list[SendCommand]:
    """The commands a decision sends."""
    return [effect for effect in decision.effects if isinstance(effect, SendCommand)]


def records(decision: Decision) -> list[Record]:
    """The history records a decision appends."""
    return [effect for effect in decision.effects if isinstance(effect, Record)]


def types(effects: list[Effect] | tuple[Effect, ...] | Decision) -> list[HistoryType]:
    """The history types among some effects (or a decision's effects), in order."""
    items = effects.effects if isinstance(effects, Decision) else effects
    return [effect.type for effect in items if isinstance(effect, Record)]


class Saga:
    """One saga driven through the pure machine with a fake clock; keeps every decision."""

    def __init__(
        self,
        definition: SagaDefinition,
        input: JSON = _UNSET,
        saga_id: str = "saga-1",
        now: datetime = T0,
    ) -> None:
        self.definition = definition
        self.now = now
        first = start(saga_id, definition, {} if input is _UNSET else input, now)
        self.state: SagaState = first.state
        self.decisions: list[Decision] = [first]

    @property
    def last(self) -> Decision:
        """The most recent decision."""
        return self.decisions[-1]

    def feed(self, event: Event) -> Decision:
        """Apply ``event`` at the current time and keep the new state."""
        decision = decide(self.state, event, self.now)
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward."""
        self.now += timedelta(seconds=seconds)

    def status(self) -> SagaStatus:
        """The saga's status now (a call, so type narrowing does not stick across events)."""
        return self.state.status

    def index(self, name: str) -> int:
        """The position of step ``name``."""
        return self.definition.step_index(name)

    def of(self, name: str) -> StepState:
        """The state of step ``name``."""
        return self.state.steps[self.index(name)]

    def current_attempt(self, name: str, kind: Kind) -> int:
        """The attempt in flight (or last sent) of the step's action or compensation."""
        return current_attempt(self.of(name), kind)

    def key(self, name: str, kind: Kind = Kind.ACTION) -> str:
        """The step's current idempotency key for ``kind``."""
        index = self.index(name)
        if kind is Kind.ACTION:
            return self.state.action_key(index)
        return self.state.compensation_key(index)

    def succeed(
        self,
        name: str,
        result: JSON = None,
        *,
        attempt: int | None = None,
        kind: Kind = Kind.ACTION,
        key: str | None = None,
    ) -> Decision:
        """Deliver a success for the step (the attempt in flight unless told)."""
        return self.feed(self.success(name, result, attempt=attempt, kind=kind, key=key))

    def success(
        self,
        name: str,
        result: JSON = None,
        *,
        attempt: int | None = None,
        kind: Kind = Kind.ACTION,
        key: str | None = None,
    ) -> ReplySucceeded:
        """A success reply for the step, built from the current state."""
        return ReplySucceeded(
            step=name,
            kind=kind,
            attempt=self.current_attempt(name, kind) if attempt is None else attempt,
            idempotency_key=self.key(name, kind) if key is None else key,
            result={} if result is None else result,
        )

    def failure(
        self,
        name: str,
        *,
        retryable: bool,
        attempt: int | None = None,
        kind: Kind = Kind.ACTION,
        code: str = "boom",
        key: str | None = None,
    ) -> ReplyFailed:
        """A failure reply for the step, built from the current state."""
        return ReplyFailed(
            step=name,
            kind=kind,
            attempt=self.current_attempt(name, kind) if attempt is None else attempt,
            idempotency_key=self.key(name, kind) if key is None else key,
            code=code,
            message=f"{code} in {name}",
            retryable=retryable,
        )

    def fail(
        self,
        name: str,
        *,
        retryable: bool,
        attempt: int | None = None,
        kind: Kind = Kind.ACTION,
        code: str = "boom",
    ) -> Decision:
        """Deliver a failure for the step (the attempt in flight unless told)."""
        return self.feed(
            self.failure(name, retryable=retryable, attempt=attempt, kind=kind, code=code)
        )

    def fire(self, name: str) -> Decision:
        """Move the clock to the step's deadline and fire it."""
        deadline = self.of(name).deadline
        assert deadline is not None, f"step {name!r} has no deadline to fire"
        self.now = max(self.now, deadline.at)
        return self.feed(
            TimerFired(
                step=name,
                kind=deadline.kind,
                attempt=self.current_attempt(name, deadline.kind),
                purpose=deadline.purpose,
            )
        )

    def time_out(self, name: str) -> Decision:
        """Let the attempt in flight time out (fires its reply deadline)."""
        deadline = self.of(name).deadline
        assert deadline is not None
        assert deadline.purpose is DeadlinePurpose.REPLY
        return self.fire(name)

    def all_sends(self) -> list[SendCommand]:
        """Every command sent so far, in order."""
        return [send for decision in self.decisions for send in sends(decision)]

    def history(self) -> list[Record]:
        """Every history record so far, in order."""
        return [record for decision in self.decisions for record in records(decision)]

    def history_types(self) -> list[HistoryType]:
        """The types of every history record so far."""
        return [record.type for record in self.history()]


ORDER: dict[str, JSON] = {"order_id": "o-1", "amount": 42}
"""An input for :func:`order_checkout`."""


def assert_ignored(decision: Decision) -> None:
    """An ignored event: nothing moved, nothing sent, at most a reply_ignored record."""
    assert decision.changed is False
    assert sends(decision) == []
    assert set(types(decision)) <= {HistoryType.REPLY_IGNORED}


def checkout_failing_at(failing: str) -> Saga:
    """order_checkout run until ``failing`` answers a permanent failure."""
    saga = Saga(order_checkout(), ORDER)
    results = {
        "reserve_stock": {"reservation_id": "r-1"},
        "charge_card": {"charge_id": "c-1"},
    }
    for name in ("reserve_stock", "charge_card", "send_confirmation"):
        if name == failing:
            saga.fail(name, retryable=False, code="declined")
            return saga
        saga.succeed(name, results.get(name, {}))
    raise AssertionError(f"no step {failing}")


def compensated_in_order(saga: Saga) -> list[str]:
    """The steps whose compensation was sent, in the order of their first send."""
    seen: list[str] = []
    for send in saga.all_sends():
        if send.kind is Kind.COMPENSATION and send.step not in seen:
            seen.append(send.step)
    return seen


def saga_in(status: SagaStatus) -> Saga:
    """A two-step saga (a, b; both compensable) driven into ``status``."""
    saga = Saga(definition(step("a"), step("b")))
    saga.succeed("a")
    if status is SagaStatus.COMPLETED:
        saga.succeed("b")
        return saga
    saga.fail("b", retryable=False)
    if status is SagaStatus.COMPENSATED:
        saga.succeed("a", kind=Kind.COMPENSATION)
    elif status is SagaStatus.FAILED:
        saga.fail("a", kind=Kind.COMPENSATION, retryable=False)
    assert saga.status() is status
    return saga
