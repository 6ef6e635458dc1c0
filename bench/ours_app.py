"""The benchmark's participant on this product's SDK: one durable write per command, in
the inbox's transaction (``saga participant run bench.ours_app:app``)."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from participants import Participant, PermanentError, StepContext

metadata = sa.MetaData()
effects = sa.Table(
    "bench_effects",
    metadata,
    sa.Column("saga_key", sa.Text, primary_key=True),
    sa.Column("step", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

app = Participant("bench", metadata=metadata)


class Step(BaseModel):
    key: str
    fail: bool = False


async def _write(payload: Step, ctx: StepContext, step: str, kind: str) -> dict[str, bool]:
    await ctx.session.execute(effects.insert().values(saga_key=payload.key, step=step, kind=kind))
    return {"ok": True}


@app.command("reserve")
async def reserve(payload: Step, ctx: StepContext) -> dict[str, bool]:
    return await _write(payload, ctx, "reserve", "action")


@app.command("charge")
async def charge(payload: Step, ctx: StepContext) -> dict[str, bool]:
    return await _write(payload, ctx, "charge", "action")


@app.command("confirm")
async def confirm(payload: Step, ctx: StepContext) -> dict[str, bool]:
    if payload.fail:
        raise PermanentError("rejected", "the order cannot be confirmed")
    return await _write(payload, ctx, "confirm", "action")


@app.command("unreserve")
async def unreserve(payload: Step, ctx: StepContext) -> dict[str, bool]:
    return await _write(payload, ctx, "reserve", "compensation")


@app.command("refund")
async def refund(payload: Step, ctx: StepContext) -> dict[str, bool]:
    return await _write(payload, ctx, "charge", "compensation")


SAGA_YAML = """\
name: bench_order
version: 1
input:
  type: object
  required: [key, fail]
  properties:
    key: {type: string}
    fail: {type: boolean}
defaults:
  timeout: 60s
  retry:
    max_attempts: 3
    backoff: {initial: 500ms, multiplier: 2, max: 5s}
steps:
  - name: reserve
    participant: bench
    command: reserve
    payload: {key: "${input.key}"}
    compensation:
      command: unreserve
      payload: {key: "${input.key}"}
  - name: charge
    participant: bench
    command: charge
    payload: {key: "${input.key}"}
    compensation:
      command: refund
      payload: {key: "${input.key}"}
  - name: confirm
    participant: bench
    command: confirm
    payload: {key: "${input.key}", fail: "${input.fail}"}
"""
"""The standard saga in this product's definition language."""
