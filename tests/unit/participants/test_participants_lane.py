"""The suspect lane: handlers run together, a redelivered command (a suspect) runs alone."""

from __future__ import annotations

import asyncio

from participants.runtime import _Lane


async def test_handlers_run_together_and_a_suspect_runs_alone() -> None:
    lane = _Lane()
    log: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def handler(name: str) -> None:
        async with lane.together():
            log.append(f"{name} in")
            first_in.set()
            await release.wait()
            log.append(f"{name} out")

    async def suspect() -> None:
        async with lane.alone():
            log.append("suspect in")
            await asyncio.sleep(0)
            log.append("suspect out")

    one = asyncio.create_task(handler("one"))
    two = asyncio.create_task(handler("two"))
    await first_in.wait()
    await asyncio.sleep(0)
    alone = asyncio.create_task(suspect())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(handler("late"))  # arrives while the suspect waits
    await asyncio.sleep(0.01)
    assert log == ["one in", "two in"]  # the suspect waits for both; the late one waits too
    release.set()
    await asyncio.gather(one, two, alone, late)
    assert log.index("suspect in") > max(log.index("one out"), log.index("two out"))
    assert log.index("suspect out") == log.index("suspect in") + 1  # nothing ran beside it
    assert log.index("late in") > log.index("suspect out")  # a waiting suspect goes first


async def test_suspects_run_one_at_a_time() -> None:
    lane = _Lane()
    inside = 0
    most = 0

    async def suspect() -> None:
        nonlocal inside, most
        async with lane.alone():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(suspect() for _ in range(5)))
    assert most == 1
