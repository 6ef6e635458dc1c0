"""Participants for the runtime tests: alpha, beta and gamma, each with ``do`` and ``undo``.

Every handler records its committed effect in ``effects`` (one row per run that
committed; the autoincrement id orders them across participants when they share a
database) and follows the ``behaviour`` object in its payload:

- ``{"fail": "permanent"}``: PermanentError;
- ``{"fail_times": n}``: a RetryableError on attempts 1..n;
- ``{"delay_first": s}``: attempt 1 sleeps ``s`` seconds before its write (a slow first attempt);
- ``{"fail_until_file": PATH}``: PermanentError while PATH does not exist (a bug not yet fixed);
- ``{"exit_until_file": PATH}``: kills the process mid-handler while PATH does not exist (a
  poison message: every delivery of it crashes the service);
- ``{"exit_once": PATH}``: the first run (when PATH does not exist) creates PATH and kills
  the process mid-handler, before anything commits.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from participants import Participant, PermanentError, RetryableError, StepContext

metadata = sa.MetaData()
effects = sa.Table(
    "effects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("participant", sa.String(50), nullable=False),
    sa.Column("saga_id", sa.String(200), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
)

INVOCATIONS: dict[str, int] = {}
"""Handler runs per participant in this process (rolled-back runs included)."""


def _participant(name: str) -> Participant:
    app = Participant(name, metadata=metadata)

    async def handle(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        INVOCATIONS[name] = INVOCATIONS.get(name, 0) + 1
        behaviour = payload.get("behaviour") or {}
        marker = behaviour.get("exit_once")
        # Blocking file calls on purpose: the process is about to die mid-handler.
        if marker and not Path(marker).exists():  # noqa: ASYNC240
            Path(marker).write_text("crashed")  # noqa: ASYNC240
            os._exit(137)
        poison = behaviour.get("exit_until_file")
        if poison and not Path(poison).exists():  # noqa: ASYNC240 - a test fixture's flag
            os._exit(137)  # a poison message: the process dies on it every time
        fixed = behaviour.get("fail_until_file")
        if fixed and not Path(fixed).exists():  # noqa: ASYNC240 - a test fixture's flag
            raise PermanentError("not_fixed", f"{name} fails until {fixed} exists")
        if behaviour.get("fail") == "permanent":
            raise PermanentError("boom", f"{name} refuses for good")
        if ctx.attempt <= int(behaviour.get("fail_times", 0)):
            raise RetryableError("flaky", f"{name} fails attempt {ctx.attempt}")
        if ctx.attempt == 1 and behaviour.get("delay_first"):
            await asyncio.sleep(float(behaviour["delay_first"]))
        await ctx.session.execute(
            effects.insert().values(
                participant=name, saga_id=ctx.saga_id, step=ctx.step, kind=ctx.kind
            )
        )
        return {"by": name, "step": ctx.step, "kind": ctx.kind}

    app.command("do")(handle)
    app.command("undo")(handle)
    return app


alpha = _participant("alpha")
beta = _participant("beta")
gamma = _participant("gamma")

TRIO_YAML = """\
name: trio
version: 1
defaults:
  timeout: {timeout}
  retry:
    max_attempts: {max_attempts}
    backoff: {{initial: 50ms, multiplier: 2, max: 500ms}}
steps:
  - name: a
    participant: alpha
    command: do
    payload:
      behaviour: ${{input.a}}
    compensation:
      command: undo
      payload:
        behaviour: ${{input.undo_a}}
        result: ${{steps.a.result}}
  - name: b
    participant: beta
    command: do
    payload:
      behaviour: ${{input.b}}
      after: ${{steps.a.result.by}}
    compensation:
      command: undo
      payload:
        behaviour: ${{input.undo_b}}
  - name: c
    participant: gamma
    command: do
    payload:
      behaviour: ${{input.c}}
output:
  last: ${{steps.c.result.by}}
"""


def trio_yaml(*, timeout: str = "3s", max_attempts: int = 3) -> str:
    """The test saga: a and b compensable, c not."""
    return TRIO_YAML.format(timeout=timeout, max_attempts=max_attempts)


def trio_input(**behaviours: dict[str, Any]) -> dict[str, Any]:
    """A trio input with every behaviour slot filled (empty unless given)."""
    slots = ("a", "b", "c", "undo_a", "undo_b")
    unknown = set(behaviours) - set(slots)
    if unknown:
        raise ValueError(f"unknown behaviour slots {unknown}")
    return {slot: behaviours.get(slot, {}) for slot in slots}
