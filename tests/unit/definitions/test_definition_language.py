"""The richer language as loaded: parallel groups flattened in place and numbered, step
kinds inferred, conditions and failure policies kept, the saga's deadline parsed."""

from __future__ import annotations

import textwrap
from datetime import timedelta

from orchestrator.definitions import load_text
from orchestrator.definitions.model import OnFailure, StepKind

TRIP = """\
name: trip
version: 1
deadline: 15m
defaults:
  retry: {max_attempts: 4, never: [fraud]}
steps:
  - name: quote
    participant: pricing
    command: quote
  - parallel:
      - name: flight
        participant: airline
        command: book
        payload: {price: "${steps.quote.result.price}"}
        compensation: {command: cancel}
      - name: hotel
        participant: hotels
        command: book
        when: ${input.nights} > 0 and not ${input.day_trip}
        compensation: {command: cancel}
  - name: charge
    participant: payments
    command: charge
    kind: pivot
    payload: {flight: "${steps.flight.result.id}", hotel: "${steps.hotel.result.id}"}
  - parallel:
      - name: mail
        participant: mail
        command: send
        retry: {on: [busy]}
      - name: loyalty
        participant: loyalty
        command: credit
        on_failure: fail
"""


def test_a_definition_using_the_whole_language_loads() -> None:
    definition = load_text(textwrap.dedent(TRIP), "trip.yaml")
    assert [s.name for s in definition.steps] == [
        "quote",
        "flight",
        "hotel",
        "charge",
        "mail",
        "loyalty",
    ]
    assert [s.group for s in definition.steps] == [None, 1, 1, None, 2, 2]
    assert [s.kind for s in definition.steps] == [
        StepKind.RETRIABLE,  # no compensation and nothing said: retriable
        StepKind.COMPENSATABLE,
        StepKind.COMPENSATABLE,
        StepKind.PIVOT,
        StepKind.RETRIABLE,
        StepKind.RETRIABLE,
    ]
    assert definition.pivot == 3
    assert definition.deadline == timedelta(minutes=15)
    assert definition.steps[2].when == "${input.nights} > 0 and not ${input.day_trip}"
    assert definition.steps[4].retry.on == ("busy",)
    assert definition.steps[4].retry.never == ("fraud",), "merged over defaults"
    assert definition.steps[5].on_failure is OnFailure.FAIL
    assert definition.stage(1) == range(1, 3)
    assert definition.stage(3) == range(3, 4)


def test_a_stored_snapshot_from_before_kinds_reads_with_kinds_inferred() -> None:
    definition = load_text(textwrap.dedent(TRIP), "trip.yaml")
    stored = definition.model_dump(mode="json")
    for step in stored["steps"]:
        del step["kind"], step["when"], step["on_failure"], step["group"]
    del stored["deadline"]
    again = type(definition).model_validate(stored)
    assert [s.kind for s in again.steps][:2] == [StepKind.RETRIABLE, StepKind.COMPENSATABLE]
    assert again.deadline is None
