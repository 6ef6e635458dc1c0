"""Structured logs (orchestrator.logs): the saga context on every line about a saga, plain and
JSON lines, secrets and URL passwords masked in the text as written, settings from the
environment. Records go through the real handler into a StringIO."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.logs import (
    LOG_FORMATS,
    LogSettings,
    configure_logging,
    mask_secrets_in_text,
    saga_log_context,
)
from orchestrator.settings import SettingsError

CARD = "tok_4111-1111-1111-1111"
PLAIN_PREFIX = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "

log = logging.getLogger("orchestrator.engine")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger; put it back as the other tests expect it."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    chatty = {name: logging.getLogger(name).level for name in ("aiormq", "aio_pika")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, chatty_level in chatty.items():
        logging.getLogger(name).setLevel(chatty_level)


def _plain() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(LogSettings(), stream)
    return stream


def _json() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(LogSettings(format="json"), stream)
    return stream


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def _objects(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(stream)]


# Plain lines


def test_plain_line_inside_a_saga_carries_saga_step_and_trace() -> None:
    stream = _plain()
    with saga_log_context("s-1", step="charge_card", trace_id="4bf92f35"):
        log.info("charged %d cents", 1250)
    [line] = _lines(stream)
    assert re.fullmatch(
        PLAIN_PREFIX
        + r"INFO orchestrator\.engine: charged 1250 cents saga=s-1 step=charge_card trace=4bf92f35",
        line,
    ), line


def test_plain_line_outside_a_saga_has_nothing_appended() -> None:
    stream = _plain()
    log.warning("broker connection lost")
    [line] = _lines(stream)
    assert re.fullmatch(
        PLAIN_PREFIX + r"WARNING orchestrator\.engine: broker connection lost", line
    ), line


def test_plain_line_shows_only_the_fields_that_are_set() -> None:
    stream = _plain()
    with saga_log_context("s-2"):
        log.info("started")
    with saga_log_context("s-3", trace_id="abc123"):
        log.info("started")
    first, second = _lines(stream)
    assert first.endswith("orchestrator.engine: started saga=s-2")
    assert second.endswith("orchestrator.engine: started saga=s-3 trace=abc123")


def test_plain_exception_is_the_standard_traceback_after_the_line() -> None:
    stream = _plain()
    with saga_log_context("s-4", step="reserve"):
        try:
            raise RuntimeError("stock service said no")
        except RuntimeError:
            log.exception("step failed")
    lines = _lines(stream)
    assert lines[0].endswith("ERROR orchestrator.engine: step failed saga=s-4 step=reserve")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: stock service said no"


def test_records_below_the_level_are_not_written() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(level="warning"), stream)
    log.info("chatter")
    log.warning("worth reading")
    [line] = _lines(stream)
    assert line.endswith("worth reading")


def test_broker_libraries_are_kept_at_warning() -> None:
    configure_logging(LogSettings(level="DEBUG"), io.StringIO())
    assert logging.getLogger("aiormq").level == logging.WARNING
    assert logging.getLogger("aio_pika").level == logging.WARNING
    assert logging.getLogger().level == logging.DEBUG


# JSON lines


def test_json_line_inside_a_saga_has_every_key() -> None:
    stream = _json()
    before = datetime.now(UTC)
    with saga_log_context("s-5", step="charge_card", trace_id="4bf92f35"):
        log.info("charged %s", "order-7")
    after = datetime.now(UTC)
    [line] = _objects(stream)
    assert set(line) == {"ts", "level", "logger", "message", "saga_id", "step", "trace_id"}
    assert line["level"] == "INFO"
    assert line["logger"] == "orchestrator.engine"
    assert line["message"] == "charged order-7"
    assert (line["saga_id"], line["step"], line["trace_id"]) == ("s-5", "charge_card", "4bf92f35")
    ts = line["ts"]
    assert isinstance(ts, str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
    written = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= written <= after


def test_json_line_outside_a_saga_leaves_the_saga_keys_out() -> None:
    stream = _json()
    log.error("cannot reach the database")
    [line] = _objects(stream)
    assert set(line) == {"ts", "level", "logger", "message"}
    assert line["level"] == "ERROR"


def test_json_exception_is_in_exc() -> None:
    stream = _json()
    try:
        raise ValueError("bad reply")
    except ValueError:
        log.exception("reply refused")
    [line] = _objects(stream)
    assert line["message"] == "reply refused"
    exc = line["exc"]
    assert isinstance(exc, str)
    assert exc.startswith("Traceback (most recent call last):")
    assert exc.endswith("ValueError: bad reply")


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_odd_messages_are_written_not_raised(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # pytest's own capture handler re-raises what it cannot format: leave only ours.
    logging.getLogger().handlers.clear()
    stream = io.StringIO()
    configure_logging(LogSettings(format=log_format), stream)
    log.info({"not": "a string"})
    log.info("two placeholders %s %s", "only one")
    log.info("a number %d", "not a number")
    lines = _lines(stream)
    assert len(lines) == 3
    assert "{'not': 'a string'}" in lines[0]
    assert "two placeholders %s %s" in lines[1]
    assert "only one" in lines[1]
    assert "a number %d" in lines[2]
    # logging reports a record it could not write on stderr ("--- Logging error ---").
    assert capsys.readouterr().err == ""


def test_json_line_takes_non_string_extra_values() -> None:
    stream = _json()
    log.info("started", extra={"saga_id": 42})
    [line] = _objects(stream)
    assert line["saga_id"] == 42


# Context


def test_explicit_extra_wins_over_the_context() -> None:
    stream = _json()
    with saga_log_context("s-6", step="reserve", trace_id="t-6"):
        log.info("late reply", extra={"saga_id": "s-other", "step": "refund"})
    [line] = _objects(stream)
    assert (line["saga_id"], line["step"], line["trace_id"]) == ("s-other", "refund", "t-6")


def test_extra_outside_a_saga_is_written() -> None:
    stream = _plain()
    log.info("reply ignored", extra={"saga_id": "s-7", "trace_id": "t-7"})
    [line] = _lines(stream)
    assert line.endswith("reply ignored saga=s-7 trace=t-7")


def test_nested_context_wins_and_the_outer_comes_back() -> None:
    stream = _json()
    with saga_log_context("s-outer", step="reserve", trace_id="t-outer"):
        log.info("one")
        with saga_log_context("s-inner", step="charge"):
            log.info("two")
        log.info("three")
    log.info("four")
    one, two, three, four = _objects(stream)
    assert (one["saga_id"], one["step"], one["trace_id"]) == ("s-outer", "reserve", "t-outer")
    assert (two["saga_id"], two["step"]) == ("s-inner", "charge")
    assert "trace_id" not in two
    assert (three["saga_id"], three["step"], three["trace_id"]) == ("s-outer", "reserve", "t-outer")
    assert "saga_id" not in four


def test_context_is_left_even_when_the_block_raises() -> None:
    stream = _json()
    with pytest.raises(KeyError), saga_log_context("s-8"):
        raise KeyError("x")
    log.info("after")
    [line] = _objects(stream)
    assert "saga_id" not in line


async def test_context_holds_across_awaits_and_is_copied_into_tasks() -> None:
    stream = _json()

    async def child(name: str) -> None:
        await asyncio.sleep(0)
        log.info(name)

    outside = asyncio.create_task(child("outside"))
    with saga_log_context("s-9", step="ship"):
        await asyncio.sleep(0)
        log.info("after an await")
        inside = asyncio.create_task(child("inside"))
    # The context is left before the task runs: it still has its copy.
    await asyncio.gather(outside, inside)
    lines = {line["message"]: line for line in _objects(stream)}
    assert (lines["after an await"]["saga_id"], lines["after an await"]["step"]) == ("s-9", "ship")
    assert (lines["inside"]["saga_id"], lines["inside"]["step"]) == ("s-9", "ship")
    assert "saga_id" not in lines["outside"]


async def test_concurrent_tasks_keep_their_own_saga() -> None:
    stream = _json()
    turn = asyncio.Event()

    async def saga(saga_id: str) -> None:
        with saga_log_context(saga_id):
            await turn.wait()
            log.info(saga_id)

    tasks = [asyncio.create_task(saga(f"s-{n}")) for n in range(3)]
    await asyncio.sleep(0)
    turn.set()
    await asyncio.gather(*tasks)
    assert all(line["saga_id"] == line["message"] for line in _objects(stream))


# Secrets


def test_secret_is_masked_in_the_message_and_in_the_arguments() -> None:
    stream = _plain()
    with saga_log_context("s-10", secrets=[CARD]):
        log.info(f"charging {CARD}")
        log.info("charging %s for %r", CARD, {"card": CARD})
    first, second = _lines(stream)
    assert CARD not in stream.getvalue()
    assert "charging *** saga=s-10" in first
    assert "charging *** for {'card': '***'} saga=s-10" in second


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_secret_is_masked_in_exception_text(log_format: str) -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(format=log_format), stream)
    with saga_log_context("s-11", secrets=[CARD]):
        try:
            try:
                raise LookupError(f"no customer for {CARD}")
            except LookupError as exc:
                raise RuntimeError(f"charge refused for card {CARD}") from exc
        except RuntimeError:
            log.exception("charge failed")
    text = stream.getvalue()
    assert CARD not in text
    assert "no customer for ***" in text
    assert "charge refused for card ***" in text


def test_secret_is_masked_in_stack_info() -> None:
    stream = _plain()
    # The stack names this function: take its name as the secret to find.
    with saga_log_context("s-12", secrets=["test_secret_is_masked_in_stack_info"]):
        log.info("where am I", stack_info=True)
    text = stream.getvalue()
    assert "Stack (most recent call last):" in text
    assert "in ***" in text
    assert "test_secret_is_masked_in_stack_info" not in text


def test_secret_of_the_outer_context_stays_masked_in_an_inner_one() -> None:
    stream = _plain()
    with saga_log_context("s-13", secrets=[CARD]), saga_log_context("s-13", step="charge"):
        log.info(f"card {CARD}")
    assert CARD not in stream.getvalue()
    assert "card *** saga=s-13 step=charge" in stream.getvalue()


def test_secret_is_not_masked_after_its_context() -> None:
    stream = _plain()
    with saga_log_context("s-14", secrets=[CARD]):
        pass
    log.info(f"card {CARD}")
    assert CARD in stream.getvalue()


def test_short_and_empty_secrets_are_ignored() -> None:
    stream = _plain()
    with saga_log_context("s-15", secrets=["", "EUR", "1"]):
        log.info("charged 1 EUR")
    assert "charged 1 EUR saga=s-15" in stream.getvalue()


def test_secret_containing_another_is_masked_whole() -> None:
    stream = _plain()
    with saga_log_context("s-16", secrets=["abcd", "abcdefgh"]):
        log.info("token abcdefgh")
    assert "token *** saga=s-16" in stream.getvalue()


def test_secret_is_masked_in_json_lines() -> None:
    stream = _json()
    with saga_log_context("s-17", secrets=['se"cret\\val']):
        log.info('value se"cret\\val')
    [line] = _objects(stream)
    assert line["message"] == "value ***"


# URL passwords


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("amqps://saga:s3cr3t@mq.example.com/vhost", "amqps://saga:***@mq.example.com/vhost"),
        (
            "postgresql+asyncpg://saga:pa55@db:5432/saga",
            "postgresql+asyncpg://saga:***@db:5432/saga",
        ),
        ("redis://:hunter22@cache:6379/0", "redis://:***@cache:6379/0"),
        ("http://admin:adm1n@jaeger:16686?x=1", "http://admin:***@jaeger:16686?x=1"),
        ("cannot reach amqp://u:p@ss@host/ now", "cannot reach amqp://u:***@host/ now"),
        (
            "from amqp://a:one@h1/ to postgresql://b:two@h2/db",
            "from amqp://a:***@h1/ to postgresql://b:***@h2/db",
        ),
        (
            """{"broker": "amqp://a:one@h1", "db": 'redis://b:two@h2'}""",
            """{"broker": "amqp://a:***@h1", "db": 'redis://b:***@h2'}""",
        ),
    ],
)
def test_url_passwords_are_masked(text: str, masked: str) -> None:
    assert mask_secrets_in_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "amqp://guest@localhost:5672/",
        "http://jaeger:16686/api/traces",
        "http://[::1]:8080/x@y",
        "sqlite+aiosqlite:///./saga.db",
        "postgresql://user:@db/saga",
        "no URL here: user:password@host",
        "",
    ],
)
def test_text_without_a_url_password_is_unchanged(text: str) -> None:
    assert mask_secrets_in_text(text) == text


@pytest.mark.parametrize("log_format", LOG_FORMATS)
def test_url_passwords_are_masked_in_every_record(log_format: str) -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(format=log_format), stream)
    url = "amqp://saga:Sup3rSecret@rabbit:5672/"
    log.warning("cannot connect to %s", url)
    try:
        raise ConnectionError(f"refused by {url}")
    except ConnectionError:
        log.exception("giving up")
    with saga_log_context("s-18"):
        log.info("broker %s", url)
    assert "Sup3rSecret" not in stream.getvalue()
    assert stream.getvalue().count("amqp://saga:***@rabbit:5672/") == 3


# Settings and set-up


def test_settings_default_and_from_env() -> None:
    assert LogSettings.from_env({}) == LogSettings("INFO", "plain")
    assert LogSettings.from_env({"SAGA_LOG_LEVEL": "", "SAGA_LOG_FORMAT": ""}) == LogSettings()
    settings = LogSettings.from_env({"SAGA_LOG_LEVEL": "debug", "SAGA_LOG_FORMAT": "JSON"})
    assert (settings.level, settings.format) == ("DEBUG", "json")
    assert LogSettings(level="warning").level == "WARNING"


@pytest.mark.parametrize(
    ("environ", "sentence"),
    [
        (
            {"SAGA_LOG_LEVEL": "loud"},
            "SAGA_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, not 'loud'",
        ),
        (
            {"SAGA_LOG_FORMAT": "xml"},
            "SAGA_LOG_FORMAT must be one of plain, json, not 'xml'",
        ),
    ],
)
def test_bad_environment_values_are_refused_with_a_sentence(
    environ: dict[str, str], sentence: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        LogSettings.from_env(environ)
    assert str(refused.value) == sentence


def test_bad_constructor_values_are_refused_with_a_sentence() -> None:
    with pytest.raises(SettingsError) as refused:
        LogSettings(level="verbose")
    assert str(refused.value) == "the log level 'verbose' is not one of DEBUG, INFO, WARNING, ERROR"


def test_configuring_twice_writes_each_record_once() -> None:
    first = io.StringIO()
    configure_logging(LogSettings(), first)
    second = io.StringIO()
    configure_logging(LogSettings(format="json"), second)
    configure_logging(LogSettings(format="json"), second)
    log.info("once")
    assert first.getvalue() == ""
    [line] = _objects(second)
    assert line["message"] == "once"


def test_configuring_leaves_handlers_it_did_not_install() -> None:
    root = logging.getLogger()
    other = logging.StreamHandler(io.StringIO())
    root.addHandler(other)
    try:
        configure_logging(LogSettings(), io.StringIO())
        configure_logging(LogSettings(), io.StringIO())
        assert other in root.handlers
    finally:
        root.removeHandler(other)
