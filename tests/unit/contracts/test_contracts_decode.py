"""decode: every way a body is refused, in order, each with its sentence; and the trace headers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from contract_samples import TRACEPARENT

from contracts import (
    MAX_BODY_BYTES,
    ContractError,
    InvalidMessage,
    MessageRejected,
    MessageTooLarge,
    NotJson,
    NotUtf8,
    StartReply,
    StepCommand,
    StepReply,
    TooDeep,
    TraceContext,
    UnexpectedMessageType,
    UnknownMessageType,
    UnsupportedVersion,
    decode,
    encode,
)

REPLY: dict[str, Any] = {
    "type": "saga.reply",
    "schema_version": 1,
    "message_id": "m-1",
    "saga_id": "s-1",
    "step": "reserve_stock",
    "kind": "action",
    "attempt": 1,
    "idempotency_key": "s-1:reserve_stock:action",
    "outcome": "success",
    "result": {},
    "error": None,
}

COMMAND: dict[str, Any] = {
    "type": "saga.command",
    "schema_version": 1,
    "message_id": "m-2",
    "saga_id": "s-1",
    "saga_name": "order_checkout",
    "saga_version": 1,
    "step": "reserve_stock",
    "kind": "action",
    "command": "reserve",
    "attempt": 1,
    "idempotency_key": "s-1:reserve_stock:action",
    "action_key": None,
    "payload": {"order_id": "o-1"},
}


def body(data: object) -> bytes:
    return json.dumps(data).encode("utf-8")


def reply(**changes: Any) -> bytes:
    return body({**REPLY, **changes})


def rejected(raw: bytes, **kwargs: Any) -> MessageRejected:
    with pytest.raises(MessageRejected) as caught:
        decode(raw, **kwargs)
    return caught.value


def nested(levels: int) -> object:
    """A value with ``levels`` levels of arrays (0: a plain number)."""
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


# --- 1. size -----------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_anything_is_decoded() -> None:
    error = rejected(b"\xff" * 300_000)  # not UTF-8 either: size is checked first
    assert isinstance(error, MessageTooLarge)
    assert str(error) == "body is 300000 bytes, over the 262144-byte limit"
    assert error.code == "too_large"


def test_a_body_exactly_at_the_limit_is_read() -> None:
    raw = reply()
    padded = raw + b" " * (MAX_BODY_BYTES - len(raw))
    assert decode(padded).message_id == "m-1"
    assert isinstance(rejected(padded + b" "), MessageTooLarge)


def test_the_limit_can_be_set_per_consumer() -> None:
    raw = reply()
    error = rejected(raw, max_bytes=100)
    assert str(error) == f"body is {len(raw)} bytes, over the 100-byte limit"
    assert decode(raw, max_bytes=len(raw)).message_id == "m-1"


# --- 2. UTF-8 ----------------------------------------------------------------------------------


def test_a_body_that_is_not_utf8_is_refused_with_the_byte_offset() -> None:
    raw = b'{"type": "saga.reply", "x": "\xff"}'
    error = rejected(raw)
    assert isinstance(error, NotUtf8)
    assert raw[29] == 0xFF
    assert str(error) == "body is not valid UTF-8 (byte 29)"
    assert error.code == "not_utf8"


# --- 3. JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sentence"),
    [
        (b'{"type": "a" "b"}', "Expecting ',' delimiter at line 1 column 14"),
        (b"", "Expecting value at line 1 column 1"),
        (b"{} x", "Extra data at line 1 column 4"),
        (b'{\n  "type": tru\n}', "Expecting value at line 2 column 11"),
        (b'{"type": "saga', "Unterminated string starting at line 1 column 10"),
        (b'{"x": NaN}', "NaN is not a JSON number"),
        (b'{"x": Infinity}', "Infinity is not a JSON number"),
        (b'{"x": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"x": 1e400}', "a number is out of the range of a 64-bit float"),
        (b'{"x": -1e400}', "a number is out of the range of a 64-bit float"),
        (b'{"x": ' + b"9" * 5000 + b"}", "an integer has too many digits"),
        (b'{"type": "saga.reply", "type": "saga.command"}', "the key 'type' appears twice"),
        (b'{"x": "\\ud800"}', "unpaired surrogate escape at byte 7"),
        (b'{"x": "\\udc00\\ud83d"}', "unpaired surrogate escape at byte 7"),
        (b"\xef\xbb\xbf{}", "it starts with a byte order mark"),
    ],
)
def test_a_body_that_is_not_strict_json_is_refused(raw: bytes, sentence: str) -> None:
    error = rejected(raw)
    assert type(error) is NotJson
    assert str(error).startswith(f"body is not valid JSON: {sentence}")
    assert error.code == "not_json"


def test_a_number_that_underflows_to_zero_is_fine() -> None:
    message = decode(reply(result={"tiny": 1e-400}))
    assert isinstance(message, StepReply)
    assert message.result == {"tiny": 0.0}


def test_surrogate_pairs_and_escaped_backslashes_are_not_lone_surrogates() -> None:
    raw = reply(result={"emoji": "\U0001f600", "text": "\\ud800"})  # json.dumps escapes both
    assert b"\\ud83d\\ude00" in raw
    assert b"\\\\ud800" in raw
    message = decode(raw)
    assert isinstance(message, StepReply)
    assert message.result == {"emoji": "\U0001f600", "text": "\\ud800"}


def test_a_10000_deep_body_is_refused_fast() -> None:
    for raw in (b"[" * 10_000, b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000):
        started = time.perf_counter()
        error = rejected(raw)
        elapsed = time.perf_counter() - started
        assert isinstance(error, TooDeep)
        assert str(error) == "body nests arrays and objects deeper than 32 levels"
        assert error.code == "too_deep"
        assert elapsed < 0.5, f"took {elapsed:.3f} s"


def test_a_max_size_body_of_brackets_is_refused_fast() -> None:
    started = time.perf_counter()
    error = rejected(b"[" * MAX_BODY_BYTES)
    assert isinstance(error, TooDeep)
    assert time.perf_counter() - started < 0.5


def test_nesting_up_to_32_levels_is_read_and_33_is_refused() -> None:
    # The message object is level 1 and result level 2: 30 more arrays make 32.
    message = decode(reply(result={"deep": nested(30)}))
    assert isinstance(message, StepReply)
    assert message.result == {"deep": nested(30)}
    assert isinstance(rejected(reply(result={"deep": nested(31)})), TooDeep)


def test_depth_is_measured_in_wide_bodies_too() -> None:
    wide: list[object] = [[{"a": [1]}] for _ in range(500)]
    assert isinstance(decode(reply(result={"rows": wide, "deep": nested(30)})), StepReply)
    error = rejected(reply(result={"rows": wide, "deep": nested(31)}))
    assert isinstance(error, TooDeep)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    message = decode(reply(result={"text": "[{" * 1000, "quoted": '"[[[' * 100}))
    assert isinstance(message, StepReply)


def test_a_truncated_wide_body_is_reported_as_not_json_not_as_too_deep() -> None:
    raw = reply(result={"rows": [[] for _ in range(100)]})
    error = rejected(raw[:-10])
    assert type(error) is NotJson


# --- 4. type -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sentence"),
    [
        (b"[1, 2]", "body is a JSON array, not a message object"),
        (b'"saga.reply"', "body is a JSON string, not a message object"),
        (b"null", "body is a JSON null, not a message object"),
        (b"true", "body is a JSON boolean, not a message object"),
        (b"3.5", "body is a JSON number, not a message object"),
        (b'{"schema_version": 1}', "message has no type"),
        (b'{"type": "saga.foo"}', "unknown message type 'saga.foo'"),
        (b'{"type": 7}', "message type is a JSON number, not a string"),
        (b'{"type": null}', "message type is a JSON null, not a string"),
        (body({"type": "x" * 500}), f"unknown message type '{'x' * 80}…'"),
    ],
)
def test_a_body_that_is_no_message_of_the_contract_is_refused(raw: bytes, sentence: str) -> None:
    error = rejected(raw)
    assert isinstance(error, UnknownMessageType)
    assert str(error) == sentence
    assert error.code == "unknown_type"


# --- 5. schema version -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "shown"), [(7, "7"), (0, "0"), (True, "true"), ("1", '"1"'), (1.0, "1.0")]
)
def test_a_schema_version_this_service_does_not_read_is_refused(
    version: object, shown: str
) -> None:
    error = rejected(reply(schema_version=version, attempt=0))  # checked before the schema
    assert isinstance(error, UnsupportedVersion)
    assert str(error) == f"unsupported schema version {shown} for saga.reply; this service reads 1"
    assert error.code == "unsupported_version"


def test_a_missing_schema_version_is_refused() -> None:
    data = {key: value for key, value in REPLY.items() if key != "schema_version"}
    error = rejected(body(data))
    assert isinstance(error, UnsupportedVersion)
    assert str(error) == "saga.reply has no schema_version; this service reads 1"


# --- 6. schema ---------------------------------------------------------------------------------


def test_every_schema_problem_is_named_with_its_field() -> None:
    error = rejected(reply(attempt=0, extra=1))
    assert isinstance(error, InvalidMessage)
    assert str(error) == (
        "invalid saga.reply: attempt: Input should be greater than or equal to 1; "
        "extra: Extra inputs are not permitted"
    )
    assert error.problems == (
        "attempt: Input should be greater than or equal to 1",
        "extra: Extra inputs are not permitted",
    )
    assert error.code == "invalid"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"attempt": "1"}, "attempt: Input should be a valid integer"),
        ({"attempt": 1.0}, "attempt: Input should be a valid integer"),
        ({"attempt": True}, "attempt: Input should be a valid integer"),
        ({"attempt": 2**31}, "attempt: Input should be less than or equal to 2147483647"),
        ({"kind": "undo"}, "kind: Input should be 'action' or 'compensation'"),
        ({"step": ""}, "step: String should have at least 1 character"),
        ({"step": "s" * 201}, "step: String should have at most 200 characters"),
        ({"idempotency_key": "k" * 401}, "idempotency_key: String should have at most 400"),
        ({"message_id": "has space"}, "message_id: String should be printable ASCII"),
        ({"message_id": "m-1\n"}, "message_id: String should be printable ASCII"),
        ({"saga_id": "café"}, "saga_id: String should be printable ASCII"),
        ({"result": []}, "result: Input should be a valid dictionary"),
        ({"outcome": "failure"}, "a failure reply has an error and no result"),
        ({"result": None}, "a success reply has a result and no error"),
    ],
)
def test_a_reply_that_breaks_its_schema_is_refused(changes: dict[str, Any], problem: str) -> None:
    error = rejected(reply(**changes))
    assert isinstance(error, InvalidMessage)
    assert str(error).startswith(f"invalid saga.reply: {problem}")


def test_a_missing_field_is_named() -> None:
    data = {key: value for key, value in REPLY.items() if key != "saga_id"}
    assert str(rejected(body(data))) == "invalid saga.reply: saga_id: Field required"


def test_a_problem_in_a_nested_object_names_its_path() -> None:
    raw = reply(
        outcome="failure",
        result=None,
        error={"code": "x", "message": "m", "retryable": "no", "extra": 1},
    )
    assert str(rejected(raw)) == (
        "invalid saga.reply: error.retryable: Input should be a valid boolean; "
        "error.extra: Extra inputs are not permitted"
    )


def test_a_long_list_of_problems_is_cut_short() -> None:
    error = rejected(reply(**{f"x{i}": i for i in range(25)}))
    assert isinstance(error, InvalidMessage)
    assert len(error.problems) == 11
    assert error.problems[-1] == "and 15 more"


def test_the_sentence_never_quotes_a_value_from_the_body() -> None:
    secret = "4111-1111-1111-1111"
    error = rejected(reply(attempt=secret, saga_id=secret + " x", result=secret))
    assert secret not in str(error)


def test_a_trace_in_the_body_is_refused_because_it_belongs_in_the_headers() -> None:
    error = rejected(reply(trace={"traceparent": TRACEPARENT}))
    assert str(error) == (
        "invalid saga.reply: trace: the trace travels in the traceparent and tracestate headers"
    )


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "compensation"}, "action_key is required for a compensation"),
        ({"action_key": "s-1:reserve_stock:action"}, "action_key must be null for an action"),
    ],
)
def test_the_action_key_rules_hold_on_the_wire(changes: dict[str, Any], problem: str) -> None:
    error = rejected(body({**COMMAND, **changes}))
    assert str(error) == f"invalid saga.command: {problem}"


def test_a_compensation_without_an_action_key_field_at_all_is_refused() -> None:
    data = {key: value for key, value in COMMAND.items() if key != "action_key"}
    error = rejected(body({**data, "kind": "compensation"}))
    assert str(error) == "invalid saga.command: action_key is required for a compensation"


def test_a_start_reply_needs_exactly_one_of_saga_id_and_error() -> None:
    base = {"type": "saga.start_reply", "schema_version": 1, "message_id": "m", "request_id": "r"}
    neither = rejected(body({**base, "created": False}))
    both = body({**base, "created": False, "saga_id": "s", "error": {"code": "c", "message": "m"}})
    expected = "invalid saga.start_reply: a start reply has exactly one of saga_id and error"
    assert str(neither) == expected
    assert str(rejected(both)) == expected


# --- 7. expected type --------------------------------------------------------------------------


def test_a_valid_message_of_another_type_than_expected_is_refused() -> None:
    error = rejected(body(COMMAND), expect=StepReply)
    assert isinstance(error, UnexpectedMessageType)
    assert str(error) == "expected saga.reply, got saga.command"
    assert error.code == "unexpected_type"
    error = rejected(body(COMMAND), expect=(StepReply, StartReply))
    assert str(error) == "expected saga.reply or saga.start_reply, got saga.command"


def test_the_expected_type_is_checked_after_the_schema() -> None:
    error = rejected(body({**COMMAND, "attempt": 0}), expect=StepReply)
    assert isinstance(error, InvalidMessage)


def test_the_expected_type_is_returned() -> None:
    command = decode(body(COMMAND), expect=StepCommand)
    assert command.payload == {"order_id": "o-1"}
    either = decode(body(COMMAND), expect=(StepReply, StepCommand))
    assert isinstance(either, StepCommand)


# --- every rejection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff" * 300_000,
        b"\xff",
        b"{",
        b"[" * 100,
        b"[]",
        reply(schema_version=2),
        reply(attempt=0),
    ],
)
def test_every_rejection_is_a_one_line_contract_error(raw: bytes) -> None:
    error = rejected(raw)
    assert isinstance(error, ContractError)
    assert error.code != "rejected"
    assert str(error) == error.reason
    assert "\n" not in str(error)


# --- the trace comes from the headers ----------------------------------------------------------


def test_the_trace_is_read_from_the_headers() -> None:
    message = decode(reply(), {"traceparent": TRACEPARENT, "tracestate": "rojo=1,congo=2"})
    assert message.trace == TraceContext(traceparent=TRACEPARENT, tracestate="rojo=1,congo=2")


def test_header_values_may_be_bytes() -> None:
    headers: dict[str, object] = {
        "traceparent": TRACEPARENT.encode(),
        "tracestate": b"rojo=1",
        "x-saga-attempt": 1,
    }
    message = decode(reply(), headers)
    assert message.trace == TraceContext(traceparent=TRACEPARENT, tracestate="rojo=1")


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        TRACEPARENT.upper(),
        TRACEPARENT + "\n",
        TRACEPARENT + "-extra",
        b"\xff\xfe",
        7,
        None,
        ["00"],
    ],
)
def test_a_garbage_traceparent_only_loses_the_trace(traceparent: object) -> None:
    message = decode(reply(), {"traceparent": traceparent, "tracestate": "rojo=1"})
    assert message.message_id == "m-1"
    assert message.trace is None


@pytest.mark.parametrize("tracestate", ["", "x" * 5000, "caf\u00e9=1", b"\xff", 3, "a=1\nb=2"])
def test_a_garbage_tracestate_is_dropped_and_the_traceparent_kept(tracestate: object) -> None:
    message = decode(reply(), {"traceparent": TRACEPARENT, "tracestate": tracestate})
    assert message.trace == TraceContext(traceparent=TRACEPARENT)


def test_no_headers_means_no_trace() -> None:
    assert decode(reply()).trace is None
    assert decode(reply(), {}).trace is None


def test_the_body_is_authoritative_over_the_envelope_headers() -> None:
    headers: dict[str, object] = {"x-saga-step": "charge_card", "x-saga-attempt": 9}
    message = decode(reply(), headers)
    assert isinstance(message, StepReply)
    assert (message.step, message.attempt) == ("reserve_stock", 1)


def test_a_decoded_message_encodes_to_the_canonical_body() -> None:
    raw = json.dumps(REPLY, indent=4).encode()
    canonical = json.dumps(REPLY, sort_keys=True, separators=(",", ":")).encode()
    assert encode(decode(raw)).body == canonical
