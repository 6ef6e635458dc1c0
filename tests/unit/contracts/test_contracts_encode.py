"""encode: the canonical body, the properties, the headers of each type, what cannot be sent."""

from __future__ import annotations

import dataclasses
import json

import pytest
from contract_samples import TRACEPARENT, command

from contracts import (
    CONTENT_TYPE,
    EncodeError,
    ErrorBody,
    Header,
    StartReply,
    StartRequest,
    StepCommand,
    StepReply,
    TraceContext,
    decode,
    encode,
)


def test_an_action_command_has_every_envelope_header_but_the_action_key() -> None:
    wire = encode(command())
    assert wire.headers == {
        "x-saga-name": "order_checkout",
        "x-saga-version": 2,
        "x-saga-step": "reserve_stock",
        "x-saga-attempt": 3,
        "x-saga-kind": "action",
        "x-idempotency-key": "s-1:reserve_stock:action",
        "x-schema-version": 1,
    }
    assert (wire.message_id, wire.correlation_id, wire.type) == ("m-1", "s-1", "saga.command")
    assert wire.content_type == CONTENT_TYPE == "application/json"


def test_integer_headers_are_integers() -> None:
    wire = encode(command())
    for name in (Header.SAGA_VERSION, Header.SAGA_ATTEMPT, Header.SCHEMA_VERSION):
        assert type(wire.headers[name]) is int


def test_a_compensation_carries_the_action_key_header() -> None:
    message = command(kind="compensation", action_key="s-1:reserve_stock:action")
    assert encode(message).headers[Header.ACTION_KEY] == "s-1:reserve_stock:action"


def test_a_reply_has_the_step_headers_and_the_saga_as_correlation_id() -> None:
    reply = StepReply.success(command(), {"ok": True}, message_id="r-1")
    wire = encode(reply)
    assert wire.headers == {
        "x-saga-step": "reserve_stock",
        "x-saga-attempt": 3,
        "x-saga-kind": "action",
        "x-idempotency-key": "s-1:reserve_stock:action",
        "x-schema-version": 1,
    }
    assert (wire.message_id, wire.correlation_id, wire.type) == ("r-1", "s-1", "saga.reply")


def test_a_start_request_is_its_own_correlation_and_names_only_what_it_has() -> None:
    bare = encode(StartRequest(message_id="q-1", saga_name="order_checkout", input={}))
    assert bare.headers == {"x-saga-name": "order_checkout", "x-schema-version": 1}
    assert (bare.correlation_id, bare.type) == ("q-1", "saga.start")
    full = StartRequest(
        message_id="q-1", saga_name="n", saga_version=3, input={}, idempotency_key="k"
    )
    assert encode(full).headers == {
        "x-saga-name": "n",
        "x-saga-version": 3,
        "x-idempotency-key": "k",
        "x-schema-version": 1,
    }


def test_a_start_reply_correlates_to_the_request() -> None:
    reply = StartReply(
        message_id="a-1", request_id="q-1", created=False, error=ErrorBody(code="c", message="m")
    )
    wire = encode(reply)
    assert wire.headers == {"x-schema-version": 1}
    assert (wire.correlation_id, wire.type) == ("q-1", "saga.start_reply")


def test_the_trace_goes_to_the_headers_not_the_body() -> None:
    traced = command(trace=TraceContext(traceparent=TRACEPARENT, tracestate="rojo=1"))
    wire = encode(traced)
    assert wire.headers[Header.TRACEPARENT] == TRACEPARENT
    assert wire.headers[Header.TRACESTATE] == "rojo=1"
    assert wire.body == encode(command()).body
    assert b"trace" not in wire.body
    only_parent = encode(command(trace=TraceContext(traceparent=TRACEPARENT)))
    assert Header.TRACESTATE not in only_parent.headers


def test_the_body_is_compact_sorted_utf8_json_with_every_field() -> None:
    body = encode(command(payload={"z": 1, "a": {"y": "é", "b": None}})).body
    assert body.decode("utf-8") == (
        '{"action_key":null,"attempt":3,"command":"reserve",'
        '"idempotency_key":"s-1:reserve_stock:action","kind":"action","message_id":"m-1",'
        '"payload":{"a":{"b":null,"y":"é"},"z":1},"saga_id":"s-1","saga_name":"order_checkout",'
        '"saga_version":2,"schema_version":1,"step":"reserve_stock","type":"saga.command"}'
    )


def test_the_body_does_not_depend_on_the_order_fields_were_given_in() -> None:
    one = command(payload={"a": 1, "b": [{"c": 1, "d": 2}]})
    two = command(payload={"b": [{"d": 2, "c": 1}], "a": 1})
    assert encode(one).body == encode(two).body


def test_encode_and_decode_are_inverses() -> None:
    message = command(payload={"n": [1, 2.5, None, True, "ü", {"k": []}]})
    assert decode(encode(message).body) == message


def test_a_wire_message_is_frozen() -> None:
    wire = encode(command())
    with pytest.raises(dataclasses.FrozenInstanceError):
        wire.body = b"{}"  # type: ignore[misc]


def test_a_body_over_the_limit_cannot_be_encoded() -> None:
    message = command(payload={"blob": "x" * 300_000})
    with pytest.raises(EncodeError) as caught:
        encode(message)
    assert caught.value.code == "too_large"
    size = len(json.dumps({"blob": "x" * 300_000}))
    assert str(caught.value).startswith("cannot encode saga.command: body is ")
    assert str(caught.value).endswith(" bytes, over the 262144-byte limit")
    assert size < len(encode(message, max_bytes=1_000_000).body)


def test_a_payload_nested_too_deep_cannot_be_encoded() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(EncodeError) as caught:
        encode(command(payload={"deep": deep}))
    assert caught.value.code == "too_deep"
    assert str(caught.value) == "cannot encode saga.command: it nests deeper than 32 levels"


def test_a_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(EncodeError) as caught:
        encode(command(payload={"text": "\ud800"}))
    assert caught.value.code == "not_json"
    assert str(caught.value) == "cannot encode saga.command: a string holds an unpaired surrogate"


def test_an_integer_too_long_to_print_cannot_be_encoded() -> None:
    with pytest.raises(EncodeError) as caught:
        encode(command(payload={"n": 10**5000}))
    assert caught.value.code == "not_json"
    assert str(caught.value) == "cannot encode saga.command: a number cannot be written as JSON"


def test_a_model_built_without_validation_that_holds_no_json_cannot_be_encoded() -> None:
    unchecked = StepCommand.model_construct(**{**command().__dict__, "payload": {"s": {1, 2}}})
    with pytest.raises(EncodeError) as caught:
        encode(unchecked)
    assert str(caught.value) == "cannot encode saga.command: a set is not a JSON value"
