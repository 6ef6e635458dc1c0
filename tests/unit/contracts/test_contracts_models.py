"""The models: frozen, strict, their cross-field rules and convenience constructors."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from contract_samples import TRACEPARENT, command
from pydantic import TypeAdapter, ValidationError

from contracts import (
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    ErrorBody,
    Failure,
    Message,
    StartReply,
    StartRequest,
    StepCommand,
    StepReply,
    TraceContext,
)


def compensation() -> StepCommand:
    return command(
        kind="compensation",
        command="release",
        idempotency_key="s-1:reserve_stock:compensation",
        action_key="s-1:reserve_stock:action",
    )


def test_the_schema_version_is_1_and_is_the_default() -> None:
    assert SCHEMA_VERSION == 1
    assert frozenset({1}) == SUPPORTED_SCHEMA_VERSIONS
    assert command().schema_version == 1
    with pytest.raises(ValidationError):
        command(schema_version=2)


def test_models_are_frozen() -> None:
    message = command()
    with pytest.raises(ValidationError, match="frozen"):
        message.attempt = 4  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        command(priority=1)


def test_types_are_strict() -> None:
    for changes in ({"attempt": "3"}, {"attempt": 3.0}, {"saga_version": True}, {"step": 5}):
        with pytest.raises(ValidationError):
            command(**changes)


def test_str_enum_members_are_accepted_as_their_values() -> None:
    class Kind(StrEnum):
        COMPENSATION = "compensation"

    message = command(
        kind=Kind.COMPENSATION, step=Kind.COMPENSATION, action_key="s-1:reserve_stock:action"
    )
    assert type(message.kind) is str
    assert type(message.step) is str


def test_a_compensation_needs_the_action_key_and_an_action_has_none() -> None:
    assert compensation().action_key == "s-1:reserve_stock:action"
    with pytest.raises(ValidationError, match="action_key is required for a compensation"):
        command(kind="compensation")
    with pytest.raises(ValidationError, match="action_key must be null for an action"):
        command(action_key="s-1:reserve_stock:action")


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        ({"saga_name": "n" * 200}, True),
        ({"saga_name": "n" * 201}, False),
        ({"saga_name": ""}, False),
        ({"idempotency_key": "k" * 400}, True),
        ({"idempotency_key": "k" * 401}, False),
        ({"message_id": "m" * 200}, True),
        ({"message_id": "m" * 201}, False),
        ({"message_id": ""}, False),
        ({"message_id": "é"}, False),
        ({"saga_id": "a b"}, False),
        ({"attempt": 0}, False),
        ({"attempt": 2**31 - 1}, True),
        ({"saga_version": 0}, False),
    ],
)
def test_lengths_and_ranges(changes: dict[str, Any], accepted: bool) -> None:
    if accepted:
        command(**changes)
    else:
        with pytest.raises(ValidationError):
            command(**changes)


@pytest.mark.parametrize(
    "payload",
    [
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": object()},
        {"x": {1: "non-string key"}},
        {"x": b"bytes"},
        {"x": {"y": [1, {"z": {2, 3}}]}},
    ],
)
def test_payloads_are_plain_json(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        command(payload=payload)


def test_the_payload_is_copied_so_later_changes_to_the_original_do_not_leak_in() -> None:
    original: dict[str, Any] = {"lines": [{"sku": "a"}]}
    message = command(payload=original)
    original["lines"][0]["sku"] = "changed"
    original["new"] = 1
    assert message.payload == {"lines": [{"sku": "a"}]}


def test_json_values_keep_their_types() -> None:
    payload: dict[str, Any] = {
        "b": True,
        "i": 1,
        "f": 1.5,
        "n": None,
        "s": "s",
        "l": [False, 0],
        "o": {},
    }
    message = command(payload=payload)
    assert message.payload == payload
    assert message.payload["b"] is True
    assert type(message.payload["l"][1]) is int


def test_a_success_reply_copies_the_command_and_carries_the_result() -> None:
    trace = TraceContext(traceparent=TRACEPARENT)
    reply = StepReply.success(compensation(), {"released": True}, message_id="r-1", trace=trace)
    assert reply == StepReply(
        message_id="r-1",
        trace=trace,
        saga_id="s-1",
        step="reserve_stock",
        kind="compensation",
        attempt=3,
        idempotency_key="s-1:reserve_stock:compensation",
        outcome="success",
        result={"released": True},
        error=None,
    )


def test_a_success_reply_may_have_an_empty_result() -> None:
    assert StepReply.success(command(), {}, message_id="r-1").result == {}


def test_a_failure_reply_copies_the_command_and_carries_the_failure() -> None:
    reply = StepReply.failure(
        command(), "out_of_stock", "no stock for sku-1", False, message_id="r"
    )
    assert (reply.saga_id, reply.step, reply.kind, reply.attempt) == (
        "s-1",
        "reserve_stock",
        "action",
        3,
    )
    assert reply.idempotency_key == "s-1:reserve_stock:action"
    assert reply.outcome == "failure"
    assert reply.result is None
    assert reply.error == Failure(
        code="out_of_stock", message="no stock for sku-1", retryable=False
    )


def test_a_failure_message_that_is_too_long_is_shortened_not_refused() -> None:
    reply = StepReply.failure(command(), "boom", "x" * 10_000, True, message_id="r-1")
    assert reply.error is not None
    assert len(reply.error.message) == 4000
    assert reply.error.message.endswith("…")


@pytest.mark.parametrize(
    "fields",
    [
        {"outcome": "success"},
        {
            "outcome": "success",
            "result": {},
            "error": {"code": "c", "message": "", "retryable": True},
        },
        {"outcome": "failure"},
        {
            "outcome": "failure",
            "result": {},
            "error": {"code": "c", "message": "", "retryable": True},
        },
    ],
)
def test_success_has_a_result_and_no_error_failure_the_opposite(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"message_id": "r", "saga_id": "s", "step": "a", "attempt": 1}
    with pytest.raises(ValidationError, match="reply has"):
        StepReply(**base, kind="action", idempotency_key="k", **fields)


def test_start_reply_constructors() -> None:
    request = StartRequest(message_id="q-1", saga_name="order_checkout", input={})
    accepted = StartReply.accepted(request, "s-1", created=False, message_id="a-1")
    assert (accepted.request_id, accepted.saga_id, accepted.created) == ("q-1", "s-1", False)
    assert accepted.error is None
    refused = StartReply.refused(request, "bad_input", "amount: must be >= 0", message_id="a-2")
    assert refused.saga_id is None
    assert refused.created is False
    assert refused.error == ErrorBody(code="bad_input", message="amount: must be >= 0")


def test_a_refused_start_was_not_created() -> None:
    with pytest.raises(ValidationError, match="cannot have created true"):
        StartReply(
            message_id="a", request_id="q", created=True, error=ErrorBody(code="c", message="m")
        )
    with pytest.raises(ValidationError, match="exactly one of saga_id and error"):
        StartReply(message_id="a", request_id="q", created=False)


def test_a_start_request_defaults_to_the_latest_version_and_no_key() -> None:
    request = StartRequest(message_id="q-1", saga_name="order_checkout", input={"a": 1})
    assert (request.saga_version, request.idempotency_key, request.trace) == (None, None, None)


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        TRACEPARENT.upper(),
        TRACEPARENT + "\n",
        TRACEPARENT[:-1],
    ],
)
def test_an_invalid_traceparent_is_refused_when_built_in_python(traceparent: str) -> None:
    with pytest.raises(ValidationError):
        TraceContext(traceparent=traceparent)


def test_a_trace_context_is_an_opentelemetry_carrier_and_back() -> None:
    trace = TraceContext(traceparent=TRACEPARENT, tracestate="rojo=1")
    assert trace.to_headers() == {"traceparent": TRACEPARENT, "tracestate": "rojo=1"}
    assert TraceContext.from_headers(trace.to_headers()) == trace
    bare = TraceContext(traceparent=TRACEPARENT)
    assert bare.to_headers() == {"traceparent": TRACEPARENT}
    assert TraceContext.from_headers(None) is None


def test_the_union_picks_the_model_by_type() -> None:
    adapter: TypeAdapter[Message] = TypeAdapter(Message)
    data = command().model_dump()
    assert isinstance(adapter.validate_python(data), StepCommand)
    assert {name: model.model_fields["type"].default for name, model in MESSAGE_TYPES.items()} == {
        name: name for name in MESSAGE_TYPES
    }
    assert set(MESSAGE_TYPES) == {"saga.start", "saga.start_reply", "saga.command", "saga.reply"}
