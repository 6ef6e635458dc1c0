"""TelemetrySettings.from_env: the standard OTEL_* variables and SAGA_METRICS_*."""

from __future__ import annotations

import pytest

from orchestrator.settings import SettingsError
from orchestrator.telemetry.setup import Telemetry, TelemetrySettings


def settings(**environ: str) -> TelemetrySettings:
    """The settings an environment of ``environ`` gives, with the default name ``saga``."""
    return TelemetrySettings.from_env(environ, service_name="saga")


def test_without_an_endpoint_nothing_is_exported() -> None:
    found = settings()
    assert found == TelemetrySettings(service_name="saga")
    assert found.tracing is False
    assert found.metrics is False


@pytest.mark.parametrize("base", ["http://h:4318", "http://h:4318/"])
def test_the_base_endpoint_gets_one_path_per_signal_over_http(base: str) -> None:
    found = settings(OTEL_EXPORTER_OTLP_ENDPOINT=base)
    assert found.traces_endpoint == "http://h:4318/v1/traces"
    assert found.metrics_endpoint == "http://h:4318/v1/metrics"
    assert found.protocol == "http/protobuf"
    assert found.tracing is True
    assert found.metrics is True


def test_a_per_signal_endpoint_wins_over_the_base() -> None:
    found = settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces:9999/custom",
    )
    assert found.traces_endpoint == "http://traces:9999/custom"
    assert found.metrics_endpoint == "http://h:4318/v1/metrics"


def test_a_per_signal_endpoint_alone_switches_only_that_signal_on() -> None:
    found = settings(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://m:4318/v1/metrics")
    assert found.traces_endpoint is None
    assert found.metrics_endpoint == "http://m:4318/v1/metrics"
    assert found.tracing is False
    assert found.metrics is True


def test_grpc_keeps_the_base_endpoint_as_it_is() -> None:
    found = settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
    )
    assert found.protocol == "grpc"
    assert found.traces_endpoint == "http://h:4317"
    assert found.metrics_endpoint == "http://h:4317"


@pytest.mark.parametrize("value", ["none", "NONE", " none "])
def test_traces_exporter_none_switches_tracing_off_but_not_metrics(value: str) -> None:
    found = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4318", OTEL_TRACES_EXPORTER=value)
    assert found.tracing is False
    assert found.traces_endpoint is None
    assert found.metrics_endpoint == "http://h:4318/v1/metrics"


def test_metrics_exporter_none_switches_metrics_off_but_not_tracing() -> None:
    found = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4318", OTEL_METRICS_EXPORTER="none")
    assert found.metrics is False
    assert found.traces_endpoint == "http://h:4318/v1/traces"


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_sdk_disabled_switches_everything_off_and_skips_the_other_checks(value: str) -> None:
    found = settings(
        OTEL_SDK_DISABLED=value,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL="carrier-pigeon",
        SAGA_METRICS_PORT="9464",
        OTEL_SERVICE_NAME="shop",
    )
    assert found == TelemetrySettings(service_name="shop")
    assert found.tracing is False
    assert found.metrics is False


def test_sdk_disabled_false_leaves_telemetry_on() -> None:
    found = settings(OTEL_SDK_DISABLED="false", OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4318")
    assert found.tracing is True


def test_the_service_name_comes_from_otel_service_name_or_the_default() -> None:
    assert settings(OTEL_SERVICE_NAME="shop").service_name == "shop"
    assert settings(OTEL_SERVICE_NAME="").service_name == "saga"
    assert settings().service_name == "saga"


def test_a_metrics_port_serves_metrics_without_an_endpoint() -> None:
    found = settings(SAGA_METRICS_PORT=" 9464 ", SAGA_METRICS_ADDRESS="0.0.0.0")
    assert found.metrics_port == 9464
    assert found.metrics_address == "0.0.0.0"
    assert found.metrics is True
    assert found.tracing is False
    assert settings(SAGA_METRICS_PORT="9464").metrics_address == "127.0.0.1"


@pytest.mark.parametrize("port", ["1", "65535"])
def test_the_ends_of_the_port_range_are_accepted(port: str) -> None:
    assert settings(SAGA_METRICS_PORT=port).metrics_port == int(port)


@pytest.mark.parametrize("protocol", ["http/json", "udp", "GRPC"])
def test_an_unknown_protocol_is_refused_with_a_sentence_naming_the_variable(
    protocol: str,
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://h:4318", OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    message = str(caught.value)
    assert message.startswith("OTEL_EXPORTER_OTLP_PROTOCOL must be one of http/protobuf, grpc")
    assert repr(protocol) in message


@pytest.mark.parametrize("port", ["x", "0", "70000", "65536", "-1", "9464.0", "+80"])
def test_a_bad_metrics_port_is_refused_with_a_sentence_naming_the_variable(port: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings(SAGA_METRICS_PORT=port)
    message = str(caught.value)
    assert message.startswith("SAGA_METRICS_PORT must be a port number (1-65535)")
    assert repr(port) in message


@pytest.mark.parametrize("port", ["³", "٣"])
def test_a_non_ascii_digit_port_is_refused_with_a_sentence(port: str) -> None:
    with pytest.raises(SettingsError, match="SAGA_METRICS_PORT"):
        settings(SAGA_METRICS_PORT=port)


def test_starting_without_anything_configured_holds_no_provider() -> None:
    telemetry = Telemetry.start(settings())
    assert telemetry.tracing is False
    assert telemetry.measuring is False
    assert telemetry.tracer is None
    telemetry.shutdown()
