"""Property tests: whatever the document, loading either succeeds or raises DefinitionInvalid."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.definitions import DefinitionInvalid, SagaDefinition, load_text

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "name",
    "version",
    "description",
    "input",
    "defaults",
    "steps",
    "output",
    "timeout",
    "retry",
    "max_attempts",
    "backoff",
    "initial",
    "multiplier",
    "max",
    "participant",
    "command",
    "payload",
    "compensation",
    "type",
    "properties",
    "required",
    "secret",
    "$ref",
    "minimum",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=200),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(
        [
            "5s",
            "250ms",
            "10",
            "ten seconds",
            "a",
            "order_checkout",
            "${input.x}",
            "${steps.a.result.id}",
            "${steps.b.result}",
            "${saga.id}",
            "${env.HOME}",
            "x ${input",
            "${}",
            "object",
            "string",
            "#/$defs/x",
        ]
    ),
    st.text(max_size=8),
)
PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8).filter(lambda text: "$" not in text),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), children, max_size=5),
    ),
    max_leaves=30,
)
STEP = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c", "a b"]), "participant": st.just("p")},
    optional={
        "command": st.sampled_from(["go", ""]),
        "payload": JSONISH,
        "timeout": SCALARS,
        "retry": JSONISH,
        "compensation": JSONISH,
    },
)
DEFINITION = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["shop", "bad name", ""]) | SCALARS,
        "version": st.integers(min_value=-1, max_value=3) | SCALARS,
        "steps": st.lists(STEP, max_size=4) | JSONISH,
        "defaults": JSONISH,
        "input": JSONISH,
        "output": JSONISH,
        "description": SCALARS,
        "extra": SCALARS,
    },
)
DURATION = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(min_value=1, max_value=90),
    st.sampled_from(["ms", "s", "m", "h"]),
)
RETRY = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": st.integers(min_value=1, max_value=10),
        "backoff": st.fixed_dictionaries(
            {},
            optional={
                "initial": DURATION,
                "multiplier": st.floats(min_value=1, max_value=5),
                "max": DURATION,
            },
        ),
    },
)


@st.composite
def valid_definitions(draw: st.DrawFn) -> dict[str, Any]:
    """Definitions that follow every rule, with references only to earlier steps."""
    count = draw(st.integers(min_value=1, max_value=5))
    steps: list[dict[str, Any]] = []
    for index in range(count):
        earlier = [f"${{steps.s{i}.result.id}}" for i in range(index)]
        values = st.sampled_from(["${input.x}", "${saga.id}", "text ${input.y.0}", *earlier])
        step: dict[str, Any] = {
            "name": f"s{index}",
            "participant": draw(st.sampled_from(["inventory", "payments.v2"])),
            "command": "go",
            "payload": draw(st.dictionaries(st.sampled_from(KEYS), values | PLAIN, max_size=3)),
        }
        if draw(st.booleans()):
            step["timeout"] = draw(DURATION)
        if draw(st.booleans()):
            step["retry"] = draw(RETRY)
        if draw(st.booleans()):
            own = f"${{steps.s{index}.result.id}}"
            step["compensation"] = {"command": "undo", "payload": {"id": own}}
        steps.append(step)
    document: dict[str, Any] = {"name": "shop", "version": draw(st.integers(1, 5)), "steps": steps}
    if draw(st.booleans()):
        document["defaults"] = {"timeout": draw(DURATION), "retry": draw(RETRY)}
    if draw(st.booleans()):
        document["output"] = {"last": f"${{steps.s{count - 1}.result}}"}
    return document


YAMLISH_TEXT = st.text(
    alphabet=st.sampled_from(list("abnsv:- \n\t[]{},&*!|>'\"#%@`$.?0123456789<")),
    max_size=120,
)


def load_or_refuse(text: str) -> SagaDefinition | None:
    try:
        return load_text(text, "fuzz.yaml")
    except DefinitionInvalid as exc:
        errors = exc.errors
    assert errors
    for error in errors:
        assert error.source == "fuzz.yaml"
        assert error.line is None or error.line >= 1
        assert error.message
    return None


@SETTINGS
@given(DEFINITION)
def test_random_definitions_load_or_are_refused(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    definition = load_or_refuse(text)
    if definition is not None:
        # What loads is a proper definition: the shape checks cannot be bypassed.
        assert definition.steps
        assert isinstance(document.get("version"), int)
        assert not isinstance(document.get("version"), bool)


@settings(max_examples=50, deadline=None)
@given(valid_definitions())
def test_valid_definitions_always_load(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document, sort_keys=False)
    definition = load_text(text, "fuzz.yaml")
    assert [step.name for step in definition.steps] == [s["name"] for s in document["steps"]]
    assert SagaDefinition.model_validate_json(definition.model_dump_json()) == definition


@SETTINGS
@given(YAMLISH_TEXT)
def test_random_text_loads_or_is_refused(text: str) -> None:
    load_or_refuse(text)
