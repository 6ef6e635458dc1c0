"""``${...}`` references: parsing, rendering with types kept, interpolation, missing values."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definitions import (
    MissingReference,
    ReferenceContext,
    SagaDefinition,
    compile_template,
    load_definition,
    output_secret_fields,
    payload_secret_fields,
    render,
    render_compensation_payload,
    render_output,
    render_step_payload,
    template_secret_fields,
)
from orchestrator.definitions.cache import IdentityCache
from orchestrator.definitions.references import ReferenceSyntaxError, parse_reference
from orchestrator.definitions.rendering import compiled

SAGAS = Path(__file__).resolve().parents[3] / "sagas"

INPUT: dict[str, Any] = {
    "order": {"id": "o-1", "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]},
    "amount": 12.5,
    "paid": True,
    "note": None,
}
RESULTS: dict[str, Any] = {"reserve": {"reservation_id": "r-9", "items": [3, 4]}}


def context(**changes: Any) -> ReferenceContext:
    values: dict[str, Any] = {"saga_id": "saga-1", "input": INPUT, "results": RESULTS}
    values.update(changes)
    return ReferenceContext(**values)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${input.amount}", 12.5),
        ("${input.paid}", True),
        ("${input.note}", None),
        ("${input.order}", INPUT["order"]),
        ("${input.order.lines.1.sku}", "b"),
        ("${input.order.lines}", INPUT["order"]["lines"]),
        ("${steps.reserve.result}", RESULTS["reserve"]),
        ("${steps.reserve.result.items.0}", 3),
        ("${saga.id}", "saga-1"),
        ("${input}", INPUT),
    ],
)
def test_whole_value_reference_keeps_json_type(template: str, expected: Any) -> None:
    assert render(template, context()) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("order ${input.order.id}", "order o-1"),
        ("${input.amount} EUR", "12.5 EUR"),
        ("paid=${input.paid}", "paid=true"),
        ("note=${input.note}", "note=null"),
        ("line ${input.order.lines.0}", 'line {"sku":"a","qty":2}'),
        ("${saga.id}/${input.order.id}", "saga-1/o-1"),
        ("items ${steps.reserve.result.items}", "items [3,4]"),
        ("no references", "no references"),
        ("price in $USD", "price in $USD"),
        ("literal $${input.amount}", "literal ${input.amount}"),
    ],
)
def test_reference_inside_a_string_is_interpolated(template: str, expected: str) -> None:
    assert render(template, context()) == expected


def test_nested_payload_is_rendered_recursively() -> None:
    template = {
        "order": {"id": "${input.order.id}", "count": 3},
        "lines": ["${input.order.lines.0.sku}", {"qty": "${input.order.lines.1.qty}"}],
        "${input.amount}": "keys are not templates",
    }
    assert render(template, context()) == {
        "order": {"id": "o-1", "count": 3},
        "lines": ["a", {"qty": 1}],
        "${input.amount}": "keys are not templates",
    }


def test_rendered_value_does_not_alias_the_input() -> None:
    rendered = render({"order": "${input.order}"}, context())
    rendered["order"]["lines"].append("changed")
    assert len(INPUT["order"]["lines"]) == 2


@pytest.mark.parametrize(
    "template",
    [
        "${input.missing}",
        "${input.order.lines.7}",
        "${input.amount.x}",
        "${steps.charge.result}",
        "${steps.reserve.result.charge_id}",
        "id ${input.order.nope}",
    ],
)
def test_missing_value_raises_missing_reference(template: str) -> None:
    with pytest.raises(MissingReference) as caught:
        render({"x": template}, context())
    reference = template[template.index("${") :]
    assert caught.value.path == reference
    assert str(caught.value) == f"no value at {reference}"
    assert caught.value.code == "bad_reference"


def test_own_step_without_result_renders_as_null() -> None:
    ctx = context(results={"charge": None}, own_step="charge")
    assert render({"id": "${steps.charge.result.charge_id}"}, ctx) == {"id": None}
    ctx = context(results={}, own_step="charge")
    assert render("id=${steps.charge.result.charge_id}", ctx) == "id=null"


def test_own_step_with_result_still_needs_the_path() -> None:
    ctx = context(results={"charge": {"other": 1}}, own_step="charge")
    with pytest.raises(MissingReference, match=r"no value at \$\{steps.charge.result.charge_id\}"):
        render("${steps.charge.result.charge_id}", ctx)


def test_other_step_without_result_is_missing() -> None:
    ctx = context(results={"reserve": None}, own_step="charge")
    with pytest.raises(MissingReference):
        render("${steps.reserve.result.id}", ctx)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "empty reference"),
        ("env.HOME", "unknown reference ${env.HOME}"),
        ("input.", "an empty segment"),
        ("input.a b", "the segment 'a b'"),
        ("input.-1", "the segment '-1'"),
        ("input.01", "the segment '01'"),
        ("steps.a", "a step reference is"),
        ("steps.a.output", "a step reference is"),
        ("steps.1a.result", "the segment '1a'"),
        ("saga", "only ${saga.id} exists"),
        ("saga.id.x", "only ${saga.id} exists"),
        (" input.a", "unknown reference"),
    ],
)
def test_bad_reference_syntax(body: str, fragment: str) -> None:
    with pytest.raises(ReferenceSyntaxError) as caught:
        parse_reference(body)
    assert fragment in str(caught.value)


def test_parsed_reference_parts() -> None:
    ref = parse_reference("steps.charge-card.result.items.0.id")
    assert (ref.root, ref.step, ref.path) == ("steps", "charge-card", ("items", "0", "id"))
    assert ref.text == "${steps.charge-card.result.items.0.id}"


def test_template_problems_carry_their_path() -> None:
    template = compile_template({"a": ["ok", "${bad}"], "b": {"c": "${input"}})
    assert [(p.path, p.message.split(":")[0]) for p in template.problems] == [
        (("a", 1), "unknown reference ${bad}"),
        (("b", "c"), "unterminated reference '${input'"),
    ]


def test_a_broken_template_fails_at_render_time() -> None:
    with pytest.raises(MissingReference, match=r"no value at \$\{env.HOME\}"):
        render({"home": "${env.HOME}"}, context())


def checkout() -> SagaDefinition:
    return load_definition(SAGAS / "order_checkout.yaml")


def test_definition_helpers_render_payloads_and_output() -> None:
    definition = checkout()
    ctx = ReferenceContext(
        saga_id="s-1",
        input={"order_id": "o-7", "amount": 30, "card_token": "tok_secret"},
        results={"reserve_stock": {"reservation_id": "r-1"}, "charge_card": {"charge_id": "c-1"}},
    )
    assert render_step_payload(definition, 0, ctx) == {"order_id": "o-7", "note": "order o-7"}
    assert render_step_payload(definition, 1, ctx) == {"amount": 30, "card_token": "tok_secret"}
    assert render_compensation_payload(definition, 0, ctx) == {"reservation_id": "r-1"}
    assert render_output(definition, ctx) == {"charge_id": "c-1"}
    with pytest.raises(ValueError, match="step 'send_confirmation' has no compensation"):
        render_compensation_payload(definition, 2, ctx)


def test_compensation_of_a_timed_out_step_gets_null() -> None:
    definition = checkout()
    ctx = ReferenceContext(saga_id="s-1", input={}, results={"reserve_stock": {"x": 1}})
    assert render_compensation_payload(definition, 1, ctx) == {"charge_id": None}


def test_output_is_none_without_an_output_section() -> None:
    definition = SagaDefinition.model_validate(
        {"name": "n", "version": 1, "steps": [{"name": "a", "participant": "p", "command": "c"}]}
    )
    assert render_output(definition, ReferenceContext("s", {}, {})) is None


def test_compiled_templates_are_cached_per_definition() -> None:
    definition = checkout()
    assert compiled(definition) is compiled(definition)
    other = checkout()
    assert other == definition
    assert compiled(other) is not compiled(definition)


def test_identity_cache_forgets_dead_keys() -> None:
    class Key:
        pass

    builds: list[int] = []

    def build(key: Key) -> int:
        builds.append(id(key))
        return len(builds)

    cache: IdentityCache[Key, int] = IdentityCache(build)
    key = Key()
    assert (cache.get(key), cache.get(key), len(cache)) == (1, 1, 1)
    del key
    gc.collect()
    assert len(cache) == 0


def test_secret_fields_of_payloads() -> None:
    definition = checkout()
    assert payload_secret_fields(definition, 0) == frozenset()
    assert payload_secret_fields(definition, 1) == {"card_token"}
    assert payload_secret_fields(definition, 1, compensation=True) == frozenset()
    assert payload_secret_fields(definition, 2, compensation=True) == frozenset()
    assert output_secret_fields(definition) == frozenset()


def test_secret_fields_follow_nesting_and_interpolation() -> None:
    template = compile_template(
        {
            "card": {"token": "${input.card.token}", "brand": "${input.card.brand}"},
            "header": "Bearer ${input.card.token}",
            "everything": "${input}",
            "whole_card": "${input.card}",
            "list": ["${input.cards.3.token}", "${input.cards.3.brand}"],
            "saga": "${saga.id}",
        }
    )
    secrets = frozenset({"card.token", "cards.*.token"})
    assert template_secret_fields(template, secrets) == {
        "card.token",
        "header",
        "everything",
        "whole_card",
        "list.0",
    }
