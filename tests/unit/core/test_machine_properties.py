"""Property tests of the saga state machine over random worlds (see ``world.py``).

Each example builds a random 2-5 step definition and drives one saga through random
replies, timeouts, late and duplicate replies, stale timers, unknown replies and operator
actions. ``World.feed`` checks every single decision and :func:`check_run` the whole run
(both in ``checks.py``).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.definitions.model import SagaDefinition

from .checks import check_run
from .strategies import definitions
from .world import World

# A passing run takes seconds; a failing one spends a minute or two shrinking the example
# (hypothesis stops shrinking by itself after five minutes at most).
pytestmark = pytest.mark.timeout(360)

PROPERTY_SETTINGS = settings(
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _run(data: st.DataObject, definition: SagaDefinition, idempotent: bool) -> None:
    world = World(data, definition, idempotent=idempotent)
    world.run()
    check_run(world)


@PROPERTY_SETTINGS
@given(definition=definitions(), data=st.data())
def test_any_run_with_idempotent_participants_keeps_every_rule(
    definition: SagaDefinition, data: st.DataObject
) -> None:
    _run(data, definition, idempotent=True)


@PROPERTY_SETTINGS
@given(definition=definitions(), data=st.data())
def test_any_run_with_non_idempotent_participants_keeps_every_rule(
    definition: SagaDefinition, data: st.DataObject
) -> None:
    _run(data, definition, idempotent=False)


@PROPERTY_SETTINGS
@given(definition=definitions(all_compensable=True), data=st.data())
def test_late_successes_for_failed_steps_are_compensated_once(
    definition: SagaDefinition, data: st.DataObject
) -> None:
    """Late replies held back until the saga compensates, redelivered, from participants
    that run every delivery afresh: the window where a late success meets a failed step."""
    world = World(data, definition, idempotent=False, late_heavy=True)
    world.run()
    check_run(world)


@settings(
    max_examples=200, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(definition=definitions(), data=st.data())
def test_replaying_every_delivered_reply_after_the_end_changes_nothing(
    definition: SagaDefinition, data: st.DataObject
) -> None:
    world = World(data, definition, idempotent=data.draw(st.booleans(), label="idempotent"))
    world.run()
    for reply in list(world.delivered):
        world.ignored(reply)
