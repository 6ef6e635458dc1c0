"""What a store process remembers of the sagas it wrote last (see :class:`RecentSagas`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from orchestrator.core.state import SagaStatus
from orchestrator.store import NewSaga, SagaRecord, Snapshot, Transition

__all__ = ["RecentSagas"]


_OVER = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class RecentSagas:
    """The sagas this process wrote last, as it wrote them, so that the reply to a command
    it sent is decided without reading the saga again (on PostgreSQL, one statement per
    reply).

    Safe because it is only ever a guess: a transition is written only if the saga is
    still at the version remembered and the message is not in the inbox, so a saga another
    process moved, or a duplicate message, fails the write; the entry is then forgotten
    and the caller reads the database. Bounded (least recently used out); sagas that are
    over are not kept."""

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._entries: OrderedDict[str, Snapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, saga_id: str) -> Snapshot | None:
        """The saga as last written here (``processed`` False: not known), if remembered."""
        entry = self._entries.get(saga_id)
        if entry is not None:
            self._entries.move_to_end(saga_id)
        return entry

    def forget(self, saga_id: str) -> None:
        """Drop the saga: the next read goes to the database."""
        self._entries.pop(saga_id, None)

    def applied(self, transition: Transition) -> None:
        """Remember the saga as ``transition`` left it."""
        before = transition.before
        record = replace(
            before,
            state=transition.after,
            version=before.version + 1,
            updated_at=transition.now if before.state != transition.after else before.updated_at,
        )
        last_seq = (transition.last_seq or 0) + len(transition.history)
        self._remember(Snapshot(record=record, last_seq=last_seq, processed=False))

    def created(self, saga: NewSaga) -> None:
        """Remember a saga just created."""
        record = SagaRecord(
            state=saga.state,
            version=1,
            idempotency_key=saga.idempotency_key,
            trace_context=saga.trace_context,
            created_at=saga.now,
            updated_at=saga.now,
        )
        self._remember(Snapshot(record=record, last_seq=len(saga.history), processed=False))

    def _remember(self, snapshot: Snapshot) -> None:
        assert snapshot.record is not None
        state = snapshot.record.state
        if state.status in _OVER:
            self._entries.pop(state.saga_id, None)
            return
        self._entries[state.saga_id] = snapshot
        self._entries.move_to_end(state.saga_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
