"""Which event loop the services run on (``SAGA_EVENT_LOOP``)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import pytest

from orchestrator import eventloop
from orchestrator.settings import SettingsError


def _installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def test_uvloop_is_the_default_when_installed() -> None:
    factory = eventloop.loop_factory({})
    if _installed():
        assert factory is not None
        loop = factory()
        try:
            assert type(loop).__module__.startswith("uvloop")
        finally:
            loop.close()
    else:
        assert factory is None


def test_asyncio_can_be_chosen() -> None:
    assert eventloop.loop_factory({"SAGA_EVENT_LOOP": "asyncio"}) is None
    assert eventloop.loop_factory({"SAGA_EVENT_LOOP": " AsyncIO "}) is None


def test_a_bad_name_is_refused_with_the_choices() -> None:
    with pytest.raises(
        SettingsError, match=r"SAGA_EVENT_LOOP is 'tokio'; it must be one of uvloop, asyncio"
    ):
        eventloop.loop_factory({"SAGA_EVENT_LOOP": "tokio"})


def test_uvloop_by_name_without_it_installed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # the import now fails
    with pytest.raises(SettingsError, match="uvloop is not installed"):
        eventloop.loop_factory({"SAGA_EVENT_LOOP": "uvloop"})
    assert eventloop.loop_factory({}) is None


def test_run_returns_the_result_on_the_chosen_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(which(), {"SAGA_EVENT_LOOP": "asyncio"}).startswith("asyncio")
    if _installed():
        assert eventloop.run(which(), {}).startswith("uvloop")


def test_run_refuses_a_bad_name_without_leaving_the_coroutine_unawaited() -> None:
    async def never() -> None:
        raise AssertionError("must not run")

    with pytest.raises(SettingsError):
        eventloop.run(never(), {"SAGA_EVENT_LOOP": "nope"})
