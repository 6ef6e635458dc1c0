"""The input schema: validating a start's input, finding and redacting secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definitions import (
    REDACTED,
    SagaDefinition,
    load_definition,
    load_text,
    redact,
    secret_paths,
    validate_input,
)

SAGAS = Path(__file__).resolve().parents[3] / "sagas"


def with_input(schema_yaml: str) -> SagaDefinition:
    text = "name: shop\nversion: 1\ninput:\n" + textwrap.indent(textwrap.dedent(schema_yaml), "  ")
    return load_text(text + "steps: [{name: a, participant: p, command: c}]\n", "case.yaml")


def checkout() -> SagaDefinition:
    return load_definition(SAGAS / "order_checkout.yaml")


def test_valid_input_has_no_errors() -> None:
    value = {"order_id": "o-1", "amount": 10, "card_token": "tok"}
    assert validate_input(checkout(), value) == []


def test_every_error_is_reported_with_its_path() -> None:
    errors = validate_input(checkout(), {"order_id": 5, "amount": -1})
    assert errors == [
        "input: 'card_token' is a required property",
        "input.amount: -1 is less than the minimum of 0",
        "input.order_id: 5 is not of type 'string'",
    ]


def test_nested_and_list_paths() -> None:
    definition = with_input(
        """\
        type: object
        properties:
          lines:
            type: array
            items:
              type: object
              properties:
                qty: {type: integer, minimum: 1}
        """
    )
    errors = validate_input(definition, {"lines": [{"qty": 1}, {"qty": 0}]})
    assert errors == ["input.lines.1.qty: 0 is less than the minimum of 1"]


def test_without_a_schema_anything_goes() -> None:
    definition = load_text(
        "name: shop\nversion: 1\nsteps: [{name: a, participant: p, command: c}]\n", "case.yaml"
    )
    assert validate_input(definition, [1, "x"]) == []


def test_secret_values_never_appear_in_errors() -> None:
    canary = "tok_CANARY_4242"
    errors = validate_input(
        checkout(),
        {"order_id": canary, "amount": "x", "card_token": [canary]},
    )
    assert errors == [
        "input.amount: 'x' is not of type 'number'",
        "input.card_token: *** is not of type 'string'",
    ]
    definition = with_input(
        """\
        type: object
        properties:
          pin: {type: string, secret: true, pattern: "^[0-9]{4}$"}
          other: {type: integer}
        """
    )
    errors = validate_input(definition, {"pin": "abcdef-secret", "other": "abcdef-secret"})
    assert all("abcdef-secret" not in error for error in errors), errors
    assert errors[1] == "input.pin: *** does not match '^[0-9]{4}$'"


def test_whole_objects_are_not_echoed() -> None:
    errors = validate_input(checkout(), ["tok_CANARY"])
    assert errors == ["input: an array is not of type 'object'"]


def test_formats_are_checked() -> None:
    definition = with_input("{type: string, format: ipv4}\n")
    assert validate_input(definition, "10.0.0.1") == []
    assert validate_input(definition, "not an address") == [
        "input: 'not an address' is not a 'ipv4'"
    ]


def test_secret_paths_of_the_shipped_saga() -> None:
    assert secret_paths(checkout()) == {"card_token"}


def test_secret_paths_nested_lists_and_references() -> None:
    definition = with_input(
        """\
        type: object
        $defs:
          card:
            type: object
            properties:
              number: {type: string, secret: true}
              brand: {type: string}
        properties:
          payer:
            type: object
            properties:
              name: {type: string}
              password: {type: string, secret: true}
              card: {$ref: "#/$defs/card"}
          backup_cards:
            type: array
            items: {$ref: "#/$defs/card"}
          extra:
            type: object
            additionalProperties: {type: string, secret: true}
          either:
            anyOf:
              - {type: string, secret: true}
              - {type: integer}
          public: {type: string, secret: false}
        """
    )
    assert secret_paths(definition) == {
        "payer.password",
        "payer.card.number",
        "backup_cards.*.number",
        "extra.*",
        "either",
    }


def test_recursive_schema_terminates() -> None:
    definition = with_input(
        """\
        $defs:
          node:
            type: object
            properties:
              key: {type: string, secret: true}
              child: {$ref: "#/$defs/node"}
        $ref: "#/$defs/node"
        """
    )
    # Recursion is unrolled three levels deep.
    assert secret_paths(definition) == {"key", "child.key", "child.child.key"}


def test_secret_keyword_does_not_change_validation() -> None:
    definition = with_input("{type: object, properties: {t: {type: string, secret: true}}}\n")
    assert validate_input(definition, {"t": "x"}) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"order_id": "o", "card_token": "tok", "amount": 1},
            {"order_id": "o", "card_token": REDACTED, "amount": 1},
        ),
        ({"order_id": "o"}, {"order_id": "o"}),
        ("not an object", "not an object"),
    ],
)
def test_redact_the_shipped_saga(value: Any, expected: Any) -> None:
    assert redact(value, secret_paths(checkout())) == expected


def test_redact_lists_and_nesting() -> None:
    paths = frozenset({"cards.*.number", "payer.password", "extra.*"})
    value: dict[str, Any] = {
        "cards": [{"number": "1", "brand": "v"}, {"number": "2"}],
        "payer": {"password": {"nested": "x"}, "name": "n"},
        "extra": {"a": "1", "b": "2"},
        "other": "kept",
    }
    redacted = redact(value, paths)
    assert redacted == {
        "cards": [{"number": REDACTED, "brand": "v"}, {"number": REDACTED}],
        "payer": {"password": REDACTED, "name": "n"},
        "extra": {"a": REDACTED, "b": REDACTED},
        "other": "kept",
    }
    assert value["payer"]["password"] == {"nested": "x"}  # the original is untouched
