"""The participant SDK: write a service's step handlers; the SDK runs them exactly once per key.

See PRODUCT.md "Participant SDK" and :mod:`participants.runtime` for the guarantees.
"""

from participants.app import CommandHandler, Participant
from participants.context import StepContext
from participants.errors import (
    HandlerDefinitionError,
    ParticipantError,
    ParticipantLoadError,
    PermanentError,
    RetryableError,
    StepError,
)

__all__ = [
    "CommandHandler",
    "HandlerDefinitionError",
    "Participant",
    "ParticipantError",
    "ParticipantLoadError",
    "PermanentError",
    "RetryableError",
    "StepContext",
    "StepError",
]
