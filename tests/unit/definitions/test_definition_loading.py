"""Loading good definitions: normalisation, defaults, durations, files and the shipped sagas."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.definitions import (
    Backoff,
    DefinitionInvalid,
    DurationError,
    RetryPolicy,
    SagaDefinition,
    format_duration,
    load_definition,
    load_file,
    load_text,
    parse_duration,
)

from .helpers import MINIMAL, SOURCE, problems_of

SAGAS = Path(__file__).resolve().parents[3] / "sagas"


def load(text: str) -> SagaDefinition:
    return load_text(textwrap.dedent(text), SOURCE)


def test_minimal_definition_gets_model_defaults() -> None:
    definition = load(MINIMAL)
    (step,) = definition.steps
    assert (definition.name, definition.version, definition.key) == ("shop", 1, ("shop", 1))
    assert step.timeout == timedelta(seconds=30)
    assert step.retry == RetryPolicy()
    assert step.payload == {}
    assert step.compensation is None
    assert definition.input_schema is None
    assert definition.output is None


def test_defaults_merge_field_by_field() -> None:
    definition = load(
        """\
        name: shop
        version: 2
        description: merging
        defaults:
          timeout: 10s
          retry:
            max_attempts: 3
            backoff: {initial: 500ms, multiplier: 2, max: 30s}
        steps:
          - name: plain
            participant: p
            command: c
          - name: more_attempts
            participant: p
            command: c
            timeout: 5s
            retry: {max_attempts: 5}
          - name: slower_start
            participant: p
            command: c
            retry:
              backoff: {initial: 2s}
        """
    )
    plain, more, slower = definition.steps
    assert plain.timeout == timedelta(seconds=10)
    assert plain.retry == RetryPolicy(
        max_attempts=3,
        backoff=Backoff(
            initial=timedelta(milliseconds=500), multiplier=2, max=timedelta(seconds=30)
        ),
    )
    assert more.timeout == timedelta(seconds=5)
    assert more.retry.max_attempts == 5
    assert more.retry.backoff == plain.retry.backoff  # the defaults' backoff is kept
    assert slower.retry.max_attempts == 3
    assert slower.retry.backoff.initial == timedelta(seconds=2)
    assert slower.retry.backoff.multiplier == 2
    assert slower.retry.backoff.max == timedelta(seconds=30)
    assert definition.description == "merging"


def test_partial_defaults_fall_back_to_model_defaults() -> None:
    definition = load(
        """\
        name: shop
        version: 1
        defaults:
          retry: {backoff: {max: 1m}}
        steps: [{name: a, participant: p, command: c, retry: {max_attempts: 7}}]
        """
    )
    retry = definition.steps[0].retry
    assert retry.max_attempts == 7
    assert retry.backoff == Backoff(max=timedelta(minutes=1))


def test_input_becomes_input_schema_and_output_is_kept() -> None:
    definition = load(
        """\
        name: shop
        version: 1
        input:
          type: object
          properties:
            order_id: {type: string}
        steps:
          - name: a
            participant: p
            command: c
            payload: {id: "${input.order_id}", count: 2, tags: [x, "${saga.id}"]}
        output:
          id: ${steps.a.result.id}
        """
    )
    assert definition.input_schema == {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
    }
    assert definition.steps[0].payload == {
        "id": "${input.order_id}",
        "count": 2,
        "tags": ["x", "${saga.id}"],
    }
    assert definition.output == {"id": "${steps.a.result.id}"}


def test_yaml_conveniences_stay_json() -> None:
    definition = load(
        """\
        name: shop
        version: 1
        defaults: &defaults
          timeout: 3s
        steps:
          - name: a
            participant: p
            command: c
            payload:
              day: 2024-05-01
              yes: on
              200: ok
              shared: &shared {a: 1}
              again: *shared
              merged:
                <<: *shared
                b: 2
        """
    )
    payload = definition.steps[0].payload
    # Dates stay text, keys stay the text that was written, values follow YAML 1.1 scalars.
    assert payload["day"] == "2024-05-01"
    assert payload["yes"] is True
    assert payload["200"] == "ok"
    assert payload["again"] == {"a": 1}
    assert payload["merged"] == {"a": 1, "b": 2}
    assert definition.steps[0].timeout == timedelta(seconds=3)


def test_merge_keys_do_not_override_explicit_ones() -> None:
    definition = load(
        """\
        name: shop
        version: 1
        steps:
          - &base {name: a, participant: p, command: c}
          - <<: *base
            name: b
        """
    )
    assert [(s.name, s.command) for s in definition.steps] == [("a", "c"), ("b", "c")]


def test_compensation_may_be_null() -> None:
    definition = load(MINIMAL + "    compensation: null\n")
    assert definition.steps[0].compensation is None


def test_model_round_trips_through_json() -> None:
    definition = load_definition(SAGAS / "order_checkout.yaml")
    again = SagaDefinition.model_validate_json(definition.model_dump_json())
    assert again == definition
    assert definition.model_dump(mode="json")["steps"][1]["timeout"] == "5s"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("5s", timedelta(seconds=5)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("1.5s", timedelta(milliseconds=1500)),
    ],
)
def test_durations_with_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["10", "ten seconds", "5 sec", "", "-1s", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(DurationError, match="expected a number with a unit"):
        parse_duration(text)


def test_plain_seconds_only_where_allowed() -> None:
    assert parse_duration("30", plain_seconds=True) == timedelta(seconds=30)
    with pytest.raises(DurationError):
        parse_duration("30")


def test_backoff_delay_grows_and_is_capped() -> None:
    backoff = Backoff(initial=timedelta(seconds=1), multiplier=3, max=timedelta(seconds=10))
    assert [backoff.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 3, 9, 10]


@pytest.mark.parametrize("path", sorted(SAGAS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sagas_load(path: Path) -> None:
    loaded = load_file(path)
    assert loaded.definition.version >= 1
    assert loaded.line == 1
    assert loaded.source == str(path)


def test_shipped_sagas_are_the_documented_ones() -> None:
    names = sorted(p.name for p in SAGAS.glob("*.yaml"))
    assert names == ["express_order.yaml", "order_checkout.yaml", "profile_image_upload.yaml"]
    checkout = load_definition(SAGAS / "order_checkout.yaml")
    assert [(s.name, s.participant, s.command) for s in checkout.steps] == [
        ("reserve_stock", "inventory", "reserve"),
        ("charge_card", "payments", "charge"),
        ("send_confirmation", "notifications", "send_email"),
    ]
    assert checkout.steps[1].retry.max_attempts == 5
    assert checkout.steps[1].payload["card_token"] == "${input.card_token}"
    assert checkout.input_schema is not None
    assert checkout.input_schema["properties"]["amount"]["minimum"] == 0
    assert checkout.input_schema["properties"]["card_token"]["secret"] is True
    upload = load_definition(SAGAS / "profile_image_upload.yaml")
    assert [(s.name, s.participant, s.command) for s in upload.steps] == [
        ("store_blob", "blobs", "put"),
        ("set_profile_image", "profiles", "set_image"),
        ("notify_user", "notifications", "send_email"),
    ]
    compensations = [s.compensation and s.compensation.command for s in upload.steps]
    assert compensations == ["delete", "restore_image", None]
    assert upload.output == {"blob_id": "${steps.store_blob.result.blob_id}"}


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(tmp_path / "nope.yaml")
    assert [str(e) for e in caught.value.errors] == [f"{tmp_path / 'nope.yaml'}: no such file"]


def test_folder_is_not_a_definition(tmp_path: Path) -> None:
    with pytest.raises(DefinitionInvalid, match="is a folder, not a definition file"):
        load_definition(tmp_path)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: shop\nversion: 1\ndescription: caf\xe9\n")
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(path)
    assert [str(e) for e in caught.value.errors] == [
        f"{path}:3: the file is not UTF-8 text (byte 0xe9)"
    ]


def test_oversized_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(MINIMAL.encode() + b"description: " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(DefinitionInvalid, match="larger than 1048576 bytes"):
        load_definition(path)


def test_control_character_is_reported_with_its_line() -> None:
    (problem,) = problems_of(MINIMAL + "description: a\x00b\n")
    assert (problem.line, problem.message) == (
        7,
        "invalid character #x0000: special characters are not allowed",
    )


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_definition(path).name == "shop"
