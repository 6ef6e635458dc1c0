"""Hypothesis strategies for the property tests: random definitions and participant moods."""

from __future__ import annotations

from hypothesis import strategies as st

from orchestrator.core.state import JSON
from orchestrator.definitions.model import OnFailure, SagaDefinition, StepKind

from .builders import backoff, definition, step

__all__ = ["LATE_OUTCOMES", "action_outcomes", "definitions"]

LATE_OUTCOMES = ["success", "success", "retryable", "permanent"]
"""What a late reply turns out to be, by weight."""


def action_outcomes(data: st.DataObject) -> list[str]:
    """What participants do with an action command, weighted anew for each example.

    Swarm testing: some worlds never lose a command, others are mostly late, so rare
    interleavings (a late success during compensation, say) come up far more often than
    with one fixed mix. "late": handled, the reply comes after the deadline; "lost": never
    handled, no reply.
    """
    outcomes = ["success"] * 6
    for outcome, choices in (
        ("retryable", [0, 1, 3]),
        ("permanent", [0, 1, 3]),
        ("lost", [0, 1, 3]),
        ("late", [0, 3, 8]),
    ):
        outcomes += [outcome] * data.draw(st.sampled_from(choices), label=f"weight of {outcome}")
    return outcomes


CONDITIONS = [
    "${input.x} == 7",
    "${input.x} != 7",
    "${input.x} > 3 and not ${input.missing}",
    "${steps.PREV.result.v} != null",
    "${input.x} < 'seven'",  # cannot be evaluated: the step fails with bad_condition
]


@st.composite
def definitions(
    draw: st.DrawFn, *, all_compensable: bool = False, language: bool = True
) -> SagaDefinition:
    """A random 2-5 step definition: compensations present or not, random retry policies;
    with ``language``, also a pivot with retriable steps after it, steps whose ``when`` may
    skip them, ``on_failure: fail`` and codes never retried."""
    steps = []
    count = draw(st.integers(2, 5))
    pivot = draw(st.none() | st.integers(0, count - 1), label="pivot") if language else None
    group = range(0)
    if language and draw(st.integers(0, 2)) == 0:
        first = draw(st.integers(0, count - 2), label="group starts at")
        size = draw(st.integers(2, count - first), label="group size")
        group = range(first, first + size)
        if pivot in group:
            pivot = None  # a pivot runs alone
    for index in range(count):
        name = f"s{index}"
        payload: dict[str, JSON] = {"x": "${input.x}", "at": f"{name} of ${{saga.id}}"}
        # A member of a parallel group sees only the steps before its group.
        sees_previous = index > 0 and not (index in group and index - 1 in group)
        if sees_previous and draw(st.booleans()):
            payload["prev"] = f"${{steps.s{index - 1}.result.v}}"
        if draw(st.integers(0, 49)) == 0:
            payload["bad"] = "${input.missing}"  # fails for good with bad_reference
        if pivot is None or index < pivot:
            compensable = all_compensable or draw(st.booleans())
            kind = StepKind.COMPENSATABLE
            if language and not compensable and draw(st.integers(0, 3)) == 0:
                kind = StepKind.RETRIABLE
        else:
            compensable = False
            kind = StepKind.PIVOT if index == pivot else StepKind.RETRIABLE
        when = None
        if language and index < count - 1 and draw(st.integers(0, 3)) == 0:
            when = draw(st.sampled_from(CONDITIONS if sees_previous else CONDITIONS[:3]))
            when = when.replace("PREV", f"s{index - 1}")
        on_failure = OnFailure.COMPENSATE
        if language and draw(st.integers(0, 5)) == 0:
            on_failure = OnFailure.FAIL
        never: tuple[str, ...] = ()
        if language and draw(st.integers(0, 5)) == 0:
            never = (draw(st.sampled_from(["timeout", "flaky"])),)
        steps.append(
            step(
                name,
                payload=payload,
                compensation="undo" if compensable else None,
                compensation_payload={"own": f"${{steps.{name}.result.v}}"},
                timeout=draw(st.sampled_from([0.5, 5.0, 30.0])),
                max_attempts=draw(st.integers(1, 4)),
                retry_backoff=backoff(
                    draw(st.sampled_from([0.0, 0.1, 1.0, 5.0])),
                    draw(st.sampled_from([1.0, 2.0, 3.0])),
                    draw(st.sampled_from([0.5, 2.0, 10.0, 60.0])),
                ),
                kind=kind,
                when=when,
                on_failure=on_failure,
                retry_never=never,
                group=1 if index in group else None,
            )
        )
    deadline = None
    if language and draw(st.integers(0, 3)) == 0:
        deadline = draw(st.sampled_from([1.0, 10.0, 100.0]), label="deadline seconds")
    return definition(
        *steps, output={"last": f"${{steps.s{count - 1}.result.v}}"}, deadline=deadline
    )
