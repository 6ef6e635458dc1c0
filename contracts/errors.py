"""Errors of the wire contract: a message that cannot be read, or a model that cannot be sent.

Every :class:`MessageRejected` is final for that delivery: the consumer dead-letters it
(``nack(requeue=False)``) with ``str(error)`` as the reason an operator reads in ``saga dlq list``
and ``error.code`` as a short machine label. The sentences never quote payload values, so a
secret in a payload cannot leak into a DLQ listing through them.
"""

from __future__ import annotations


class ContractError(Exception):
    """Root of the contract's errors; ``str()`` is one sentence for a person."""

    code: str = "contract_error"


class EncodeError(ContractError):
    """A model cannot be put on the wire (too large, too deeply nested, not plain JSON)."""

    def __init__(self, reason: str, *, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class MessageRejected(ContractError):
    """A received message cannot be read; it is dead-lettered, never requeued."""

    code: str = "rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageTooLarge(MessageRejected):
    """The body is larger than the consumer's byte limit; it was not parsed."""

    code: str = "too_large"


class NotUtf8(MessageRejected):
    """The body is not valid UTF-8."""

    code: str = "not_utf8"


class NotJson(MessageRejected):
    """The body is not valid JSON (or uses what JSON allows but we refuse: NaN, duplicate keys)."""

    code: str = "not_json"


class TooDeep(NotJson):
    """The body's JSON nests arrays and objects deeper than the contract allows."""

    code: str = "too_deep"


class UnknownMessageType(MessageRejected):
    """The body is not a JSON object, or its ``type`` names no message of the contract."""

    code: str = "unknown_type"


class UnsupportedVersion(MessageRejected):
    """The body's ``schema_version`` is missing or not one this service reads."""

    code: str = "unsupported_version"


class InvalidMessage(MessageRejected):
    """The body breaks its message's schema; ``problems`` lists each as ``field: what``."""

    code: str = "invalid"

    def __init__(self, reason: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.problems = problems


class UnexpectedMessageType(MessageRejected):
    """A valid message of another type arrived than the consumer expects (a command as a reply)."""

    code: str = "unexpected_type"
