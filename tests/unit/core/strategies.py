"""Hypothesis strategies for the property tests: random definitions and participant moods."""

from __future__ import annotations

from hypothesis import strategies as st

from orchestrator.core.state import JSON
from orchestrator.definitions.model import SagaDefinition

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


@st.composite
def definitions(draw: st.DrawFn, *, all_compensable: bool = False) -> SagaDefinition:
    """A random 2-5 step definition: compensations present or not, random retry policies."""
    steps = []
    count = draw(st.integers(2, 5))
    for index in range(count):
        name = f"s{index}"
        payload: dict[str, JSON] = {"x": "${input.x}", "at": f"{name} of ${{saga.id}}"}
        if index > 0 and draw(st.booleans()):
            payload["prev"] = f"${{steps.s{index - 1}.result.v}}"
        if draw(st.integers(0, 49)) == 0:
            payload["bad"] = "${input.missing}"  # fails for good with bad_reference
        steps.append(
            step(
                name,
                payload=payload,
                compensation="undo" if all_compensable or draw(st.booleans()) else None,
                compensation_payload={"own": f"${{steps.{name}.result.v}}"},
                timeout=draw(st.sampled_from([0.5, 5.0, 30.0])),
                max_attempts=draw(st.integers(1, 4)),
                retry_backoff=backoff(
                    draw(st.sampled_from([0.0, 0.1, 1.0, 5.0])),
                    draw(st.sampled_from([1.0, 2.0, 3.0])),
                    draw(st.sampled_from([0.5, 2.0, 10.0, 60.0])),
                ),
            )
        )
    return definition(*steps, output={"last": f"${{steps.s{count - 1}.result.v}}"})
