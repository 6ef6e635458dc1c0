"""What a handler knows about the command it is running: :class:`StepContext`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class StepContext:
    """The command's identity, plus a session in the same transaction as its inbox entry.

    What the handler writes through ``session`` commits exactly once, together with
    the stored reply; use ``idempotency_key`` (or ``action_key`` in a compensation)
    as the idempotency key of any external call.
    """

    saga_id: str
    saga_name: str
    step: str
    kind: Literal["action", "compensation"]
    attempt: int
    idempotency_key: str
    action_key: str | None
    session: AsyncSession
    log: logging.LoggerAdapter[logging.Logger]
