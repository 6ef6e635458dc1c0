"""The blob store: writes an image to a local folder that stands for the real blob store.

The blob's name is derived from the step's idempotency key, so writing it again after a
crash overwrites the same file: an external effect made idempotent by key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from pydantic import BaseModel

from participants import Participant, PermanentError, StepContext

app = Participant("blobs")

MAX_IMAGE_BYTES = 64 * 1024


def blob_dir() -> Path:
    """Where blobs go: ``$SAGA_EXAMPLE_BLOB_DIR`` or ``./blobs``."""
    return Path(os.environ.get("SAGA_EXAMPLE_BLOB_DIR", "blobs"))


def blob_id_for(action_key: str) -> str:
    """The blob id a given action key writes."""
    return "b-" + hashlib.sha256(action_key.encode()).hexdigest()[:16]


class PutBlob(BaseModel):
    """What the store_blob step sends."""

    user_id: str
    image: str
    content_type: str = "image/png"


class DeleteBlob(BaseModel):
    """What the compensation sends; null when the put never answered."""

    blob_id: str | None = None


@app.command("put")
async def put(payload: PutBlob, ctx: StepContext) -> dict[str, str]:
    """Decode the image and write it under an id derived from the key."""
    try:
        data = base64.b64decode(payload.image, validate=True)
    except (binascii.Error, ValueError):
        raise PermanentError("bad_image", "image is not valid base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise PermanentError("image_too_large", f"image is {len(data)} bytes")
    blob_id = blob_id_for(ctx.idempotency_key)
    folder = blob_dir()
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{blob_id}.tmp"
    temporary.write_bytes(data)
    temporary.replace(folder / blob_id)  # atomic: a reader never sees half a blob
    ctx.log.info("stored blob %s (%d bytes)", blob_id, len(data))
    return {"blob_id": blob_id}


@app.command("delete")
async def delete(payload: DeleteBlob, ctx: StepContext) -> dict[str, bool]:
    """Delete the blob; finding nothing to delete is fine."""
    blob_id = payload.blob_id or blob_id_for(ctx.action_key or "")
    path = blob_dir() / blob_id
    existed = path.exists()
    path.unlink(missing_ok=True)
    return {"deleted": existed}
