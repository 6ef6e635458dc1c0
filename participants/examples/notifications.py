"""The notifications service: records the e-mails it would send (the mail relay's outbox)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from pydantic import BaseModel

from participants import Participant, StepContext

metadata = sa.MetaData()
emails = sa.Table(
    "emails",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("action_key", sa.String(400), nullable=False, unique=True),
    sa.Column("template", sa.String(200), nullable=False),
    sa.Column("subject_id", sa.String(200), nullable=True),
)

app = Participant("notifications", metadata=metadata)


class SendEmail(BaseModel):
    """What a notification step sends."""

    template: str = "generic"
    order_id: str | None = None
    user_id: str | None = None


@app.command("send_email")
async def send_email(payload: SendEmail, ctx: StepContext) -> dict[str, str]:
    """Queue an e-mail exactly once per step."""
    message_id = f"m-{uuid.uuid4().hex[:12]}"
    await ctx.session.execute(
        emails.insert().values(
            id=message_id,
            action_key=ctx.idempotency_key,
            template=payload.template,
            subject_id=payload.order_id or payload.user_id,
        )
    )
    return {"message_id": message_id}
