"""The inventory service: reserves stock for an order and releases it."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from pydantic import BaseModel

from participants import Participant, PermanentError, StepContext

metadata = sa.MetaData()
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("order_id", sa.String(200), nullable=False),
    sa.Column("action_key", sa.String(400), nullable=False, unique=True),
    sa.Column("released", sa.Boolean, nullable=False, default=False),
)

app = Participant("inventory", metadata=metadata)


class ReserveStock(BaseModel):
    """What the reserve_stock step sends."""

    order_id: str
    note: str | None = None


class ReleaseStock(BaseModel):
    """What the compensation sends; null when the reservation never answered."""

    reservation_id: str | None = None


@app.command("reserve")
async def reserve(payload: ReserveStock, ctx: StepContext) -> dict[str, str]:
    """Reserve stock; orders whose id starts with ``oos-`` find the shelf empty."""
    if payload.order_id.startswith("oos-"):
        raise PermanentError("out_of_stock", f"no stock for order {payload.order_id}")
    reservation_id = f"r-{uuid.uuid4().hex[:12]}"
    await ctx.session.execute(
        reservations.insert().values(
            id=reservation_id,
            order_id=payload.order_id,
            action_key=ctx.idempotency_key,
            released=False,
        )
    )
    ctx.log.info("reserved %s for order %s", reservation_id, payload.order_id)
    return {"reservation_id": reservation_id}


@app.command("release")
async def release(payload: ReleaseStock, ctx: StepContext) -> dict[str, bool]:
    """Release the reservation (found by its action's key when the id is unknown)."""
    condition = (
        reservations.c.id == payload.reservation_id
        if payload.reservation_id
        else reservations.c.action_key == ctx.action_key
    )
    released = await ctx.session.execute(
        reservations.update().where(condition).values(released=True).returning(reservations.c.id)
    )
    found = released.scalars().all()
    ctx.log.info("released %d reservation(s)", len(found))
    return {"released": bool(found)}
