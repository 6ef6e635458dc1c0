"""The payments service: charges a card and refunds it."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from pydantic import BaseModel, Field

from participants import Participant, PermanentError, StepContext

DECLINE_ABOVE = 1000
"""The demo card is declined for amounts above this (a permanent failure)."""

metadata = sa.MetaData()
charges = sa.Table(
    "charges",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("action_key", sa.String(400), nullable=False, unique=True),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("refunded", sa.Boolean, nullable=False, default=False),
)

app = Participant("payments", metadata=metadata)


class Charge(BaseModel):
    """What the charge_card step sends."""

    amount: float = Field(ge=0)
    card_token: str | None = None


class Refund(BaseModel):
    """What the compensation sends; null when the charge never answered."""

    charge_id: str | None = None


@app.command("charge")
async def charge(payload: Charge, ctx: StepContext) -> dict[str, str]:
    """Charge the card; amounts above DECLINE_ABOVE are declined for good."""
    if payload.amount > DECLINE_ABOVE:
        raise PermanentError("card_declined", f"the card was declined for {payload.amount:g}")
    charge_id = f"ch-{uuid.uuid4().hex[:12]}"
    await ctx.session.execute(
        charges.insert().values(
            id=charge_id, action_key=ctx.idempotency_key, amount=payload.amount, refunded=False
        )
    )
    ctx.log.info("charged %s (%s)", payload.amount, charge_id)
    return {"charge_id": charge_id}


@app.command("refund")
async def refund(payload: Refund, ctx: StepContext) -> dict[str, bool]:
    """Refund the charge (found by its action's key when the id is unknown)."""
    condition = (
        charges.c.id == payload.charge_id
        if payload.charge_id
        else charges.c.action_key == ctx.action_key
    )
    refunded = await ctx.session.execute(
        charges.update().where(condition).values(refunded=True).returning(charges.c.id)
    )
    return {"refunded": bool(refunded.scalars().all())}
