"""Sample messages shared by the contract tests."""

from __future__ import annotations

from typing import Any

from contracts import StepCommand

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def command(**changes: Any) -> StepCommand:
    """An action command for ``reserve_stock``, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "saga_id": "s-1",
        "saga_name": "order_checkout",
        "saga_version": 2,
        "step": "reserve_stock",
        "kind": "action",
        "command": "reserve",
        "attempt": 3,
        "idempotency_key": "s-1:reserve_stock:action",
        "payload": {"order_id": "o-1"},
    }
    return StepCommand(**{**fields, **changes})
