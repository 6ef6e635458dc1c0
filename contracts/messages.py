"""Every message on the wire, as frozen pydantic models: the single source of the format.

Four messages travel: a start request to the orchestrator and its reply, a step command to a
participant and its reply. Each carries ``type`` (the discriminator), ``schema_version``,
``message_id`` and, out of band in the AMQP headers, a W3C trace context. The models validate
strictly (no ``"3"`` for ``3``, no unknown fields) because the same models read what other
services, possibly in other languages, send; :mod:`contracts.wire` maps them to bytes and back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator

SCHEMA_VERSION: Final = 1
"""The schema version this code writes."""

SUPPORTED_SCHEMA_VERSIONS: Final = frozenset({1})
"""The schema versions this code reads."""

_MAX_NAME: Final = 200
_MAX_KEY: Final = 400
_MAX_TEXT: Final = 4000
_MAX_COUNT: Final = 2**31 - 1  # attempts and versions travel as AMQP integer headers

if TYPE_CHECKING:
    JsonObject = dict[str, Any]
else:
    # Validated as JSON all the way down (finite numbers, string keys), so every model can be
    # encoded; typed as dict[str, Any] so callers can index into it without casts.
    JsonObject = dict[str, JsonValue]

# Ids become AMQP shortstr properties (message_id, correlation_id, at most 255 bytes): keeping
# them printable ASCII keeps the byte length equal to the character length.
_Id = Annotated[
    str, StringConstraints(min_length=1, max_length=_MAX_NAME, pattern=r"^[\x21-\x7e]+$")
]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_NAME)]
_Key = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_KEY)]
_Code = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_NAME)]
_Text = Annotated[str, StringConstraints(max_length=_MAX_TEXT)]
_Count = Annotated[int, Field(ge=1, le=_MAX_COUNT)]
_Kind = Literal["action", "compensation"]
_Outcome = Literal["success", "failure"]

# W3C Trace Context: lowercase hex, ids not all zero, version ff invalid. Python's re engine for
# the lookaheads, with \Z because its $ would let a trailing newline through.
_TRACEPARENT = r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}\Z"
_TRACESTATE = r"^[\x20-\x7e]{1,4096}\Z"  # W3C asks to propagate at least 512 characters
_TRACEPARENT_RE = re.compile(_TRACEPARENT)
_TRACESTATE_RE = re.compile(_TRACESTATE)


def _header_text(value: object) -> str | None:
    """A header value as text, or None when it is neither str nor ASCII bytes."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


class TraceContext(BaseModel):
    """A W3C trace context; it travels in the ``traceparent``/``tracestate`` headers."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, regex_engine="python-re")

    traceparent: Annotated[str, StringConstraints(pattern=_TRACEPARENT)]
    tracestate: Annotated[str, StringConstraints(pattern=_TRACESTATE)] | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, object] | None) -> TraceContext | None:
        """The trace context in AMQP headers (str or bytes values), or None if absent or invalid.

        A bad ``traceparent`` only loses the trace, never the message; a bad ``tracestate``
        (optional vendor data) is dropped and the ``traceparent`` kept.
        """
        if not headers:
            return None
        traceparent = _header_text(headers.get("traceparent"))
        if traceparent is None or _TRACEPARENT_RE.match(traceparent) is None:
            return None
        tracestate = _header_text(headers.get("tracestate"))
        if tracestate is not None and _TRACESTATE_RE.match(tracestate) is None:
            tracestate = None
        return cls(traceparent=traceparent, tracestate=tracestate)

    def to_headers(self) -> dict[str, str]:
        """``traceparent`` and, when set, ``tracestate``: an OpenTelemetry carrier too."""
        if self.tracestate is None:
            return {"traceparent": self.traceparent}
        return {"traceparent": self.traceparent, "tracestate": self.tracestate}


class ErrorBody(BaseModel):
    """Why the orchestrator refused a start request (unknown saga, input against its schema)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    code: _Code
    message: _Text


class Failure(BaseModel):
    """Why a step failed; ``retryable`` says whether another attempt may succeed."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    code: _Code
    message: _Text
    retryable: bool


class _Envelope(BaseModel):
    """What every message carries."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: _Id
    trace: TraceContext | None = None


class StartRequest(_Envelope):
    """Start a saga (``saga start``): to the queue ``saga.orchestrator.start``."""

    type: Literal["saga.start"] = "saga.start"
    saga_name: _Name
    saga_version: _Count | None = None
    """None starts the latest version of the definition."""
    input: JsonObject
    idempotency_key: _Key | None = None
    """A key seen before returns the saga it started instead of starting another."""


class StartReply(_Envelope):
    """The orchestrator's answer to a start request: the saga id, or why it refused."""

    type: Literal["saga.start_reply"] = "saga.start_reply"
    request_id: _Id
    """The ``message_id`` of the start request answered."""
    saga_id: _Id | None = None
    created: bool
    """False when the idempotency key was seen before (or the start was refused)."""
    error: ErrorBody | None = None

    @model_validator(mode="after")
    def _saga_id_or_error(self) -> StartReply:
        if (self.saga_id is None) == (self.error is None):
            raise ValueError("a start reply has exactly one of saga_id and error")
        if self.error is not None and self.created:
            raise ValueError("a refused start reply cannot have created true")
        return self

    @classmethod
    def accepted(
        cls,
        request: StartRequest,
        saga_id: str,
        *,
        created: bool,
        message_id: str,
        trace: TraceContext | None = None,
    ) -> StartReply:
        """The reply to ``request`` naming its saga (``created`` false for a known key)."""
        return cls(
            message_id=message_id,
            trace=trace,
            request_id=request.message_id,
            saga_id=saga_id,
            created=created,
        )

    @classmethod
    def refused(
        cls,
        request: StartRequest,
        code: str,
        message: str,
        *,
        message_id: str,
        trace: TraceContext | None = None,
    ) -> StartReply:
        """The reply to ``request`` saying why no saga was started."""
        return cls(
            message_id=message_id,
            trace=trace,
            request_id=request.message_id,
            created=False,
            error=ErrorBody(code=code, message=_clip(message)),
        )


class StepCommand(_Envelope):
    """Run a step's action or compensation: to the queue ``saga.participant.<name>``."""

    type: Literal["saga.command"] = "saga.command"
    saga_id: _Id
    saga_name: _Name
    saga_version: _Count
    step: _Name
    kind: _Kind
    command: _Name
    attempt: _Count
    """1 for the first attempt; every attempt carries the same idempotency key."""
    idempotency_key: _Key
    action_key: _Key | None = None
    """In a compensation: the idempotency key its action ran under. None for an action."""
    payload: JsonObject

    @model_validator(mode="after")
    def _action_key_for_compensation(self) -> StepCommand:
        if self.kind == "compensation" and self.action_key is None:
            raise ValueError("action_key is required for a compensation")
        if self.kind == "action" and self.action_key is not None:
            raise ValueError("action_key must be null for an action")
        return self


class StepReply(_Envelope):
    """A participant's answer to a step command: to the queue ``saga.orchestrator.replies``."""

    type: Literal["saga.reply"] = "saga.reply"
    saga_id: _Id
    step: _Name
    kind: _Kind
    attempt: _Count
    idempotency_key: _Key
    outcome: _Outcome
    result: JsonObject | None = None
    """The handler's result on success (may be empty); None on failure."""
    error: Failure | None = None
    """Why the step failed; None on success."""

    @model_validator(mode="after")
    def _result_or_error(self) -> StepReply:
        if self.outcome == "success" and (self.result is None or self.error is not None):
            raise ValueError("a success reply has a result and no error")
        if self.outcome == "failure" and (self.error is None or self.result is not None):
            raise ValueError("a failure reply has an error and no result")
        return self

    @classmethod
    def success(
        cls,
        command: StepCommand,
        result: Mapping[str, Any],
        *,
        message_id: str,
        trace: TraceContext | None = None,
    ) -> StepReply:
        """The success reply to ``command`` with the handler's ``result``."""
        return cls(
            message_id=message_id,
            trace=trace,
            saga_id=command.saga_id,
            step=command.step,
            kind=command.kind,
            attempt=command.attempt,
            idempotency_key=command.idempotency_key,
            outcome="success",
            result=dict(result),
        )

    @classmethod
    def failure(
        cls,
        command: StepCommand,
        code: str,
        message: str,
        retryable: bool,
        *,
        message_id: str,
        trace: TraceContext | None = None,
    ) -> StepReply:
        """The failure reply to ``command``; a ``message`` over 4000 characters is shortened."""
        return cls(
            message_id=message_id,
            trace=trace,
            saga_id=command.saga_id,
            step=command.step,
            kind=command.kind,
            attempt=command.attempt,
            idempotency_key=command.idempotency_key,
            outcome="failure",
            error=Failure(code=code, message=_clip(message), retryable=retryable),
        )


def _clip(text: str) -> str:
    """``text`` cut to the longest message the contract carries, marked as cut."""
    if len(text) <= _MAX_TEXT:
        return text
    return text[: _MAX_TEXT - 1] + "…"


Message = Annotated[
    StartRequest | StartReply | StepCommand | StepReply, Field(discriminator="type")
]
"""Any message of the contract, discriminated on ``type``."""

MESSAGE_TYPES: Final[Mapping[str, type[StartRequest | StartReply | StepCommand | StepReply]]] = {
    "saga.start": StartRequest,
    "saga.start_reply": StartReply,
    "saga.command": StepCommand,
    "saga.reply": StepReply,
}
"""Each message ``type`` and its model."""

__all__ = [
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "ErrorBody",
    "Failure",
    "JsonObject",
    "Message",
    "StartReply",
    "StartRequest",
    "StepCommand",
    "StepReply",
    "TraceContext",
]
