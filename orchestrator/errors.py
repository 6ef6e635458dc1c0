"""The orchestrator's error hierarchy: everything it raises on purpose derives from SagaError."""

from __future__ import annotations


class SagaError(Exception):
    """Root of the orchestrator's own errors; its message is a sentence for the user."""


class UsageError(SagaError):
    """The user asked for something that cannot be done as asked (bad argument, unknown id)."""
