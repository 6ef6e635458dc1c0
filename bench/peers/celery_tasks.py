"""The standard saga as a Celery chain (the worker: ``celery -A bench.peers.celery_tasks
worker``). Broker and database come from ``BENCH_AMQP_URL`` and ``BENCH_EFFECTS_DSN``.

reserve -> charge -> confirm, each task one durable write (autocommit, before it returns).
When confirm fails for good it starts the compensations itself, refund then unreserve,
as Celery users write a saga: Celery keeps no saga state to do it for them."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from celery import Celery, chain
from celery.signals import worker_process_init

app = Celery("bench", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@localhost//"))
app.conf.update(
    task_acks_late=True,  # ack after the task ran: a worker lost mid-task means a redelivery
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=16,
    task_ignore_result=True,  # the chain passes nothing on; no result backend
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_INSERT = (
    "INSERT INTO bench_effects (saga_key, step, kind) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
)
_connection: psycopg.Connection[Any] | None = None


@worker_process_init.connect  # type: ignore[untyped-decorator,unused-ignore]
def _connect(**_: Any) -> None:
    """One connection per worker process, opened after the fork."""
    global _connection
    _connection = psycopg.connect(os.environ["BENCH_EFFECTS_DSN"], autocommit=True)


def _write(key: str, step: str, kind: str) -> None:
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(os.environ["BENCH_EFFECTS_DSN"], autocommit=True)
    _connection.execute(_INSERT, (key, step, kind))


@app.task(name="bench.step")  # type: ignore[untyped-decorator,unused-ignore]
def step(key: str, name: str, kind: str) -> None:
    _write(key, name, kind)


@app.task(name="bench.confirm")  # type: ignore[untyped-decorator,unused-ignore]
def confirm(key: str, fail: bool) -> None:
    if fail:
        compensations(key).apply_async()
        return
    _write(key, "confirm", "action")


def compensations(key: str) -> Any:
    return chain(step.si(key, "charge", "compensation"), step.si(key, "reserve", "compensation"))


def saga(key: str, fail: bool) -> Any:
    return chain(
        step.si(key, "reserve", "action"), step.si(key, "charge", "action"), confirm.si(key, fail)
    )
