"""A refused start is answered in a sentence that fits on the wire, however long the reasons."""

from __future__ import annotations

from typing import cast

from contracts import StartRequest, encode
from orchestrator.definitions import load_text
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.engine import Engine
from orchestrator.store import Store

WIDE = """\
name: wide
version: 1
input:
  type: object
  additionalProperties: {type: integer}
steps:
  - name: a
    participant: p
    command: do
"""


async def test_an_input_with_hundreds_of_problems_is_refused_not_crashed() -> None:
    registry = DefinitionRegistry.from_definitions([load_text(WIDE, "wide.yaml")])
    # A refusal writes nothing when nobody waits for the answer: the store is never used.
    engine = Engine(cast(Store, object()), registry, on_commit=lambda _messages: None)
    bad_input = {f"field_{n}": "not a number" for n in range(500)}
    request = StartRequest(message_id="r-1", saga_name="wide", input=bad_input)
    reply = await engine.start(request, reply_to=None)
    assert reply is not None
    assert reply.error is not None
    assert reply.error.code == "invalid_input"
    assert reply.saga_id is None
    encode(reply)  # it travels


async def test_an_unknown_saga_is_refused_with_its_name() -> None:
    engine = Engine(cast(Store, object()), DefinitionRegistry(), on_commit=lambda _m: None)
    request = StartRequest(message_id="r-2", saga_name="nope", input={})
    reply = await engine.start(request, reply_to=None)
    assert reply is not None
    assert reply.error is not None
    assert "nope" in reply.error.message
