"""Seed-driven saga definitions: 1-5 steps, some compensable, random timeouts and retries.

The same shapes as the property tests' ``definitions`` strategy (built with the same
builders), drawn from the run's ``random.Random`` instead of hypothesis.
"""

from __future__ import annotations

import random

from core.builders import backoff, definition, step

from orchestrator.core.state import JSON
from orchestrator.definitions.model import SagaDefinition

__all__ = ["PARTICIPANTS", "random_definition"]

PARTICIPANTS = ("inventory", "payments", "shipping")
"""Participant names; several steps (of several sagas) share one participant."""


def random_definition(rng: random.Random, name: str) -> SagaDefinition:
    """A definition whose steps name each other's results, so rendering is exercised."""
    steps = []
    count = rng.randint(1, 5)
    for index in range(count):
        step_name = f"s{index}"
        payload: dict[str, JSON] = {"x": "${input.x}"}
        if index > 0 and rng.random() < 0.5:
            payload["prev"] = f"${{steps.s{index - 1}.result.v}}"
        steps.append(
            step(
                step_name,
                participant=rng.choice(PARTICIPANTS),
                payload=payload,
                compensation="undo" if rng.random() < 0.6 else None,
                compensation_payload={"own": f"${{steps.{step_name}.result.v}}"},
                timeout=rng.choice((0.5, 2.0, 5.0, 30.0)),
                max_attempts=rng.randint(1, 4),
                retry_backoff=backoff(
                    rng.choice((0.0, 0.1, 1.0, 5.0)),
                    rng.choice((1.0, 2.0, 3.0)),
                    rng.choice((0.5, 2.0, 10.0, 60.0)),
                ),
            )
        )
    return definition(*steps, output={"last": f"${{steps.s{count - 1}.result.v}}"}, name=name)
