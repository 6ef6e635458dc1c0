"""Loading a saga definition from YAML into the validated model, reporting every error.

Reading is safe and bounded (:mod:`.yaml_source`); then the document is checked for
unknown keys and shapes, ``defaults`` are merged into each step field by field, the input
schema and the ``${...}`` references are checked, and the model validates the rest. Every
problem is collected with the line of the offending key or value, not just the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from orchestrator.definitions.conditions import ConditionSyntaxError, parse_condition
from orchestrator.definitions.durations import DurationError, parse_duration
from orchestrator.definitions.errors import DefinitionInvalid, DefinitionProblem
from orchestrator.definitions.messages import (
    describe_pydantic_error,
    display_path,
    show_value,
    unknown_key,
)
from orchestrator.definitions.model import (
    MAX_STEPS,
    OnFailure,
    RetryPolicy,
    SagaDefinition,
    StepKind,
)
from orchestrator.definitions.references import compile_template, scope_problem, scope_problems
from orchestrator.definitions.schema import schema_problems
from orchestrator.definitions.yaml_source import MAX_BYTES, PathKey, parse_yaml

__all__ = ["LoadedDefinition", "load_definition", "load_file", "load_source", "load_text"]

TOP_KEYS = ("name", "version", "description", "input", "defaults", "deadline", "steps", "output")
DEFAULTS_KEYS = ("timeout", "retry")
STEP_KEYS = (
    "name",
    "participant",
    "command",
    "payload",
    "timeout",
    "retry",
    "compensation",
    "kind",
    "when",
    "on_failure",
)
RETRY_KEYS = ("max_attempts", "backoff", "on", "never")
BACKOFF_KEYS = ("initial", "multiplier", "max")
COMPENSATION_KEYS = ("command", "payload")
_MODEL_TO_YAML = {"input_schema": "input"}


@dataclass(frozen=True)
class LoadedDefinition:
    """A definition with the file it came from and the line of its ``name``."""

    definition: SagaDefinition
    source: str
    line: int


def load_definition(path: str | os.PathLike[str]) -> SagaDefinition:
    """Load and validate one definition file; DefinitionInvalid lists every problem."""
    return load_file(path).definition


def load_text(text: str, source_name: str) -> SagaDefinition:
    """Load and validate a definition from text; ``source_name`` names it in errors."""
    return load_source(text, source_name).definition


def load_file(path: str | os.PathLike[str]) -> LoadedDefinition:
    """Like :func:`load_definition`, keeping the source name and the line of ``name``."""
    source = os.fspath(path)
    return load_source(read_source(source), source)


def read_source(source: str) -> str:
    """The text of a definition file (at most MAX_BYTES); DefinitionInvalid if unreadable."""
    try:
        with open(source, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise DefinitionInvalid([DefinitionProblem(source, None, "no such file")]) from None
    except IsADirectoryError:
        problem = DefinitionProblem(source, None, "is a folder, not a definition file")
        raise DefinitionInvalid([problem]) from None
    except OSError as exc:
        problem = DefinitionProblem(source, None, f"cannot read the file: {exc.strerror}")
        raise DefinitionInvalid([problem]) from None
    if len(data) > MAX_BYTES:
        message = f"the file is larger than {MAX_BYTES} bytes, the most a definition may be"
        raise DefinitionInvalid([DefinitionProblem(source, 1, message)])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})"
        raise DefinitionInvalid([DefinitionProblem(source, line, message)]) from None


def load_source(text: str, source: str) -> LoadedDefinition:
    """Load and validate a definition from text, keeping where it came from."""
    parsed = parse_yaml(text)
    if not parsed.complete:
        problems = [DefinitionProblem(source, line, msg) for line, msg in parsed.problems]
        raise DefinitionInvalid(problems)
    checker = _Checker(source, parsed.positions, parsed.dropped)
    for line, message in parsed.problems:
        checker.problems.append(DefinitionProblem(source, line, message))
    definition = checker.check(parsed.data)
    if checker.problems or definition is None:
        raise DefinitionInvalid(_ordered(checker.problems))
    return LoadedDefinition(definition, source, parsed.positions.get(("name",), 1))


def _ordered(problems: list[DefinitionProblem]) -> list[DefinitionProblem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda problem: problem.line or 0)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a text string"
    if value is None:
        return "nothing"
    return "a boolean" if isinstance(value, bool) else "a number"


class _Checker:
    """Checks one parsed document, collecting problems with their lines."""

    def __init__(
        self, source: str, positions: dict[PathKey, int], dropped: frozenset[PathKey]
    ) -> None:
        self.source = source
        self.positions = positions
        # Values the YAML reader refused were reported there; nothing more is said of them.
        self.dropped = dropped
        self.problems: list[DefinitionProblem] = []
        self.claimed: set[PathKey] = set()
        self.step_names: dict[int, str] = {}
        """Step names by position in the flat list of steps (parallel members included)."""
        self.step_paths: list[PathKey] = []
        """Where each step of the flat list sits in the document: ``("steps", i)``, or
        ``("steps", i, "parallel", j)`` for a member of a parallel group."""
        self.flat_steps: list[Any] = []
        """The steps as written, parallel members in place of their group."""
        self.groups: list[int | None] = []
        """The parallel group (numbered from 1) of each step of the flat list, or None."""

    def document_path(self, path: PathKey) -> PathKey:
        """Where a model path (``("steps", k, ...)``, k in the flat list) is in the document."""
        flat = len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int)
        if flat and path[1] < len(self.step_paths):  # type: ignore[operator]
            return (*self.step_paths[path[1]], *path[2:])  # type: ignore[index]
        return path

    def line(self, path: PathKey) -> int:
        """The line of ``path``, or of the nearest enclosing value the document has."""
        return self.document_line(self.document_path(path))

    def document_line(self, path: PathKey) -> int:
        """Like :meth:`line` for a path into the document as written."""
        for end in range(len(path), -1, -1):
            line = self.positions.get(path[:end])
            if line is not None:
                return line
        return 1

    def report(self, path: PathKey, message: str, *, claim: bool = True) -> None:
        """Record a problem at ``path``; a claimed path gets no second, derived error."""
        document = self.document_path(path)
        if any(document[: len(dropped)] == dropped for dropped in self.dropped):
            return
        where = display_path(path, self.step_names)
        text = f"{where}: {message}" if where else message
        self.problems.append(DefinitionProblem(self.source, self.line(path), text))
        if claim:
            self.claimed.add(path)

    def mapping(self, value: Any, path: PathKey, allowed: tuple[str, ...]) -> dict[str, Any]:
        """``value`` if it is a mapping (unknown keys reported and dropped), else {}."""
        if not isinstance(value, dict):
            self.report(path, f"expected a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                where = display_path(path, self.step_names)
                message = unknown_key(key, allowed, where)
                self.problems.append(
                    DefinitionProblem(self.source, self.line((*path, key)), message)
                )
        return {key: item for key, item in value.items() if key in allowed}

    def check(self, data: Any) -> SagaDefinition | None:
        """The validated definition, or None when any problem was found."""
        if () in self.dropped:
            return None  # the whole document was refused (a tag); that is all there is to say
        if data is None:
            message = "the file is empty; a saga definition needs name, version and steps"
            self.problems.append(DefinitionProblem(self.source, 1, message))
            return None
        if not isinstance(data, dict):
            self.report(
                (),
                f"a saga definition is a mapping with name, version and steps, not {_kind(data)}",
            )
            return None
        top = self.mapping(data, (), TOP_KEYS)
        timeout, retry = self.defaults(top)
        model: dict[str, Any] = {k: v for k, v in top.items() if k not in ("defaults", "input")}
        if "input" in top:
            model["input_schema"] = top["input"]
            if isinstance(top["input"], dict):
                for path, message in schema_problems(top["input"]):
                    self.report(("input", *path), message)
        if "deadline" in top and not self.timeout(top["deadline"], ("deadline",), "a deadline"):
            del model["deadline"]
        if "steps" in top:
            model["steps"] = tuple(self.steps(top["steps"], timeout, retry))
        self.references(top)
        try:
            definition = SagaDefinition.model_validate(model, strict=True)
        except ValidationError as exc:
            self.pydantic_errors(exc, ())
            return None
        return None if self.problems else definition

    def defaults(self, top: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The valid parts of ``defaults``: a timeout (or None) and retry fields."""
        if top.get("defaults") is None:
            return None, {}
        defaults = self.mapping(top["defaults"], ("defaults",), DEFAULTS_KEYS)
        timeout = defaults.get("timeout")
        if "timeout" in defaults and not self.timeout(timeout, ("defaults", "timeout")):
            timeout = None
        retry = self.retry(defaults.get("retry"), ("defaults", "retry"))
        try:
            RetryPolicy.model_validate(retry, strict=True)
        except ValidationError as exc:
            bad = self.pydantic_errors(exc, ("defaults", "retry"))
            # Keep the fields that are fine, so steps are not blamed for the defaults.
            retry = {k: v for k, v in retry.items() if ("defaults", "retry", k) not in bad}
            if isinstance(retry.get("backoff"), dict):
                backoff = ("defaults", "retry", "backoff")
                retry["backoff"] = {
                    k: v for k, v in retry["backoff"].items() if (*backoff, k) not in bad
                }
        return timeout, retry

    def timeout(self, value: Any, path: PathKey, what: str = "a timeout") -> bool:
        """Whether ``value`` is a usable timeout (or deadline); reports why not."""
        try:
            duration = value if isinstance(value, timedelta) else parse_duration(value)
        except (DurationError, TypeError):
            shown = repr(value) if isinstance(value, str) else show_value(value)
            self.report(
                path,
                f"bad duration {shown}: expected a number with a unit, like 250ms, 5s, 2m or 1h",
            )
            return False
        if duration <= timedelta(0):
            self.report(path, f"{what} must be longer than 0s")
            return False
        return True

    def retry(self, value: Any, path: PathKey) -> dict[str, Any]:
        """A retry mapping with only known keys (its backoff too); {} when absent or wrong."""
        if value is None:
            return {}
        retry = self.mapping(value, path, RETRY_KEYS)
        if "backoff" in retry:
            retry["backoff"] = self.mapping(retry["backoff"], (*path, "backoff"), BACKOFF_KEYS)
        for key in ("on", "never"):
            if key in retry:
                retry[key] = self.codes(retry[key], (*path, key))
        both = set(retry.get("on") or ()) & set(retry.get("never") or ())
        for code in sorted(both):
            self.report((*path, "never"), f"failure code {code!r} is in both on and never")
        return retry

    def codes(self, value: Any, path: PathKey) -> tuple[str, ...]:
        """A list of failure codes as a tuple; reports anything else (and drops it)."""
        if not isinstance(value, list):
            self.report(path, f"expected a list of failure codes, got {_kind(value)}")
            return ()
        codes: list[str] = []
        for index, code in enumerate(value):
            if isinstance(code, str) and code.strip():
                codes.append(code)
            else:
                self.report((*path, index), f"a failure code is text, not {_kind(code)}")
        return tuple(codes)

    def steps(self, value: Any, timeout: Any, retry: dict[str, Any]) -> list[dict[str, Any]]:
        """Each step checked for shape and merged over the defaults, ready for the model;
        the members of a parallel group take its place in the list, marked with its number."""
        if not isinstance(value, list):
            self.report(("steps",), f"expected a list of steps, got {_kind(value)}")
            return []
        if not value:
            self.report(("steps",), "a saga needs at least one step")
        self.flatten(value)
        count = len(self.flat_steps)
        if count > MAX_STEPS:
            self.report(
                ("steps",), f"a saga may have at most {MAX_STEPS} steps; this one has {count}"
            )
        first_seen: dict[str, int] = {}
        for index, step in enumerate(self.flat_steps):
            name = step.get("name") if isinstance(step, dict) else None
            if isinstance(name, str) and name not in first_seen:
                first_seen[name] = self.line(("steps", index, "name"))
                self.step_names[index] = name
            elif isinstance(name, str):
                self.report(
                    ("steps", index, "name"),
                    f"duplicate step name {name!r} (first defined on line {first_seen[name]})",
                    claim=False,
                )
        checked = [
            self.step(step, ("steps", i), timeout, retry) for i, step in enumerate(self.flat_steps)
        ]
        for index, group in enumerate(self.groups):
            if group is not None:
                checked[index]["group"] = group
                if checked[index].get("kind") is StepKind.PIVOT:
                    self.report(
                        ("steps", index, "kind"),
                        "a pivot runs alone: it cannot be part of a parallel group",
                    )
        self.kinds(checked)
        return checked

    def flatten(self, value: list[Any]) -> None:
        """Fill ``flat_steps``, ``step_paths`` and ``groups`` from the document's list."""
        group = 0
        for index, item in enumerate(value):
            if not (isinstance(item, dict) and "parallel" in item):
                self.step_paths.append(("steps", index))
                self.flat_steps.append(item)
                self.groups.append(None)
                continue
            for key in item:
                if key != "parallel":
                    self.problems.append(
                        DefinitionProblem(
                            self.source,
                            self.document_line(("steps", index, key)),
                            f"steps[{index}]: unknown key {key!r}: a parallel group holds only "
                            "'parallel', its list of steps",
                        )
                    )
            members = item["parallel"]
            if not isinstance(members, list) or len(members) < 2:
                self.problems.append(
                    DefinitionProblem(
                        self.source,
                        self.document_line(("steps", index, "parallel")),
                        f"steps[{index}] parallel: expected a list of at least two steps, got "
                        + (f"{len(members)}" if isinstance(members, list) else _kind(members)),
                    )
                )
                continue
            group += 1
            for position, member in enumerate(members):
                if isinstance(member, dict) and "parallel" in member:
                    self.problems.append(
                        DefinitionProblem(
                            self.source,
                            self.document_line(("steps", index, "parallel", position)),
                            "parallel groups do not nest: list the steps of the inner group "
                            "in the outer one",
                        )
                    )
                    continue
                self.step_paths.append(("steps", index, "parallel", position))
                self.flat_steps.append(member)
                self.groups.append(group)

    def step(
        self, value: Any, path: PathKey, timeout: Any, defaults: dict[str, Any]
    ) -> dict[str, Any]:
        """One step for the model: known keys only, defaults merged field by field."""
        step = self.mapping(value, path, STEP_KEYS)
        if step.get("compensation") is not None:
            step["compensation"] = self.mapping(
                step["compensation"], (*path, "compensation"), COMPENSATION_KEYS
            )
        if "timeout" in step:
            self.timeout(step["timeout"], (*path, "timeout"))
        elif timeout is not None:
            step["timeout"] = timeout
        own = self.retry(step.get("retry"), (*path, "retry"))
        merged = {**defaults, **{k: v for k, v in own.items() if k != "backoff"}}
        backoff = {**defaults.get("backoff", {}), **own.get("backoff", {})}
        if backoff:
            merged["backoff"] = backoff
        step.pop("retry", None)
        if merged:
            step["retry"] = merged
        if "when" in step:
            step["when"] = self.condition(step["when"], (*path, "when"))
        for key, choices in (("kind", StepKind), ("on_failure", OnFailure)):
            if key in step:
                step[key] = self.choice(step[key], (*path, key), choices)
        return step

    def choice(self, value: Any, path: PathKey, choices: type[StrEnum]) -> Any:
        """``value`` as a member of ``choices``, or reported (and None)."""
        allowed = [member.value for member in choices]
        if isinstance(value, str) and value in allowed:
            return choices(value)
        shown = repr(value) if isinstance(value, str) else show_value(value)
        self.report(
            path, f"unknown value {shown}: expected {', '.join(allowed[:-1])} or {allowed[-1]}"
        )
        return None

    def condition(self, value: Any, path: PathKey) -> str | None:
        """The text of a ``when:`` that parses (``true``/``false`` as written); reports why not."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, str):
            self.report(path, f"a condition is text like ${{input.x}} == 1, not {_kind(value)}")
            return None
        try:
            parse_condition(value)
        except ConditionSyntaxError as exc:
            self.report(path, f"bad condition: {exc}")
            return None
        return value

    def kinds(self, steps: list[dict[str, Any]]) -> None:
        """Compensatable steps, then at most one pivot, then retriable ones; a pivot or a
        retriable step has no compensation. Kinds left out are inferred as the model does."""
        pivot: tuple[str, int] | None = None
        for index, step in enumerate(steps):
            path: PathKey = ("steps", index)
            name = self.step_names.get(index, f"steps[{index}]")
            if "kind" in step and step["kind"] is None:
                continue  # reported by step()
            declared = step.get("kind")
            has_compensation = step.get("compensation") is not None
            if declared is None:
                kind = StepKind.COMPENSATABLE if has_compensation else StepKind.RETRIABLE
            else:
                kind = StepKind(declared)
            at = (*path, "kind") if declared is not None else (*path, "compensation")
            if kind is not StepKind.COMPENSATABLE and has_compensation:
                self.report(
                    (*path, "compensation"),
                    f"a {kind.value} step has no compensation: "
                    + (
                        "the pivot is the point of no return"
                        if kind is StepKind.PIVOT
                        else "it is retried until it succeeds"
                    )
                    + "; make it compensatable or remove the compensation",
                )
            if kind is StepKind.PIVOT:
                if pivot is not None:
                    self.report(
                        (*path, "kind"),
                        f"a saga has one pivot, and {pivot[0]!r} (line {pivot[1]}) is already it",
                    )
                else:
                    pivot = (name, self.line((*path, "kind")))
            elif kind is StepKind.COMPENSATABLE and pivot is not None:
                what = (
                    "a compensation makes this step compensatable, but it comes"
                    if declared is None
                    else "a compensatable step cannot come"
                )
                self.report(
                    at,
                    f"{what} after the pivot {pivot[0]!r} (line {pivot[1]}): nothing after "
                    "the point of no return can be undone; make it retriable or move it "
                    "before the pivot",
                )

    def references(self, top: dict[str, Any]) -> None:
        """Check every ``${...}`` in conditions, step payloads, compensation payloads and
        output; a member of a parallel group sees the steps before its group, not its peers."""
        steps = self.flat_steps
        names = [self.step_names.get(i) for i in range(len(steps))]
        known = [name for name in names if name is not None]
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            group = self.groups[index]
            first = index
            while group is not None and first > 0 and self.groups[first - 1] == group:
                first -= 1
            name, before = names[index], [n for n in names[:first] if n is not None]
            where = f"step {name!r}" if name else f"steps[{index}]"
            self.condition_scope(step.get("when"), ("steps", index, "when"), where, before, known)
            self.template(
                step.get("payload"),
                ("steps", index, "payload"),
                where=where,
                visible=before,
                known=known,
                own=name,
            )
            compensation = step.get("compensation")
            if isinstance(compensation, dict):
                visible = [*before, name] if name else before
                self.template(
                    compensation.get("payload"),
                    ("steps", index, "compensation", "payload"),
                    where=f"the compensation of {where}",
                    visible=visible,
                    known=known,
                    own=name,
                )
        self.template(
            top.get("output"), ("output",), where="output", visible=known, known=known, own=None
        )

    def condition_scope(
        self, value: Any, path: PathKey, where: str, visible: list[str], known: list[str]
    ) -> None:
        """Report references in a ``when:`` to steps that do not run before it."""
        if not isinstance(value, str):
            return
        try:
            condition = parse_condition(value)
        except ConditionSyntaxError:
            return  # reported by step()
        for ref in condition.references():
            message = scope_problem(
                ref, where=f"the condition of {where}", visible=visible, all_steps=known
            )
            if message is not None:
                self.report(path, message, claim=False)

    def template(
        self,
        value: Any,
        path: PathKey,
        *,
        where: str,
        visible: list[str],
        known: list[str],
        own: str | None,
    ) -> None:
        """Report the reference problems of one payload or output (if it is a mapping)."""
        if not isinstance(value, dict):
            return
        template = compile_template(value)
        problems = [*template.problems]
        problems += scope_problems(
            template, where=where, visible=visible, all_steps=known, own_step=own
        )
        for problem in problems:
            line = self.line((*path, *problem.path))
            self.problems.append(DefinitionProblem(self.source, line, problem.message))

    def pydantic_errors(self, exc: ValidationError, prefix: PathKey) -> set[PathKey]:
        """Report a model's errors at their document lines; returns the paths reported."""
        reported: set[PathKey] = set()
        for error in exc.errors():
            loc = tuple(
                _MODEL_TO_YAML.get(str(p), p) if i == 0 else p for i, p in enumerate(error["loc"])
            )
            path: PathKey = (*prefix, *loc)
            if loc == ("steps",) and error["type"] in ("too_short", "too_long"):
                continue  # counted by steps() with a better sentence
            if any(path[: len(claimed)] == claimed for claimed in self.claimed):
                continue
            where, message = describe_pydantic_error(error, path)
            self.report(where, message, claim=False)
            reported.add(path)
        return reported
