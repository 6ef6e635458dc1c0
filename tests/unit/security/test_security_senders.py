"""The reply-sender check on a saga's state: a reply is accepted only from the broker user
mapped to the participant of its step (the integration tests drive it over the broker)."""

from __future__ import annotations

import pytest

from contracts import MessageRejected
from orchestrator.core.state import SagaState
from orchestrator.definitions.model import SagaDefinition, StepDefinition
from orchestrator.senders import ReplySenders, WrongSender

SAGA = SagaState.new(
    "saga-1",
    SagaDefinition(
        name="trio",
        version=1,
        steps=(
            StepDefinition(name="a", participant="alpha", command="do"),
            StepDefinition(name="b", participant="beta", command="do"),
            StepDefinition(name="c", participant="gamma", command="do"),
        ),
    ),
    {},
)
SENDERS = ReplySenders({"alpha": "alpha-svc", "beta": "beta-svc"})


def test_the_participants_own_user_is_accepted() -> None:
    SENDERS.check(SAGA, "a", "alpha-svc")
    SENDERS.check(SAGA, "b", "beta-svc")


def test_another_participants_user_is_rejected_with_the_reason() -> None:
    with pytest.raises(WrongSender) as caught:
        SENDERS.check(SAGA, "b", "alpha-svc")
    assert str(caught.value) == (
        "reply for step 'b' of saga saga-1 came from user 'alpha-svc', "
        "but participant 'beta' is 'beta-svc'"
    )
    # Dead-lettered by the consumer like any message it cannot use, never requeued.
    assert isinstance(caught.value, MessageRejected)


def test_a_reply_without_user_id_is_rejected() -> None:
    with pytest.raises(WrongSender) as caught:
        SENDERS.check(SAGA, "a", None)
    assert str(caught.value) == (
        "reply for step 'a' of saga saga-1 came from no user (it has no user_id property), "
        "but participant 'alpha' is 'alpha-svc'"
    )


def test_a_participant_left_out_of_the_mapping_accepts_no_one() -> None:
    # Possible for a saga started under an older definition with another participant.
    with pytest.raises(WrongSender, match="participant 'gamma' has no user in the mapping"):
        SENDERS.check(SAGA, "c", "gamma-svc")


def test_a_step_the_saga_does_not_have_is_left_to_the_state_machine() -> None:
    SENDERS.check(SAGA, "zzz", "anyone")
