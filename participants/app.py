"""A participant service: :class:`Participant` and its ``@command`` handlers."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from participants.context import StepContext
from participants.errors import HandlerDefinitionError, PermanentError

HandlerFunc = Callable[[Any, StepContext], Awaitable[Any]]
F = TypeVar("F", bound=HandlerFunc)

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


@dataclass(frozen=True)
class CommandHandler:
    """One registered handler and the pydantic model its payload is validated into."""

    command: str
    func: HandlerFunc
    payload_type: type[BaseModel] | None

    def parse(self, payload: Mapping[str, Any]) -> Any:
        """The payload as the handler wants it; a bad payload fails the step for good."""
        if self.payload_type is None:
            return dict(payload)
        try:
            return self.payload_type.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)
            )
            raise PermanentError(
                "invalid_payload", f"payload for '{self.command}' is invalid: {problems}"
            ) from None

    @staticmethod
    def result(value: Any) -> dict[str, Any]:
        """The handler's return value as the reply's ``result`` object."""
        if value is None:
            return {}
        if isinstance(value, BaseModel):
            dumped: dict[str, Any] = value.model_dump(mode="json")
            return dumped
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(
            f"a handler must return a dict, a pydantic model or None, not {type(value).__name__}"
        )


class Participant:
    """A named participant: its commands arrive on the queue ``saga.participant.<name>``.

    >>> inventory = Participant("inventory")
    >>> @inventory.command("reserve")
    ... async def reserve(payload: dict, ctx: StepContext) -> dict:
    ...     return {"reservation_id": "r-1"}
    """

    def __init__(self, name: str, *, metadata: sa.MetaData | None = None) -> None:
        """``metadata``: the participant's own tables, created (if missing) at start."""
        if not _NAME.fullmatch(name):
            raise HandlerDefinitionError(
                f"participant name {name!r} must be 1-200 letters, digits, '_', '.' or '-'"
            )
        self.name = name
        self.metadata = metadata
        self._handlers: dict[str, CommandHandler] = {}

    def command(self, name: str) -> Callable[[F], F]:
        """Register an ``async def handler(payload, ctx)`` for the command ``name``."""

        def register(handler: F) -> F:
            func: HandlerFunc = handler
            if name in self._handlers:
                raise HandlerDefinitionError(
                    f"participant '{self.name}' already has a handler for '{name}'"
                )
            if not inspect.iscoroutinefunction(func):
                raise HandlerDefinitionError(f"the handler for '{name}' must be an async function")
            self._handlers[name] = CommandHandler(name, func, _payload_type(func, name))
            return handler

        return register

    def handler(self, command: str) -> CommandHandler | None:
        """The handler registered for ``command``, if any."""
        return self._handlers.get(command)

    @property
    def commands(self) -> list[str]:
        """The commands this participant handles."""
        return sorted(self._handlers)


def _payload_type(func: HandlerFunc, command: str) -> type[BaseModel] | None:
    parameters = list(inspect.signature(func).parameters.values())
    if len(parameters) != 2:
        raise HandlerDefinitionError(
            f"the handler for '{command}' must take (payload, ctx), "
            f"not {len(parameters)} parameters"
        )
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: treat the payload as a plain dict
        return None
    annotation = hints.get(parameters[0].name)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
