"""Property tests: whatever arrives, decode answers with a message or a MessageRejected."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import (
    MAX_DEPTH,
    MessageRejected,
    StepCommand,
    StepReply,
    TraceContext,
    decode,
    encode,
)
from contracts.wire import _too_deep

FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
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

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
header_values = st.one_of(st.none(), st.text(), st.binary(), st.integers())


def decode_or_reject(raw: bytes, headers: dict[str, object] | None = None) -> None:
    """Decode ``raw``: any exception but MessageRejected fails the test."""
    try:
        message = decode(raw, headers)
    except MessageRejected as error:
        reason, code = str(error), error.code
    else:
        wire = encode(message)  # whatever is accepted can be sent on again, unchanged
        assert decode(wire.body, wire.headers) == message
        return
    assert reason
    assert code


@FUZZ
@given(st.binary(max_size=2000), st.dictionaries(st.text(max_size=12), header_values, max_size=3))
def test_arbitrary_bytes_are_a_message_or_rejected(raw: bytes, headers: dict[str, object]) -> None:
    decode_or_reject(raw, headers)


@FUZZ
@given(st.binary(max_size=200), st.integers(min_value=0), st.sampled_from([b"", b"[", b"{", b'"']))
def test_a_corrupted_valid_body_is_a_message_or_rejected(
    noise: bytes, at: int, extra: bytes
) -> None:
    raw = json.dumps(REPLY).encode()
    cut = at % (len(raw) + 1)
    decode_or_reject(raw[:cut] + noise + extra + raw[cut:])


@FUZZ
@given(st.dictionaries(st.sampled_from([*REPLY, "trace", "extra"]), json_values, max_size=5))
def test_any_field_with_any_json_value_is_a_message_or_rejected(changes: dict[str, Any]) -> None:
    decode_or_reject(json.dumps({**REPLY, **changes}).encode())


@FUZZ
@given(json_values)
def test_any_json_value_as_a_body_is_a_message_or_rejected(value: object) -> None:
    decode_or_reject(json.dumps(value).encode())


@settings(max_examples=200, deadline=None, database=None)
@given(
    payload=st.dictionaries(st.text(), json_values, max_size=5),
    attempt=st.integers(min_value=1, max_value=2**31 - 1),
    step=st.text(min_size=1, max_size=200),
    traced=st.booleans(),
)
def test_any_command_survives_encode_and_decode(
    payload: dict[str, Any], attempt: int, step: str, traced: bool
) -> None:
    trace = TraceContext(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    message = StepCommand(
        message_id="m-1",
        saga_id="s-1",
        saga_name="n",
        saga_version=1,
        step=step,
        kind="action",
        command="c",
        attempt=attempt,
        idempotency_key="k",
        payload=payload,
        trace=trace if traced else None,
    )
    wire = encode(message)
    assert decode(wire.body, wire.headers, expect=StepCommand) == message
    reply = StepReply.success(message, payload, message_id="r-1")
    assert decode(encode(reply).body) == reply


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


nests = st.recursive(
    st.integers() | st.text(alphabet='[]{}"\\ab', max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=60,
)


@FUZZ
@given(nests, st.integers(min_value=0, max_value=40))
def test_the_depth_scan_agrees_with_the_real_depth(value: object, wrap: int) -> None:
    for _ in range(wrap):
        value = [value, []] if wrap % 2 else {"k": value}
    raw = json.dumps(value).encode()
    assert _too_deep(raw) == (depth(value) > MAX_DEPTH)
