"""A dead letter's listing row, read from our own dead-letter headers or the broker's x-death,
and the headers a replay carries (orchestrator.dead_letters, no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from orchestrator.dead_letters import (
    BODY_PREVIEW_BYTES,
    REPLAY_COUNT_HEADER,
    DeadLetter,
    Replayed,
    dead_letter_queues,
    describe,
    replay_headers,
)

DLQ = "saga.participant.alpha.dlq"
EARLY = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATE = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)


def _death(reason: str, *, queue: str = "saga.participant.alpha", count: int = 1,
           time: datetime = EARLY) -> dict[str, object]:  # fmt: skip
    return {
        "count": count,
        "reason": reason,
        "queue": queue,
        "time": time,
        "exchange": "",
        "routing-keys": [queue],
    }


def test_dlqs_are_the_orchestrators_then_each_participants_once() -> None:
    assert dead_letter_queues(["beta", "alpha", "beta"]) == [
        "saga.orchestrator.start.dlq",
        "saga.orchestrator.replies.dlq",
        "saga.participant.alpha.dlq",
        "saga.participant.beta.dlq",
    ]
    assert dead_letter_queues([]) == [
        "saga.orchestrator.start.dlq",
        "saga.orchestrator.replies.dlq",
    ]


def test_our_own_copy_gives_its_reason_queue_and_time() -> None:
    letter = DeadLetter(
        dlq=DLQ,
        body=b"{}",
        headers={
            "x-dead-letter-reason": b"no handler for command 'do'",
            "x-original-queue": b"saga.participant.alpha",
            "x-dead-lettered-at": "2026-01-02T03:04:05+00:00",
            "x-saga-step": b"b",
            "x-saga-kind": "action",
        },
        message_id="m-1",
        correlation_id="saga-1",
        type="saga.command",
    )
    assert letter.row().to_json() == {
        "id": "m-1",
        "queue": "saga.participant.alpha",
        "dlq": DLQ,
        "reason": "no handler for command 'do'",
        "death_reason": "rejected",
        "count": 1,
        "first_death_at": "2026-01-02T03:04:05+00:00",
        "saga_id": "saga-1",
        "step": "b",
        "kind": "action",
    }


def test_a_broker_death_past_the_delivery_limit_reads_from_x_death() -> None:
    headers = {
        # Most recent first, as the broker writes it.
        "x-death": [_death("delivery_limit", count=3, time=LATE), _death("rejected", time=EARLY)],
        "x-first-death-reason": b"rejected",
    }
    row = DeadLetter(dlq=DLQ, body=b"", headers=headers, message_id="m-2").row()
    assert row.death_reason == "delivery_limit"
    assert row.count == 3
    assert row.first_death_at == EARLY.isoformat()
    assert row.queue == "saga.participant.alpha"
    assert "delivery limit" in row.reason
    assert (row.saga_id, row.step, row.kind) == (None, None, None)


def test_broker_reasons_read_as_sentences() -> None:
    def reason(death: str) -> str:
        return DeadLetter(dlq=DLQ, body=b"", headers={"x-death": [_death(death)]}).row().reason

    assert reason("rejected") == "rejected by a consumer"
    assert "time to live" in reason("expired")
    assert "length limit" in reason("maxlen")
    assert reason("something_new") == "dead-lettered by the broker (something_new)"


def test_the_queue_falls_back_to_x_death_then_to_the_dlqs_own() -> None:
    from_death = DeadLetter(dlq=DLQ, body=b"", headers={"x-death": [_death("rejected", queue="q")]})
    assert from_death.queue == "q"
    assert from_death.home == "saga.participant.alpha"
    bare = DeadLetter(dlq="saga.orchestrator.replies.dlq", body=b"", headers={"x-death": "junk"})
    row = bare.row()
    assert row.queue == "saga.orchestrator.replies"
    assert (row.death_reason, row.count, row.first_death_at) == (None, 1, None)
    assert "no dead-letter headers" in row.reason


def test_a_start_request_has_no_saga_yet() -> None:
    letter = DeadLetter(
        dlq="saga.orchestrator.start.dlq",
        body=b"",
        headers={"x-dead-letter-reason": "unsupported schema version 2 for saga.start"},
        message_id="req-1",
        correlation_id="req-1",
        type="saga.start",
    )
    assert letter.row().saga_id is None


def test_replay_headers_drop_the_dead_letter_bookkeeping_and_count_the_replay() -> None:
    headers: dict[str, object] = {
        "x-dead-letter-reason": "no handler",
        "x-original-queue": "saga.participant.alpha",
        "x-dead-lettered-at": "2026-01-02T03:04:05+00:00",
        "x-death": [_death("rejected")],
        "x-first-death-reason": "rejected",
        "x-first-death-queue": "saga.participant.alpha",
        "x-first-death-exchange": "",
        "x-last-death-reason": "rejected",
        "x-delivery-count": 4,
        "x-saga-step": "b",
        "x-idempotency-key": "s:b:action",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        REPLAY_COUNT_HEADER: b"2",
    }
    assert replay_headers(headers) == {
        "x-saga-step": "b",
        "x-idempotency-key": "s:b:action",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        REPLAY_COUNT_HEADER: 3,
    }
    assert replay_headers({})[REPLAY_COUNT_HEADER] == 1
    assert replay_headers({REPLAY_COUNT_HEADER: "junk"})[REPLAY_COUNT_HEADER] == 1


def test_show_prints_bytes_safely_and_headers_as_json() -> None:
    body = b"\xff\x00" + b"x" * (BODY_PREVIEW_BYTES * 2)
    letter = DeadLetter(
        dlq=DLQ,
        body=body,
        headers={"x-death": [_death("rejected")], "raw": b"\xfe", "text": b"ok"},
        message_id="m-3",
        timestamp=EARLY,
    )
    shown = describe(letter, None)
    assert shown["body_format"] == "bytes"
    assert shown["body_truncated"] is True
    assert shown["body_bytes"] == len(body)
    assert shown["body"].startswith("b'\\xff\\x00xxx")
    assert len(shown["body"]) < BODY_PREVIEW_BYTES + 20
    assert shown["headers"]["x-death"][0]["time"] == EARLY.isoformat()
    assert shown["headers"]["raw"] == "b'\\xfe'"
    assert shown["headers"]["text"] == "ok"
    assert shown["properties"]["timestamp"] == EARLY.isoformat()
    json.dumps(shown)  # every value is plain JSON


def test_show_parses_a_json_body() -> None:
    letter = DeadLetter(dlq=DLQ, body=b'{"a": [1, 2]}', headers={})
    shown = describe(letter, None)
    assert (shown["body_format"], shown["body"]) == ("json", {"a": [1, 2]})
    deep = DeadLetter(dlq=DLQ, body=b"[" * 100_000 + b"]" * 100_000, headers={})
    assert describe(deep, None)["body_format"] == "bytes"


def test_replay_results_have_the_documented_shape() -> None:
    assert Replayed("m", "q", replayed=True).to_json() == {
        "id": "m",
        "queue": "q",
        "replayed": True,
    }
    missing = Replayed("m", None, replayed=False, problem="no dead-lettered message with id m")
    assert missing.to_json() == {"id": "m", "queue": None, "replayed": False}
