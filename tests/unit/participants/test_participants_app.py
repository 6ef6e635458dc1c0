"""``Participant`` and its ``@command`` handlers: what registers, and how payloads and results
are shaped (no broker, no database)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from participants import (
    CommandHandler,
    HandlerDefinitionError,
    Participant,
    PermanentError,
    StepContext,
)


class Item(BaseModel):
    """A nested part of the payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str
    qty: int = Field(ge=1)


class Reserve(BaseModel):
    """A handler's payload model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    items: list[Item]


class Reserved(BaseModel):
    """A handler's result model."""

    reservation_id: str
    on: date


async def reserve(payload: Reserve, ctx: StepContext) -> Reserved:
    """A handler whose payload is a model."""
    return Reserved(reservation_id=payload.order_id, on=date(2024, 1, 2))


async def anything(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """A handler that takes the payload as a dict."""
    return dict(payload)


async def untyped(payload, ctx):  # type: ignore[no-untyped-def]
    """A handler without annotations."""
    return None


# -- registering ---------------------------------------------------------------------------


def test_a_handler_is_registered_under_its_command_and_returned_unchanged() -> None:
    app = Participant("inventory")
    registered = app.command("reserve")(reserve)
    assert registered is reserve
    app.command("peek")(anything)
    assert app.commands == ["peek", "reserve"]
    handler = app.handler("reserve")
    assert handler is not None
    assert (handler.command, handler.func, handler.payload_type) == ("reserve", reserve, Reserve)
    assert app.handler("release") is None


def test_the_payload_type_comes_from_the_first_annotation() -> None:
    app = Participant("inventory")
    app.command("as_dict")(anything)
    app.command("untyped")(untyped)
    for command in ("as_dict", "untyped"):
        handler = app.handler(command)
        assert handler is not None
        assert handler.payload_type is None, command


def test_a_second_handler_for_a_command_is_refused() -> None:
    app = Participant("inventory")
    app.command("reserve")(reserve)
    with pytest.raises(HandlerDefinitionError) as caught:
        app.command("reserve")(anything)
    assert str(caught.value) == "participant 'inventory' already has a handler for 'reserve'"
    handler = app.handler("reserve")
    assert handler is not None
    assert handler.func is reserve, "the first handler stays"


def test_a_handler_that_is_not_async_is_refused() -> None:
    def blocking(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {}

    app = Participant("inventory")
    with pytest.raises(HandlerDefinitionError) as caught:
        app.command("reserve")(blocking)  # type: ignore[type-var]
    assert str(caught.value) == "the handler for 'reserve' must be an async function"
    assert app.commands == []


async def _one(payload: dict[str, Any]) -> None:
    return None


async def _three(payload: dict[str, Any], ctx: StepContext, extra: int) -> None:
    return None


async def _star(*args: Any) -> None:
    return None


@pytest.mark.parametrize(("func", "count"), [(_one, 1), (_three, 3), (_star, 1)])
def test_a_handler_must_take_payload_and_context(func: Any, count: int) -> None:
    app = Participant("inventory")
    with pytest.raises(HandlerDefinitionError) as caught:
        app.command("reserve")(func)
    assert str(caught.value) == (
        f"the handler for 'reserve' must take (payload, ctx), not {count} parameters"
    )
    assert app.commands == []


@pytest.mark.parametrize("name", ["", "has space", "x" * 201, "ünïcode", "a/b", "inventory\n"])
def test_a_participant_name_must_fit_a_queue_name(name: str) -> None:
    with pytest.raises(HandlerDefinitionError) as caught:
        Participant(name)
    assert "must be 1-200 letters, digits" in str(caught.value)


@pytest.mark.parametrize("name", ["inventory", "payments-eu.v2", "a_b", "x" * 200])
def test_good_participant_names(name: str) -> None:
    assert Participant(name).name == name


# -- payloads -------------------------------------------------------------------------------


def test_a_payload_is_validated_into_the_handlers_model() -> None:
    handler = CommandHandler("reserve", reserve, Reserve)
    parsed = handler.parse({"order_id": "o-1", "items": [{"sku": "s-1", "qty": 2}]})
    assert parsed == Reserve(order_id="o-1", items=[Item(sku="s-1", qty=2)])


def test_a_payload_without_a_model_is_a_plain_dict_copy() -> None:
    handler = CommandHandler("peek", anything, None)
    payload = {"a": 1}
    parsed = handler.parse(payload)
    assert parsed == payload
    assert parsed is not payload


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"items": []}, ["order_id: Field required"]),
        ({"order_id": "o-1", "items": [{"sku": "s-1", "qty": 0}]}, ["items.0.qty"]),
        ({"order_id": 7, "items": "nope"}, ["order_id", "items"]),
        ({"order_id": "o-1", "items": [], "extra": True}, ["extra"]),
    ],
)
def test_a_bad_payload_is_a_permanent_failure_naming_the_fields(
    payload: dict[str, Any], named: list[str]
) -> None:
    handler = CommandHandler("reserve", reserve, Reserve)
    with pytest.raises(PermanentError) as caught:
        handler.parse(payload)
    error = caught.value
    assert error.code == "invalid_payload"
    assert error.message.startswith("payload for 'reserve' is invalid: ")
    for name in named:
        assert name in error.message
    assert "\n" not in error.message


def test_a_bad_payload_message_does_not_echo_the_values() -> None:
    handler = CommandHandler("reserve", reserve, Reserve)
    with pytest.raises(PermanentError) as caught:
        handler.parse({"order_id": "o-1", "items": "card 4111-1111-1111-1111"})
    assert "4111" not in caught.value.message


# -- results --------------------------------------------------------------------------------


def test_a_model_result_is_dumped_as_json() -> None:
    result = CommandHandler.result(Reserved(reservation_id="r-1", on=date(2024, 1, 2)))
    assert result == {"reservation_id": "r-1", "on": "2024-01-02"}


def test_a_dict_result_is_copied_and_none_is_an_empty_result() -> None:
    value = {"reservation_id": "r-1"}
    result = CommandHandler.result(value)
    assert result == value
    assert result is not value
    assert CommandHandler.result(None) == {}


@pytest.mark.parametrize("value", [["r-1"], "r-1", 7, True])
def test_anything_else_is_refused_as_a_result(value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        CommandHandler.result(value)
    assert type(value).__name__ in str(caught.value)
