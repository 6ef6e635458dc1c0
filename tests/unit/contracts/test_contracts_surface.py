"""The public surface of ``contracts``, which other services and languages build on, is pinned."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import contracts
from contracts import errors

PACKAGE = Path(contracts.__file__).parent


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(contracts.__all__) == [
        "CONTENT_TYPE",
        "ContractError",
        "EncodeError",
        "ErrorBody",
        "Failure",
        "Header",
        "InvalidMessage",
        "JsonObject",
        "MAX_BODY_BYTES",
        "MAX_DEPTH",
        "MESSAGE_TYPES",
        "Message",
        "MessageRejected",
        "MessageTooLarge",
        "NotJson",
        "NotUtf8",
        "SCHEMA_VERSION",
        "SUPPORTED_SCHEMA_VERSIONS",
        "StartReply",
        "StartRequest",
        "StepCommand",
        "StepReply",
        "TooDeep",
        "TraceContext",
        "UnexpectedMessageType",
        "UnknownMessageType",
        "UnsupportedVersion",
        "WireMessage",
        "decode",
        "encode",
    ]


def test_every_public_name_exists() -> None:
    for name in contracts.__all__:
        assert getattr(contracts, name) is not None, name


def test_the_constants_and_header_names() -> None:
    assert (contracts.MAX_BODY_BYTES, contracts.MAX_DEPTH) == (262_144, 32)
    names = {value for key, value in vars(contracts.Header).items() if key.isupper()}
    assert names == {
        "x-saga-name",
        "x-saga-version",
        "x-saga-step",
        "x-saga-attempt",
        "x-saga-kind",
        "x-idempotency-key",
        "x-action-key",
        "x-schema-version",
        "traceparent",
        "tracestate",
    }


def test_the_error_hierarchy() -> None:
    rejected = [
        errors.MessageTooLarge,
        errors.NotUtf8,
        errors.NotJson,
        errors.TooDeep,
        errors.UnknownMessageType,
        errors.UnsupportedVersion,
        errors.InvalidMessage,
        errors.UnexpectedMessageType,
    ]
    assert all(issubclass(cls, errors.MessageRejected) for cls in rejected)
    assert issubclass(errors.TooDeep, errors.NotJson)
    assert issubclass(errors.MessageRejected, errors.ContractError)
    assert issubclass(errors.EncodeError, errors.ContractError)
    assert not issubclass(errors.EncodeError, errors.MessageRejected)
    codes = [cls.code for cls in rejected]
    assert len(set(codes)) == len(codes)
    for cls in [errors.ContractError, errors.EncodeError, errors.MessageRejected, *rejected]:
        assert cls.__doc__ is not None
        assert "\n" not in cls.__doc__.strip()


def test_contracts_imports_only_pydantic_and_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__", "pydantic", "contracts"}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}"
