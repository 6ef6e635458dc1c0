"""Saga definitions: the YAML format, its validated model, references and the registry.

Load with :func:`load_definition` / :func:`load_text` or a whole folder with
:meth:`DefinitionRegistry.load_dir`; every problem comes back in one
:class:`DefinitionInvalid` as ``file:line: message``. At run time, payloads and the
output are rendered with :func:`render_step_payload`, :func:`render_compensation_payload`
and :func:`render_output`; a start's input is checked with :func:`validate_input`.
"""

from __future__ import annotations

from orchestrator.definitions.durations import (
    Duration,
    DurationError,
    format_duration,
    parse_duration,
)
from orchestrator.definitions.errors import (
    DefinitionError,
    DefinitionInvalid,
    DefinitionProblem,
    MissingReference,
    UnknownDefinition,
)
from orchestrator.definitions.loader import (
    LoadedDefinition,
    load_definition,
    load_file,
    load_source,
    load_text,
)
from orchestrator.definitions.model import (
    MAX_STEPS,
    Backoff,
    CompensationDefinition,
    RetryPolicy,
    SagaDefinition,
    StepDefinition,
)
from orchestrator.definitions.references import (
    Reference,
    ReferenceContext,
    Template,
    compile_template,
    render,
)
from orchestrator.definitions.registry import DefinitionRegistry, definition_files
from orchestrator.definitions.rendering import (
    output_secret_fields,
    payload_secret_fields,
    render_compensation_payload,
    render_output,
    render_step_payload,
    template_secret_fields,
)
from orchestrator.definitions.schema import REDACTED, redact, secret_paths, validate_input

__all__ = [
    "MAX_STEPS",
    "REDACTED",
    "Backoff",
    "CompensationDefinition",
    "DefinitionError",
    "DefinitionInvalid",
    "DefinitionProblem",
    "DefinitionRegistry",
    "Duration",
    "DurationError",
    "LoadedDefinition",
    "MissingReference",
    "Reference",
    "ReferenceContext",
    "RetryPolicy",
    "SagaDefinition",
    "StepDefinition",
    "Template",
    "UnknownDefinition",
    "compile_template",
    "definition_files",
    "format_duration",
    "load_definition",
    "load_file",
    "load_source",
    "load_text",
    "output_secret_fields",
    "parse_duration",
    "payload_secret_fields",
    "redact",
    "render",
    "render_compensation_payload",
    "render_output",
    "render_step_payload",
    "secret_paths",
    "template_secret_fields",
    "validate_input",
]
