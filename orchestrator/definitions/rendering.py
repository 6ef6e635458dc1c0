"""Rendering a definition's payloads and output at run time, and finding their secret fields.

The state machine renders a payload on every send, so each definition's templates are
compiled once and kept beside it (keyed on the definition object, which is frozen).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from orchestrator.definitions.cache import IdentityCache
from orchestrator.definitions.conditions import Condition, parse_condition
from orchestrator.definitions.model import SagaDefinition
from orchestrator.definitions.references import (
    ReferenceContext,
    Template,
    compile_template,
)
from orchestrator.definitions.schema import secret_paths

__all__ = [
    "CompiledDefinition",
    "compiled",
    "output_secret_fields",
    "payload_secret_fields",
    "render_compensation_payload",
    "render_output",
    "render_step_payload",
    "step_runs",
    "template_secret_fields",
]

JSON = Any


@dataclass(frozen=True)
class CompiledDefinition:
    """A definition's templates, parsed: one per step payload and compensation, and output."""

    payloads: tuple[Template, ...]
    compensations: tuple[Template | None, ...]
    output: Template | None
    conditions: tuple[Condition | None, ...] = ()


def _compile(definition: SagaDefinition) -> CompiledDefinition:
    return CompiledDefinition(
        payloads=tuple(compile_template(step.payload) for step in definition.steps),
        compensations=tuple(
            None if step.compensation is None else compile_template(step.compensation.payload)
            for step in definition.steps
        ),
        output=None if definition.output is None else compile_template(definition.output),
        conditions=tuple(
            None if step.when is None else parse_condition(step.when) for step in definition.steps
        ),
    )


_COMPILED: IdentityCache[SagaDefinition, CompiledDefinition] = IdentityCache(_compile)


def compiled(definition: SagaDefinition) -> CompiledDefinition:
    """The compiled templates of ``definition`` (built once per definition object)."""
    return _COMPILED.get(definition)


def step_runs(definition: SagaDefinition, step_index: int, context: ReferenceContext) -> bool:
    """Whether the step's ``when:`` holds (True without one); ConditionError if it cannot
    be evaluated."""
    condition = compiled(definition).conditions[step_index]
    return condition is None or condition.holds(context)


def render_step_payload(
    definition: SagaDefinition, step_index: int, context: ReferenceContext
) -> dict[str, JSON]:
    """The command payload of step ``step_index``; MissingReference if a reference finds nothing."""
    payload: dict[str, JSON] = compiled(definition).payloads[step_index].render(context)
    return payload


def render_compensation_payload(
    definition: SagaDefinition, step_index: int, context: ReferenceContext
) -> dict[str, JSON]:
    """The compensation payload of step ``step_index``.

    The context's ``own_step`` is set to that step, so a reference to its missing result
    (it timed out or was aborted) renders as null. ValueError if it has no compensation.
    """
    template = compiled(definition).compensations[step_index]
    if template is None:
        name = definition.steps[step_index].name
        raise ValueError(f"step {name!r} has no compensation")
    own = replace(context, own_step=definition.steps[step_index].name)
    payload: dict[str, JSON] = template.render(own)
    return payload


def render_output(definition: SagaDefinition, context: ReferenceContext) -> dict[str, JSON] | None:
    """The saga's output once every step succeeded; None when the definition has none."""
    template = compiled(definition).output
    if template is None:
        return None
    output: dict[str, JSON] = template.render(context)
    return output


def template_secret_fields(template: Template, secrets: frozenset[str]) -> frozenset[str]:
    """Dotted paths of the rendered template whose value carries a secret input value.

    A field referring to a secret, to something inside one, or to an object holding one
    (``${input}``) counts; so does a string that interpolates one.
    """
    patterns = [secret.split(".") for secret in secrets]
    fields = set()
    for path, ref in template.references():
        if ref.root != "input":
            continue
        for pattern in patterns:
            pairs = zip(pattern, ref.path, strict=False)
            if all(wanted in ("*", segment) for wanted, segment in pairs):
                fields.add(".".join(str(segment) for segment in path))
                break
    return frozenset(fields)


def payload_secret_fields(
    definition: SagaDefinition, step_index: int, *, compensation: bool = False
) -> frozenset[str]:
    """Fields of a step's (or its compensation's) payload that take a secret input value."""
    forms = compiled(definition)
    template = forms.compensations[step_index] if compensation else forms.payloads[step_index]
    if template is None:
        return frozenset()
    return template_secret_fields(template, secret_paths(definition))


def output_secret_fields(definition: SagaDefinition) -> frozenset[str]:
    """Fields of the saga's output that take a secret input value."""
    template = compiled(definition).output
    if template is None:
        return frozenset()
    return template_secret_fields(template, secret_paths(definition))
