"""The public surface of ``participants``, which every participant service imports, is pinned."""

from __future__ import annotations

import inspect

import pytest

import participants
from participants import (
    HandlerDefinitionError,
    ParticipantError,
    ParticipantLoadError,
    PermanentError,
    RetryableError,
    StepError,
)
from participants import errors as errors_module


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(participants.__all__) == [
        "CommandHandler",
        "HandlerDefinitionError",
        "Participant",
        "ParticipantError",
        "ParticipantLoadError",
        "PermanentError",
        "RetryableError",
        "StepContext",
        "StepError",
    ]


@pytest.mark.parametrize("name", participants.__all__)
def test_each_public_name_is_importable_and_documented(name: str) -> None:
    value = getattr(participants, name)
    assert inspect.getdoc(value), f"participants.{name} has no docstring"


def test_every_error_is_rooted_and_has_a_one_line_docstring() -> None:
    classes = [
        value
        for value in vars(errors_module).values()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors_module.__name__
    ]
    assert set(classes) == {
        ParticipantError,
        StepError,
        PermanentError,
        RetryableError,
        HandlerDefinitionError,
        ParticipantLoadError,
    }
    for cls in classes:
        assert issubclass(cls, ParticipantError)
        doc = cls.__doc__ or ""
        assert doc.strip(), cls.__name__
        assert "\n" not in doc.strip(), f"{cls.__name__}'s docstring is not one line"


def test_whether_a_failure_is_retryable_travels_on_the_error() -> None:
    assert PermanentError("out_of_stock").retryable is False
    assert RetryableError("busy").retryable is True
    assert StepError("anything").retryable is True, "an unspecified step error may be retried"


def test_a_step_error_carries_its_code_and_message() -> None:
    error = PermanentError("out_of_stock", "no stock for sku-1")
    assert (error.code, error.message) == ("out_of_stock", "no stock for sku-1")
    assert str(error) == "out_of_stock: no stock for sku-1"
    bare = RetryableError("busy")
    assert (bare.code, bare.message, str(bare)) == ("busy", "busy", "busy")


def test_a_step_error_code_always_fits_on_the_wire() -> None:
    assert PermanentError("").code == "failed"
    assert len(PermanentError("x" * 500).code) == 200
