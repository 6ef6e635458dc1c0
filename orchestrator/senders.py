"""Who may answer for a participant: the reply-sender check (RELIABILITY.md B11).

Participants stamp the AMQP ``user_id`` property of every message with the user of their
own connection, and RabbitMQ refuses (closes the channel with PRECONDITION_FAILED) a
``user_id`` that is not the publisher's. So ``user_id`` on a delivered reply names the
broker user that really sent it. With ``SAGA_REPLY_USERS`` set, the orchestrator accepts a
reply only from the user mapped to the participant of the reply's step: a compromised or
misconfigured service can then neither answer for another participant's step nor move a
saga it has no part in. Unset, nothing is checked (the development default, where every
service shares one user).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contracts import MessageRejected
from orchestrator.core.state import SagaState
from orchestrator.errors import SagaError

__all__ = ["REPLY_USERS_VARIABLE", "ReplySenders", "ReplyUsersError", "WrongSender"]

REPLY_USERS_VARIABLE = "SAGA_REPLY_USERS"

_PARTICIPANT = re.compile(r"[A-Za-z0-9_.-]+")


class ReplyUsersError(SagaError):
    """``SAGA_REPLY_USERS`` is malformed, or leaves out a participant the definitions use."""


class WrongSender(MessageRejected):
    """A reply came from a broker user other than the one its step's participant runs as."""

    code: str = "wrong_sender"


@dataclass(frozen=True)
class ReplySenders:
    """The broker user each participant's replies must come from."""

    users: Mapping[str, str] = field(default_factory=dict)
    """Participant name to RabbitMQ user name."""

    @classmethod
    def parse(cls, raw: str) -> ReplySenders | None:
        """``participant=user,participant=user``; None (no check) when empty."""
        users: dict[str, str] = {}
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            participant, sep, user = (part.strip() for part in item.partition("="))
            if not sep or not participant or not user:
                raise ReplyUsersError(
                    f"{REPLY_USERS_VARIABLE} has {item!r}, which is not participant=user "
                    "(expected a comma-separated list like 'inventory=inventory-svc,"
                    "payments=payments-svc')"
                )
            if not _PARTICIPANT.fullmatch(participant):
                raise ReplyUsersError(
                    f"{REPLY_USERS_VARIABLE} names the participant {participant!r}, which is "
                    "not a participant name (letters, digits, '_', '.' or '-')"
                )
            if users.get(participant, user) != user:
                raise ReplyUsersError(
                    f"{REPLY_USERS_VARIABLE} maps participant {participant!r} twice, to "
                    f"{users[participant]!r} and to {user!r}"
                )
            users[participant] = user
        return cls(users) if users else None

    def require(self, participants: Iterable[str]) -> None:
        """Refuse to run with a participant that has no user: its replies could never be
        accepted, and every saga through it would stall."""
        missing = sorted(set(participants) - set(self.users))
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise ReplyUsersError(
                f"{REPLY_USERS_VARIABLE} has no user for participant {names}, which the saga "
                f"definitions use; add {missing[0]}=<its RabbitMQ user> to it"
            )

    def check(self, state: SagaState, step: str, user_id: str | None) -> None:
        """Raise :class:`WrongSender` unless ``user_id`` is the user of the participant of
        ``step`` in this saga. A step the saga does not have is let through: the state
        machine records such a reply as ignored, and it moves nothing."""
        found = state.step(step)
        if found is None:
            return
        participant = state.step_definition(found[0]).participant
        expected = self.users.get(participant)
        if expected is not None and user_id == expected:
            return
        sender = f"user {user_id!r}" if user_id else "no user (it has no user_id property)"
        wanted = f"is {expected!r}" if expected is not None else "has no user in the mapping"
        raise WrongSender(
            f"reply for step {step!r} of saga {state.saga_id} came from {sender}, "
            f"but participant {participant!r} {wanted}"
        )
