"""Which replies a saga, as some process last saw it, is waiting for: a process that
remembers a saga decides a reply on its memory only if the saga there expects that reply
(see ``orchestrator.stores.recent``); otherwise it reads the saga again."""

from __future__ import annotations

from orchestrator.core.replies import expects_reply
from orchestrator.core.state import Kind

from .builders import ORDER, Saga, checkout_failing_at, order_checkout


def test_a_running_step_expects_its_actions_attempts_so_far_and_no_other_step() -> None:
    saga = Saga(order_checkout(), ORDER)
    assert expects_reply(saga.state, "reserve_stock", Kind.ACTION, 1)
    assert not expects_reply(saga.state, "reserve_stock", Kind.ACTION, 2)  # not sent yet
    assert not expects_reply(saga.state, "reserve_stock", Kind.COMPENSATION, 1)
    assert not expects_reply(saga.state, "charge_card", Kind.ACTION, 1)  # moved on elsewhere?
    assert not expects_reply(saga.state, "no_such_step", Kind.ACTION, 1)

    saga.fail("reserve_stock", retryable=True)
    saga.advance(60)
    saga.fire("reserve_stock")  # the retry is sent: attempt 2
    assert expects_reply(saga.state, "reserve_stock", Kind.ACTION, 2)
    assert expects_reply(saga.state, "reserve_stock", Kind.ACTION, 1)  # a late success counts

    saga.succeed("reserve_stock", {"reservation_id": "r-1"})
    assert not expects_reply(saga.state, "reserve_stock", Kind.ACTION, 2)
    assert expects_reply(saga.state, "charge_card", Kind.ACTION, 1)


def test_a_compensating_step_expects_its_compensation_only() -> None:
    saga = checkout_failing_at("send_confirmation")
    assert expects_reply(saga.state, "charge_card", Kind.COMPENSATION, 1)
    assert not expects_reply(saga.state, "charge_card", Kind.ACTION, 1)
    assert not expects_reply(saga.state, "reserve_stock", Kind.COMPENSATION, 1)  # not yet

    saga.succeed("charge_card", kind=Kind.COMPENSATION)
    assert not expects_reply(saga.state, "charge_card", Kind.COMPENSATION, 1)
    assert expects_reply(saga.state, "reserve_stock", Kind.COMPENSATION, 1)
