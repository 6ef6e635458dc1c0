"""The one mapping between contract models and AMQP-agnostic messages (body, properties, headers).

:func:`encode` turns a model into a :class:`WireMessage` that a transport publishes as it is;
:func:`decode` turns a received body and its headers back into a model, or raises the
:class:`~contracts.errors.MessageRejected` subclass that says why it cannot (the consumer then
dead-letters the delivery with that sentence). The body is canonical JSON: compact, UTF-8, keys
sorted, every field present; the trace context travels in the headers only.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, overload

from pydantic import BaseModel, ValidationError

from contracts.errors import (
    EncodeError,
    InvalidMessage,
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
    SUPPORTED_SCHEMA_VERSIONS,
    Message,
    StartReply,
    StartRequest,
    StepCommand,
    StepReply,
    TraceContext,
    _Envelope,
)

CONTENT_TYPE: Final = "application/json"
MAX_BODY_BYTES: Final = 256 * 1024
"""The default byte limit of a body, checked before anything is parsed (and when encoding)."""
MAX_DEPTH: Final = 32
"""How deeply arrays and objects may nest in a body, the message object itself being level 1."""

M = TypeVar("M", bound=_Envelope)


class Header:
    """The names of the AMQP headers :func:`encode` writes (PRODUCT.md, "Wire")."""

    SAGA_NAME: Final = "x-saga-name"
    SAGA_VERSION: Final = "x-saga-version"
    SAGA_STEP: Final = "x-saga-step"
    SAGA_ATTEMPT: Final = "x-saga-attempt"
    SAGA_KIND: Final = "x-saga-kind"
    IDEMPOTENCY_KEY: Final = "x-idempotency-key"
    ACTION_KEY: Final = "x-action-key"
    SCHEMA_VERSION: Final = "x-schema-version"
    TRACEPARENT: Final = "traceparent"
    TRACESTATE: Final = "tracestate"


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A message as a transport publishes it: the body, the AMQP properties and the headers."""

    body: bytes
    message_id: str
    type: str
    """The AMQP ``type`` property: the model's ``type``."""
    content_type: str = CONTENT_TYPE
    correlation_id: str | None = None
    """The saga id; for a start request its own message id, for a start reply the request's."""
    headers: dict[str, str | int] = field(default_factory=dict)


def _model_fields(value: object) -> dict[str, Any]:
    # A validated model's __dict__ holds exactly its fields, already plain JSON values: reading
    # it is several times faster than model_dump() on this hot path.
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    default=_model_fields,
)


def encode(message: Message, *, max_bytes: int = MAX_BODY_BYTES) -> WireMessage:
    """``message`` as a :class:`WireMessage`; the inverse of :func:`decode`.

    Raises :class:`~contracts.errors.EncodeError` when the body would be refused by a
    consumer: over ``max_bytes``, nested deeper than :data:`MAX_DEPTH`, or not plain JSON
    (a string with an unpaired surrogate, an integer too long to print).
    """
    try:
        fields = dict(message.__dict__)
        del fields["trace"]  # the trace travels in the headers only
        body = _ENCODER.encode(fields).encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(
            f"cannot encode {message.type}: a string holds an unpaired surrogate", code="not_json"
        ) from None
    except ValueError:  # NaN or an integer over 4300 digits, in a model built unvalidated
        raise EncodeError(
            f"cannot encode {message.type}: a number cannot be written as JSON", code="not_json"
        ) from None
    except TypeError as error:  # a model built unvalidated, holding something that is not JSON
        raise EncodeError(f"cannot encode {message.type}: {error}", code="not_json") from None
    if len(body) > max_bytes:
        raise EncodeError(
            f"cannot encode {message.type}: body is {len(body)} bytes, over the "
            f"{max_bytes}-byte limit",
            code="too_large",
        )
    if _too_deep(body):
        raise EncodeError(
            f"cannot encode {message.type}: it nests deeper than {MAX_DEPTH} levels",
            code="too_deep",
        )
    return WireMessage(
        body=body,
        message_id=message.message_id,
        type=message.type,
        correlation_id=_correlation_id(message),
        headers=_headers(message),
    )


def _correlation_id(message: Message) -> str:
    """What ties the message to others: the saga, or the start request it answers."""
    if isinstance(message, StepCommand | StepReply):
        return message.saga_id
    if isinstance(message, StartReply):
        return message.request_id
    return message.message_id


def _headers(message: Message) -> dict[str, str | int]:
    """The envelope mirrored in headers, only those that apply to the message's type."""
    headers: dict[str, str | int]
    if isinstance(message, StepCommand):
        headers = {
            Header.SAGA_NAME: message.saga_name,
            Header.SAGA_VERSION: message.saga_version,
            Header.SAGA_STEP: message.step,
            Header.SAGA_ATTEMPT: message.attempt,
            Header.SAGA_KIND: message.kind,
            Header.IDEMPOTENCY_KEY: message.idempotency_key,
        }
        if message.action_key is not None:
            headers[Header.ACTION_KEY] = message.action_key
    elif isinstance(message, StepReply):
        headers = {
            Header.SAGA_STEP: message.step,
            Header.SAGA_ATTEMPT: message.attempt,
            Header.SAGA_KIND: message.kind,
            Header.IDEMPOTENCY_KEY: message.idempotency_key,
        }
    elif isinstance(message, StartRequest):
        headers = {Header.SAGA_NAME: message.saga_name}
        if message.saga_version is not None:
            headers[Header.SAGA_VERSION] = message.saga_version
        if message.idempotency_key is not None:
            headers[Header.IDEMPOTENCY_KEY] = message.idempotency_key
    else:
        headers = {}
    headers[Header.SCHEMA_VERSION] = message.schema_version
    if message.trace is not None:
        headers[Header.TRACEPARENT] = message.trace.traceparent
        if message.trace.tracestate is not None:
            headers[Header.TRACESTATE] = message.trace.tracestate
    return headers


@overload
def decode(
    body: bytes,
    headers: Mapping[str, object] | None = None,
    *,
    expect: type[M],
    max_bytes: int = MAX_BODY_BYTES,
) -> M: ...


@overload
def decode(
    body: bytes,
    headers: Mapping[str, object] | None = None,
    *,
    expect: tuple[type[_Envelope], ...] | None = None,
    max_bytes: int = MAX_BODY_BYTES,
) -> Message: ...


def decode(
    body: bytes,
    headers: Mapping[str, object] | None = None,
    *,
    expect: type[_Envelope] | tuple[type[_Envelope], ...] | None = None,
    max_bytes: int = MAX_BODY_BYTES,
) -> _Envelope:
    """The message in ``body``, its trace context taken from ``headers``; the inverse of encode.

    The body is authoritative for every field but the trace. Header values may be str or bytes;
    a missing or malformed ``traceparent`` only leaves ``trace`` None. With ``expect``, a valid
    message of another type is refused too. Raises the
    :class:`~contracts.errors.MessageRejected` subclass for the first check that fails, in this
    order: size, UTF-8, JSON (depth, finite numbers, unique keys), type, schema version, schema,
    expected type.
    """
    if len(body) > max_bytes:
        raise MessageTooLarge(f"body is {len(body)} bytes, over the {max_bytes}-byte limit")
    data = _parse(body)
    if type(data) is not dict:
        raise UnknownMessageType(f"body is a JSON {_json_kind(data)}, not a message object")
    type_name = data.get("type")
    if not isinstance(type_name, str) or (model := MESSAGE_TYPES.get(type_name)) is None:
        raise UnknownMessageType(_unknown_type(data))
    version = data.get("schema_version")
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnsupportedVersion(_unsupported_version(type_name, data))
    if "trace" in data:
        problem = "trace: the trace travels in the traceparent and tracestate headers"
        raise InvalidMessage(f"invalid {type_name}: {problem}", (problem,))
    data["trace"] = TraceContext.from_headers(headers)
    try:
        message = model.model_validate(data)
    except ValidationError as error:
        problems = _problems(error)
        raise InvalidMessage(f"invalid {type_name}: {'; '.join(problems)}", problems) from None
    if expect is not None and not isinstance(message, expect):
        raise UnexpectedMessageType(f"expected {_type_names(expect)}, got {type_name}")
    return message


# --- JSON, strictly -------------------------------------------------------------------------


class _Refused(ValueError):
    """JSON that the json module accepts and the contract does not."""


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _Refused("a number is out of the range of a 64-bit float")
    return number


def _no_constant(name: str) -> None:
    raise _Refused(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Other parsers keep the first of two equal keys, Python keeps the last: refuse the ambiguity.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        twice = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise _Refused(f"the key {_quote(twice)} appears twice in an object")
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_finite, parse_constant=_no_constant, object_pairs_hook=_unique_keys
)
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)  # unterminated: to the end, linear
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")  # only the depth matters, not the kind of bracket
_PASSES = 4
_ESCAPE = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|(?P<lone>\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def _parse(body: bytes) -> object:
    """The JSON value in ``body``, refusing what another service could read differently."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotUtf8(f"body is not valid UTF-8 (byte {error.start})") from None
    if _too_deep(body):
        raise TooDeep(f"body nests arrays and objects deeper than {MAX_DEPTH} levels")
    if text.startswith("\ufeff"):
        raise NotJson("body is not valid JSON: it starts with a byte order mark")
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        what = error.msg.removesuffix(" at")  # "Unterminated string starting at"
        raise NotJson(
            f"body is not valid JSON: {what} at line {error.lineno} column {error.colno}"
        ) from None
    except _Refused as error:
        raise NotJson(f"body is not valid JSON: {error}") from None
    except ValueError:  # the only other one: int() refuses more than 4300 digits
        raise NotJson("body is not valid JSON: an integer has too many digits") from None
    if b"\\u" in body:
        _refuse_lone_surrogates(body)
    return data


def _too_deep(body: bytes) -> bool:
    """True when the JSON in ``body`` nests arrays and objects deeper than MAX_DEPTH.

    Checked on the bytes, before parsing, so a 10,000-deep body is refused in microseconds
    instead of recursing in the parser. Brackets inside strings do not count.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False  # the normal case: too few brackets to nest that deep
    levels = _STRING.sub(b"", body).translate(_AS_SQUARE, _NOT_BRACKET)
    # Each pass removes every innermost container, lowering the depth by exactly one: wide
    # bodies (lists of small objects) shrink to little before the exact count below.
    removed = 0
    while removed < _PASSES and levels:
        shorter = levels.replace(b"[]", b"")
        if len(shorter) == len(levels):
            break
        levels, removed = shorter, removed + 1
    depth = 0
    for char in levels:
        depth += 1 if char == 0x5B else -1  # "["
        if depth > MAX_DEPTH - removed:
            return True
        if depth < 0:
            return False  # not balanced: the parser says where
    return False


def _refuse_lone_surrogates(body: bytes) -> None:
    # A "\ud800" escape parses into a str that cannot be encoded as UTF-8 again: refuse it here
    # rather than fail later when the message is stored, re-encoded or replayed.
    for match in _ESCAPE.finditer(body):
        if match["lone"] is not None:
            raise NotJson(
                f"body is not valid JSON: unpaired surrogate escape at byte {match.start()}"
            )


# --- sentences ------------------------------------------------------------------------------

_MAX_PROBLEMS = 10
_MAX_QUOTED = 80


def _quote(text: str) -> str:
    """``text`` quoted for a sentence, shortened and with control characters escaped."""
    return repr(text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…")


_JSON_KINDS: Final = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _json_kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), "value")


def _unknown_type(data: dict[str, Any]) -> str:
    if "type" not in data:
        return "message has no type"
    value = data["type"]
    if isinstance(value, str):
        return f"unknown message type {_quote(value)}"
    return f"message type is a JSON {_json_kind(value)}, not a string"


def _unsupported_version(type_name: str, data: dict[str, Any]) -> str:
    reads = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
    if "schema_version" not in data:
        return f"{type_name} has no schema_version; this service reads {reads}"
    shown = _quote(json.dumps(data["schema_version"]))[1:-1]
    return f"unsupported schema version {shown} for {type_name}; this service reads {reads}"


def _problems(error: ValidationError) -> tuple[str, ...]:
    """Each validation problem as ``field: what``, without the offending values."""
    problems: list[str] = []
    for item in error.errors(include_url=False, include_context=False, include_input=False):
        what = item["msg"].removeprefix("Value error, ")
        if item["type"] == "string_pattern_mismatch":
            what = "String should be printable ASCII without spaces"
        where = _location(item["loc"])
        problems.append(f"{where}: {what}" if where else what)
    if len(problems) > _MAX_PROBLEMS:
        more = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"and {more} more"]
    return tuple(problems)


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            name = part if len(part) <= _MAX_QUOTED else part[:_MAX_QUOTED] + "…"
            parts.append(f".{name}" if parts else name)
    return "".join(parts)


def _type_names(expect: type[_Envelope] | tuple[type[_Envelope], ...]) -> str:
    models = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join(str(model.model_fields["type"].default) for model in models)


__all__ = [
    "CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "Header",
    "WireMessage",
    "decode",
    "encode",
]
