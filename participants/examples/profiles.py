"""The profiles service: points a user's profile at a new image, and back."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import BaseModel

from participants import Participant, PermanentError, StepContext

metadata = sa.MetaData()
profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("blob_id", sa.String(64), nullable=True),
)

app = Participant("profiles", metadata=metadata)


class SetImage(BaseModel):
    """What the set_profile_image step sends."""

    user_id: str
    blob_id: str


class RestoreImage(BaseModel):
    """What the compensation sends."""

    user_id: str
    previous_blob_id: str | None = None


@app.command("set_image")
async def set_image(payload: SetImage, ctx: StepContext) -> dict[str, str | None]:
    """Point the profile at the new blob; users whose id starts with ``banned-`` are refused."""
    if payload.user_id.startswith("banned-"):
        raise PermanentError("user_banned", f"user {payload.user_id} may not change the image")
    row = await ctx.session.execute(
        sa.select(profiles.c.blob_id).where(profiles.c.user_id == payload.user_id)
    )
    previous = row.scalar_one_or_none()
    if previous is None:
        await ctx.session.execute(
            profiles.insert().values(user_id=payload.user_id, blob_id=payload.blob_id)
        )
    else:
        await ctx.session.execute(
            profiles.update()
            .where(profiles.c.user_id == payload.user_id)
            .values(blob_id=payload.blob_id)
        )
    return {"previous_blob_id": previous}


@app.command("restore_image")
async def restore_image(payload: RestoreImage, ctx: StepContext) -> dict[str, bool]:
    """Point the profile back at the image it had before."""
    restored = await ctx.session.execute(
        profiles.update()
        .where(profiles.c.user_id == payload.user_id)
        .values(blob_id=payload.previous_blob_id)
        .returning(profiles.c.user_id)
    )
    return {"restored": bool(restored.scalars().all())}
