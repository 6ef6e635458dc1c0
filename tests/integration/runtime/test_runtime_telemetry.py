"""Traces and metrics of real service processes, received by a real OTLP/HTTP receiver.

An orchestrator and two participants run as separate processes exporting to
:class:`otlp.OtlpReceiver`. Four sagas: one whose orchestrator is SIGKILLed while its second
step runs and is restarted, then one that completes, one that is compensated and one whose
second step is retried. Each must be one connected tree of spans, compared as text; no span
may carry the secret canary; and the metrics of the restarted orchestrator (scraped from its
Prometheus endpoint) and of a participant (received over OTLP) must count exactly that run.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from otlp import OtlpReceiver, ReceivedSpan, span_tree
from procs import Services, service_environ
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.client import StartClient
from orchestrator.stores.sql import SqlStore
from orchestrator.transports.amqp import AmqpTransport

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

ORCHESTRATOR = "saga-orchestrator"
CANARY = "tok-canary-5b1e9d"

DUO_YAML = """\
name: duo
version: 1
input:
  type: object
  properties:
    card: {type: string, secret: true}
defaults:
  timeout: 20s
  retry:
    max_attempts: 3
    backoff: {initial: 50ms}
steps:
  - name: a
    participant: alpha
    command: do
    payload:
      behaviour: ${input.a}
      card: ${input.card}
    compensation:
      command: undo
      payload:
        behaviour: {}
  - name: b
    participant: beta
    command: do
    payload:
      behaviour: ${input.b}
"""

COMPLETED = """\
saga duo [saga-orchestrator] completed
  step a [saga-orchestrator] #1 succeeded
    process saga.participant.alpha [saga-participant-alpha]
      handle do [saga-participant-alpha] succeeded
  step b [saga-orchestrator] #1 succeeded
    process saga.participant.beta [saga-participant-beta]
      handle do [saga-participant-beta] succeeded"""

COMPENSATED = """\
saga duo [saga-orchestrator] compensated ERROR(compensated: boom: beta refuses for good (step b))
  step a [saga-orchestrator] #1 succeeded
    process saga.participant.alpha [saga-participant-alpha]
      handle do [saga-participant-alpha] succeeded
  step b [saga-orchestrator] #1 failed ERROR(boom: beta refuses for good)
    process saga.participant.beta [saga-participant-beta]
      handle do [saga-participant-beta] failed ERROR(boom: beta refuses for good)
  compensate a [saga-orchestrator] #1 succeeded
    process saga.participant.alpha [saga-participant-alpha]
      handle undo [saga-participant-alpha] succeeded"""

RETRIED = """\
saga duo [saga-orchestrator] completed
  step a [saga-orchestrator] #1 succeeded
    process saga.participant.alpha [saga-participant-alpha]
      handle do [saga-participant-alpha] succeeded
  step b [saga-orchestrator] #1 failed ERROR(flaky: beta fails attempt 1)
    process saga.participant.beta [saga-participant-beta]
      handle do [saga-participant-beta] retryable_failure ERROR(flaky: beta fails attempt 1)
  step b [saga-orchestrator] #2 succeeded
    process saga.participant.beta [saga-participant-beta]
      handle do [saga-participant-beta] succeeded"""


def describe(span: ReceivedSpan) -> str:
    """A span as one line of the tree: name, service, attempt, outcome, error."""
    parts = [span.name, f"[{span.service}]"]
    if span.service == ORCHESTRATOR and "saga.attempt" in span.attributes:
        parts.append(f"#{span.attributes['saga.attempt']}")
    if "saga.outcome" in span.attributes:
        parts.append(str(span.attributes["saga.outcome"]))
    if span.error is not None:
        parts.append(f"ERROR({span.error})")
    return " ".join(parts)


def without_inbox_answers(tree: str) -> str:
    """The tree without deliveries a participant answered from its inbox: copies of a
    command that a crash made the successor publish again (the outbox cannot know whether
    a publish it never marked sent reached the broker)."""
    lines = tree.splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip().startswith("process ") and following.endswith("succeeded_from_inbox"):
            continue
        if line.endswith("succeeded_from_inbox"):
            continue
        kept.append(line)
    return "\n".join(kept)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    matches = [
        value
        for (sample, found), value in samples.items()
        if sample == name and set(labels.items()) <= found
    ]
    return sum(matches)


async def test_one_connected_trace_per_saga_across_processes_and_a_restart(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> None:
    from orchestrator import migrations

    definitions = tmp_path / "sagas"
    definitions.mkdir()
    (definitions / "duo.yaml").write_text(DUO_YAML)
    await asyncio.to_thread(migrations.upgrade, database_url)
    metrics_port = _free_port()
    with OtlpReceiver().running() as receiver:
        env = service_environ(
            amqp_url=amqp_url,
            database_url=database_url,
            definitions_dir=definitions,
            participant_database_url=participant_database_url,
        )
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_METRIC_EXPORT_INTERVAL="300",
        )
        services = Services(tmp_path / "procs", env)
        orchestrator = services.orchestrator()
        orchestrator.env["SAGA_METRICS_PORT"] = str(metrics_port)
        alpha, beta = services.participant("alpha"), services.participant("beta")
        alpha.env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"
        transport = AmqpTransport(amqp_url, name="test-client")
        store = await SqlStore.connect(database_url)
        try:
            with services.logs_on_failure():
                await transport.connect()
                client = StartClient(transport)
                await asyncio.gather(
                    orchestrator.start_ready(), alpha.start_ready(), beta.start_ready()
                )

                async def start(**behaviour: Any) -> tuple[str, str]:
                    saga_input = {"a": {}, "b": {}, "card": CANARY, **behaviour}
                    [reply] = await client.start_many("duo", [(saga_input, None)], wait_seconds=30)
                    assert reply.saga_id is not None, reply.error
                    record = await store.get(reply.saga_id)
                    assert record is not None
                    assert record.trace_context is not None
                    return reply.saga_id, record.trace_context["trace_id"]

                def names(trace_id: str) -> list[str]:
                    return [s.name for s in receiver.spans_now() if s.trace_id == trace_id]

                # 1. Killed mid-way: b sleeps 4 s; the orchestrator dies once step a's span
                # is out, and its successor ends b and the saga in the same trace.
                _, killed = await start(b={"delay_first": 4})
                await receiver.wait_for("step a", lambda: "step a" in names(killed))
                await orchestrator.kill()
                await orchestrator.start_ready()
                # 2-4. Completed, compensated, retried.
                _, completed = await start()
                _, compensated = await start(b={"fail": "permanent"})
                _, retried = await start(b={"fail_times": 1})
                traces = {killed: 7, completed: 7, compensated: 10, retried: 10}
                # alpha exports only when it stops (a 10-minute batch delay): the graceful
                # stop must flush its spans. Everyone else's are in before that.
                alpha_spans = {killed: 2, completed: 2, compensated: 4, retried: 2}
                await receiver.wait_for(
                    "every span of the four sagas but alpha's",
                    lambda: all(len(names(t)) >= n - alpha_spans[t] for t, n in traces.items()),
                    within=60,
                )
                await _check_metrics(receiver, metrics_port)
                for service in (orchestrator, alpha, beta):
                    assert await service.stop() == 0
                await receiver.wait_for(
                    "alpha's spans, flushed at its stop",
                    lambda: all(len(names(t)) >= n for t, n in traces.items()),
                )
                spans = receiver.spans_now()
                print("\n" + "\n\n".join(span_tree(spans, t, describe) for t in traces))
                assert without_inbox_answers(span_tree(spans, killed, describe)) == COMPLETED
                assert span_tree(spans, completed, describe) == COMPLETED
                assert span_tree(spans, compensated, describe) == COMPENSATED
                assert span_tree(spans, retried, describe) == RETRIED
                # The killed saga's spans came from both orchestrator processes.
                before, after = (
                    {s.instance for s in spans if s.trace_id == killed and s.name == name}
                    for name in ("step a", "saga duo")
                )
                assert len(before) == len(after) == 1
                assert before != after
                # The secret reached neither a span nor a log line.
                for span in spans:
                    assert CANARY not in repr(span), f"the secret reached span {span}"
                for service in (orchestrator, alpha, beta):
                    assert CANARY not in service.log_text()
        finally:
            await services.close()
            await transport.close()
            await store.close()


async def _check_metrics(receiver: OtlpReceiver, metrics_port: int) -> None:
    """The restarted orchestrator's metrics (three sagas started there, four ended), scraped
    from its Prometheus endpoint, and a participant's, received over OTLP."""
    samples = _scrape(metrics_port)
    started = _sample(samples, "saga_started_total", saga_name="duo")
    ended = {
        outcome: _sample(samples, "saga_ended_total", saga_name="duo", saga_outcome=outcome)
        for outcome in ("completed", "compensated", "failed")
    }
    assert (started, ended) == (3, {"completed": 3, "compensated": 1, "failed": 0})
    assert _sample(samples, "saga_step_retries_total", saga_step="b") == 1
    b_failed = _sample(
        samples,
        "saga_step_duration_seconds_count",
        saga_step="b",
        saga_outcome="failed",
    )
    assert b_failed == 2
    assert _sample(samples, "saga_dlq_depth", queue="saga.participant.beta.dlq") == 0
    assert any(name == "saga_dlq_depth" for name, _ in samples)

    # A participant's metrics over OTLP: beta ran do five times in all.
    def beta_count(outcome: str) -> float | None:
        return receiver.latest(
            "saga-participant-beta",
            "saga.participant.commands",
            **{"saga.command": "do", "saga.outcome": outcome},
        )

    await receiver.wait_for(
        "beta's command counts",
        lambda: (beta_count("succeeded"), beta_count("failed")) == (3.0, 1.0),
    )
    assert beta_count("retryable_failure") == 1.0
