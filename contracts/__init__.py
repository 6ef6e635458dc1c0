"""The wire contract shared by the orchestrator and participants: models, encoding, errors.

Only pydantic and the standard library are imported here, so a participant can depend on
``contracts`` alone. :mod:`contracts.messages` defines every message; :mod:`contracts.wire`
is the one place that maps a message to a body, AMQP properties and headers, and back.
"""

from contracts.errors import (
    ContractError,
    EncodeError,
    InvalidMessage,
    MessageRejected,
    MessageTooLarge,
    NotJson,
    NotUtf8,
    TooDeep,
    UnexpectedMessageType,
    UnknownMessageType,
    UnsupportedVersion,
)
from contracts.messages import (
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    ErrorBody,
    Failure,
    JsonObject,
    Message,
    StartReply,
    StartRequest,
    StepCommand,
    StepReply,
    TraceContext,
)
from contracts.wire import (
    CONTENT_TYPE,
    MAX_BODY_BYTES,
    MAX_DEPTH,
    Header,
    WireMessage,
    decode,
    encode,
)

__all__ = [
    "CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "ContractError",
    "EncodeError",
    "ErrorBody",
    "Failure",
    "Header",
    "InvalidMessage",
    "JsonObject",
    "Message",
    "MessageRejected",
    "MessageTooLarge",
    "NotJson",
    "NotUtf8",
    "StartReply",
    "StartRequest",
    "StepCommand",
    "StepReply",
    "TooDeep",
    "TraceContext",
    "UnexpectedMessageType",
    "UnknownMessageType",
    "UnsupportedVersion",
    "WireMessage",
    "decode",
    "encode",
]
