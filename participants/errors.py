"""Errors of the participant SDK; a handler raises the first two to shape its reply."""

from __future__ import annotations

from orchestrator.errors import SagaError


def valid_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (from ``os.fsdecode`` of odd file names,
    say) become backslash escapes, so the text can be stored and sent."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ParticipantError(Exception):
    """Root of the participant SDK's errors."""


class StepError(ParticipantError):
    """A handler's failure, answered to the orchestrator with ``code`` and ``message``."""

    retryable: bool = True

    def __init__(self, code: str, message: str = "") -> None:
        code = valid_text((code or "failed")[:200])  # the wire allows 1-200 characters
        message = valid_text(message)
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message or code


class PermanentError(StepError):
    """The step failed for good: the orchestrator will not retry it and starts compensating."""

    retryable = False


class RetryableError(StepError):
    """The step failed this time; the orchestrator retries it after the backoff."""

    retryable = True


class HandlerDefinitionError(ParticipantError):
    """A handler's signature cannot be used (wrong parameters or a duplicate command)."""


class ParticipantLoadError(ParticipantError, SagaError):
    """``saga participant run MODULE:ATTR`` could not find a Participant there."""
