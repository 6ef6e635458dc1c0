"""Golden samples pin the wire format: body, AMQP properties and headers of every message variant.

Each file in ``golden/`` is ``{"properties", "headers", "body"}``. The body in the file may be
pretty; on the wire it is canonical (compact, keys sorted, UTF-8), which is what encode writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts import (
    ErrorBody,
    Failure,
    Message,
    StartReply,
    StartRequest,
    StepCommand,
    StepReply,
    TraceContext,
    WireMessage,
    decode,
    encode,
)

GOLDEN = Path(__file__).parent / "golden"
SAGA = "8b1e4f2a-93c7-4d0e-a5b6-c7d8e9f0a1b2"
RESERVE_ACTION = f"{SAGA}:reserve_stock:action"


def load(name: str) -> dict[str, Any]:
    sample: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text("utf-8"))
    return sample


def canonical(body: object) -> bytes:
    text = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8")


def properties(wire: WireMessage) -> dict[str, object]:
    return {
        "message_id": wire.message_id,
        "correlation_id": wire.correlation_id,
        "type": wire.type,
        "content_type": wire.content_type,
    }


# The same messages built in Python: encoding them must give the golden samples exactly.
BUILT: dict[str, Message] = {
    "start": StartRequest(
        message_id="6f7d1c3e-2b4a-4c59-8e1f-0a9b8c7d6e5f",
        saga_name="order_checkout",
        saga_version=1,
        input={
            "order_id": "order-1001",
            "amount": 42.5,
            "items": [{"sku": "sku-1", "qty": 2}],
            "note": "commande n° 1001 — café",
        },
        idempotency_key="order-1001",
        trace=TraceContext(
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        ),
    ),
    "start_reply_ok": StartReply(
        message_id="0d9c8b7a-6f5e-4d3c-9b2a-1f0e9d8c7b6a",
        request_id="6f7d1c3e-2b4a-4c59-8e1f-0a9b8c7d6e5f",
        saga_id=SAGA,
        created=True,
    ),
    "start_reply_refused": StartReply(
        message_id="1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        request_id="7e8f9a0b-1c2d-4e3f-9a4b-5c6d7e8f9a0b",
        created=False,
        error=ErrorBody(code="unknown_saga", message="no saga definition named 'order_chekout'"),
        trace=TraceContext(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ),
    "command_action": StepCommand(
        message_id="2c4e6a8b-0d1f-4a3c-8e5b-7d9f1b3d5f70",
        saga_id=SAGA,
        saga_name="order_checkout",
        saga_version=1,
        step="reserve_stock",
        kind="action",
        command="reserve",
        attempt=1,
        idempotency_key=RESERVE_ACTION,
        payload={
            "order_id": "order-1001",
            "sku": "sku-1",
            "quantity": 2,
            "note": "order order-1001",
        },
        trace=TraceContext(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01"),
    ),
    "command_compensation": StepCommand(
        message_id="3d5f7a9c-1e2a-4b4d-9f6c-8e0a2c4e6a81",
        saga_id=SAGA,
        saga_name="order_checkout",
        saga_version=1,
        step="reserve_stock",
        kind="compensation",
        command="release",
        attempt=2,
        idempotency_key=f"{SAGA}:reserve_stock:compensation",
        action_key=RESERVE_ACTION,
        payload={"reservation_id": None},
        trace=TraceContext(
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-a2fb4a1d1a96d312-01",
            tracestate="rojo=00f067aa0ba902b7",
        ),
    ),
    "reply_success": StepReply(
        message_id="4e6a8c0e-2f3b-4c5e-8a7d-9f1b3d5f7b92",
        saga_id=SAGA,
        step="reserve_stock",
        kind="action",
        attempt=1,
        idempotency_key=RESERVE_ACTION,
        outcome="success",
        result={
            "reservation_id": "r-1",
            "expires_in": 900,
            "lines": [{"sku": "sku-1", "qty": 2, "warehouse": "north"}],
        },
        trace=TraceContext(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-5fb397be34d26b51-01"),
    ),
    "reply_failure": StepReply(
        message_id="5f7b9d1f-3a4c-4d6f-9b8e-0a2c4e6a8ca3",
        saga_id=SAGA,
        step="charge_card",
        kind="action",
        attempt=3,
        idempotency_key=f"{SAGA}:charge_card:action",
        outcome="failure",
        error=Failure(
            code="card_declined", message="the issuer declined the card", retryable=False
        ),
    ),
}
NAMES = sorted(BUILT)


def test_every_sample_on_disk_is_checked() -> None:
    assert sorted(path.stem for path in GOLDEN.glob("*.json")) == NAMES


def test_the_samples_cover_every_message_type_and_variant() -> None:
    variants = {
        (type(message).__name__, getattr(message, "kind", None), getattr(message, "outcome", None))
        for message in BUILT.values()
    }
    assert variants == {
        ("StartRequest", None, None),
        ("StartReply", None, None),
        ("StepCommand", "action", None),
        ("StepCommand", "compensation", None),
        ("StepReply", "action", "success"),
        ("StepReply", "action", "failure"),
    }
    replies = [m for m in BUILT.values() if isinstance(m, StartReply)]
    assert sorted(m.error is None for m in replies) == [False, True]


@pytest.mark.parametrize("name", NAMES)
def test_decoding_a_sample_and_encoding_it_again_gives_the_same_wire_message(name: str) -> None:
    sample = load(name)
    body = canonical(sample["body"])

    wire = encode(decode(body, sample["headers"]))

    assert wire.body == body
    assert wire.headers == sample["headers"]
    assert properties(wire) == sample["properties"]


@pytest.mark.parametrize("name", NAMES)
def test_a_pretty_printed_sample_decodes_to_the_same_message(name: str) -> None:
    sample = load(name)
    pretty = json.dumps(sample["body"], indent=2, ensure_ascii=True).encode("ascii")

    message = decode(pretty, sample["headers"])

    assert message == decode(canonical(sample["body"]), sample["headers"])
    assert encode(message).body == canonical(sample["body"])


@pytest.mark.parametrize("name", NAMES)
def test_the_model_built_in_python_encodes_to_the_sample(name: str) -> None:
    sample = load(name)

    wire = encode(BUILT[name])

    assert wire.body == canonical(sample["body"])
    assert wire.headers == sample["headers"]
    assert properties(wire) == sample["properties"]


@pytest.mark.parametrize("name", NAMES)
def test_a_model_survives_encode_and_decode_with_its_trace(name: str) -> None:
    message = BUILT[name]

    wire = encode(message)
    again = decode(wire.body, wire.headers, expect=type(message))

    assert again == message
    assert again.trace == message.trace
    assert type(again) is type(message)


def test_the_sample_bodies_are_utf8_not_escaped() -> None:
    body = encode(BUILT["start"]).body
    assert "commande n° 1001 — café".encode() in body
    assert b"\\u" not in body
