"""``saga dlq show`` redacts what a definition marks secret: a start request's input and the
payload fields of a step command that take a secret (orchestrator.dead_letters, no broker)."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from orchestrator.dead_letters import DeadLetter, describe, redact_body
from orchestrator.definitions import load_text
from orchestrator.definitions.registry import DefinitionRegistry

CANARY = "CANARY-7f3a-dlq"

VAULT = """\
name: vault
version: {version}
input:
  type: object
  properties:
    card: {{type: string, secret: true}}
    order: {{type: string}}
    profile:
      type: object
      properties:
        ssn: {{type: string, secret: true}}
        name: {{type: string}}
steps:
  - name: charge
    participant: payments
    command: charge
    payload:
      card: ${{input.card}}
      order: ${{input.order}}
      note: "order ${{input.order}} on ${{input.card}}"
      input: ${{input.card}}
    compensation:
      command: refund
      payload:
        card: ${{input.card}}
        order: ${{input.order}}
  - name: ship
    participant: shipping
    command: ship
    payload:
      who: ${{input.profile}}
      order: ${{input.order}}
"""


def _registry(*versions: int) -> DefinitionRegistry:
    return DefinitionRegistry.from_definitions(
        load_text(textwrap.dedent(VAULT.format(version=v)), f"v{v}.yaml") for v in versions
    )


def _start(**fields: Any) -> dict[str, Any]:
    return {
        "type": "saga.start",
        "schema_version": 1,
        "message_id": "req-1",
        "saga_name": "vault",
        "saga_version": None,
        "input": {"card": CANARY, "order": "o-1", "profile": {"ssn": CANARY, "name": "Ann"}},
        "idempotency_key": None,
        **fields,
    }


def _command(step: str, kind: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "type": "saga.command",
        "schema_version": 1,
        "message_id": "cmd-1",
        "saga_id": "s-1",
        "saga_name": "vault",
        "saga_version": 1,
        "step": step,
        "kind": kind,
        "command": "charge",
        "attempt": 1,
        "idempotency_key": f"s-1:{step}:{kind}",
        "action_key": None,
        "payload": payload,
        **fields,
    }


def test_a_start_requests_secret_input_is_redacted() -> None:
    redacted = redact_body(_start(), _registry(1))
    assert redacted["input"] == {
        "card": "***",
        "order": "o-1",
        "profile": {"ssn": "***", "name": "Ann"},
    }
    assert redacted["message_id"] == "req-1"


def test_a_commands_payload_fields_that_take_a_secret_are_redacted() -> None:
    payload = {"card": CANARY, "order": "o-1", "note": f"order o-1 on {CANARY}", "input": CANARY}
    redacted = redact_body(_command("charge", "action", payload), _registry(1))
    # "input" is a payload field here, not the input prefix secret paths may carry.
    assert redacted["payload"] == {"card": "***", "order": "o-1", "note": "***", "input": "***"}


def test_a_compensation_is_redacted_by_its_own_payload() -> None:
    payload = {"card": CANARY, "order": "o-1"}
    redacted = redact_body(_command("charge", "compensation", payload), _registry(1))
    assert redacted["payload"] == {"card": "***", "order": "o-1"}


def test_an_object_holding_a_secret_is_redacted_whole() -> None:
    payload = {"who": {"ssn": CANARY, "name": "Ann"}, "order": "o-1"}
    redacted = redact_body(_command("ship", "action", payload), _registry(1))
    assert redacted["payload"] == {"who": "***", "order": "o-1"}


def test_an_unknown_version_is_redacted_by_the_newest() -> None:
    redacted = redact_body(
        _command("charge", "action", {"card": CANARY}, saga_version=7), _registry(1, 2)
    )
    assert redacted["payload"] == {"card": "***"}


def test_what_the_definitions_do_not_know_is_shown_as_it_is() -> None:
    registry = _registry(1)
    for body in (
        _start(saga_name="other"),
        _command("nowhere", "action", {"card": CANARY}),
        {"type": "saga.reply", "result": {"card": CANARY}},
        [CANARY],
        "text",
    ):
        assert redact_body(body, registry) == body
    assert redact_body(_start(), None) == _start()


def test_show_never_prints_the_secret() -> None:
    body = json.dumps(_command("charge", "action", {"card": CANARY, "order": "o-1"})).encode()
    letter = DeadLetter(
        dlq="saga.participant.payments.dlq",
        body=body,
        headers={"x-dead-letter-reason": "no handler for command 'charge'"},
        message_id="cmd-1",
        correlation_id="s-1",
        type="saga.command",
    )
    shown = describe(letter, _registry(1))
    assert CANARY not in json.dumps(shown)
    assert shown["body"]["payload"]["order"] == "o-1"
    assert CANARY in json.dumps(describe(letter, None)), "without definitions it is shown as is"
