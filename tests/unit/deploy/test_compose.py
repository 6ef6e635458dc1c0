"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

What can go wrong in a deployment file without any test noticing: a participant module
renamed, a saga naming a participant no service runs, an environment variable the code
never reads, two participants sharing one inbox table, a build context that ships .venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import environment_variables as otel_api_variables
from opentelemetry.sdk import environment_variables as otel_sdk_variables

from orchestrator.cli.services import load_participant
from orchestrator.definitions.registry import DefinitionRegistry
from participants.app import Participant

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
POSTGRES_INIT = ROOT / "deploy" / "postgres-init.sql"
PACKAGES = ("orchestrator", "participants", "contracts")

INFRASTRUCTURE = {"rabbitmq", "postgres", "jaeger"}
PARTICIPANTS = {"inventory", "payments", "notifications", "blobs", "profiles"}

KNOWN_VARIABLES = {
    "SAGA_DATABASE_URL",
    "SAGA_AMQP_URL",
    "SAGA_DEFINITIONS",
    "SAGA_PARTICIPANT_DATABASE_URL",
    "SAGA_EXAMPLE_BLOB_DIR",
    "SAGA_LOG_FORMAT",
    "SAGA_METRICS_PORT",
    "SAGA_METRICS_ADDRESS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_METRICS_EXPORTER",
    "OTEL_SERVICE_NAME",
}
"""Every SAGA_*/OTEL_* variable the stack may set; each must be one the code reads."""

ORCHESTRATOR_ENV = {
    "SAGA_DATABASE_URL": "postgresql+asyncpg://saga:saga@postgres:5432/saga",
    "SAGA_AMQP_URL": "amqp://guest:guest@rabbitmq:5672/",
    "SAGA_LOG_FORMAT": "json",
    "SAGA_METRICS_PORT": "9464",
    "SAGA_METRICS_ADDRESS": "0.0.0.0",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_SERVICE_NAME": "saga-orchestrator",
}


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{COMPOSE} does not hold a mapping"
    return loaded


def services() -> dict[str, Any]:
    found = compose().get("services")
    assert isinstance(found, dict), f"{COMPOSE} has no services mapping"
    return found


def environment(service: str) -> dict[str, str]:
    """A service's environment as strings, whether written as a mapping or as a list."""
    raw = services()[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def command(service: str) -> list[str]:
    raw = services()[service].get("command")
    if isinstance(raw, str):
        return raw.split()
    assert isinstance(raw, list), f"service {service!r} has no command"
    return [str(part) for part in raw]


def participant_targets() -> dict[str, str]:
    """Service name -> the MODULE:ATTR it runs with ``saga participant run``."""
    targets = {}
    for name in services():
        if name in INFRASTRUCTURE:
            continue
        argv = command(name)
        if argv[:3] == ["saga", "participant", "run"]:
            assert len(argv) == 4, f"service {name!r}: {argv} is not one MODULE:ATTR"
            targets[name] = argv[3]
    return targets


def participant_apps() -> dict[str, Participant]:
    return {name: load_participant(target) for name, target in participant_targets().items()}


def test_docker_compose_accepts_the_file() -> None:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be checked; "
            "install it (`apt-get install docker-compose`) and run the tests again"
        )
    result = subprocess.run(
        [executable, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose rejects {COMPOSE}:\n{result.stderr}"


def test_the_stack_has_every_service() -> None:
    assert set(services()) == INFRASTRUCTURE | {"orchestrator"} | PARTICIPANTS


def test_infrastructure_images_and_ports() -> None:
    assert "management" in services()["rabbitmq"]["image"]
    assert "15672:15672" in services()["rabbitmq"]["ports"]
    jaeger = services()["jaeger"]
    assert re.fullmatch(r"jaegertracing/all-in-one:1\.\d+(\.\d+)?", jaeger["image"])
    assert environment("jaeger")["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {"16686:16686", "4317:4317", "4318:4318"} <= set(jaeger["ports"])
    assert "healthcheck" in services()["rabbitmq"]
    assert "healthcheck" in services()["postgres"]


def test_every_participant_service_runs_a_participant_of_its_name() -> None:
    apps = participant_apps()
    assert set(apps) == PARTICIPANTS
    for service, app in apps.items():
        assert app.name == service
        assert environment(service)["OTEL_SERVICE_NAME"] == f"saga-participant-{app.name}"


def test_every_participant_a_saga_names_has_a_service() -> None:
    registry = DefinitionRegistry.load_dir(ROOT / "sagas")
    running = {app.name for app in participant_apps().values()}
    missing = registry.participants() - running
    assert not missing, f"sagas/ sends commands to {sorted(missing)}, which no service runs"


def test_orchestrator_is_wired_by_environment() -> None:
    env = environment("orchestrator")
    assert {key: env.get(key) for key in ORCHESTRATOR_ENV} == ORCHESTRATOR_ENV
    definitions = env["SAGA_DEFINITIONS"]
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(rf"^COPY sagas {re.escape(definitions)}$", dockerfile, re.MULTILINE), (
        f"SAGA_DEFINITIONS is {definitions}, but the Dockerfile does not copy sagas/ there"
    )
    assert "9464:9464" in services()["orchestrator"]["ports"]


def test_orchestrator_migrates_before_it_runs() -> None:
    script = " ".join(command("orchestrator"))
    upgrade = script.find("saga db upgrade")
    run = script.find("saga orchestrator run")
    assert 0 <= upgrade < run, f"the orchestrator's command does not migrate first: {script}"
    assert "&&" in script[upgrade:run], "a failed migration must stop the orchestrator starting"


def test_services_wait_for_a_healthy_broker_and_database() -> None:
    for name in {"orchestrator"} | PARTICIPANTS:
        depends = services()[name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_participants_each_have_a_database_that_postgres_creates() -> None:
    """Every participant's inbox table is called ``saga_inbox``: sharing a database would
    mix their idempotency keys, so each needs one, created by the init script."""
    created = set(
        re.findall(r"^CREATE DATABASE (\w+)", POSTGRES_INIT.read_text(encoding="utf-8"), re.M)
    )
    mounted = [str(volume) for volume in services()["postgres"]["volumes"]]
    assert any(
        v.startswith("./deploy/postgres-init.sql:/docker-entrypoint-initdb.d/") for v in mounted
    )
    databases = {}
    for name in PARTICIPANTS:
        url = environment(name)["SAGA_PARTICIPANT_DATABASE_URL"]
        assert url.startswith("postgresql+asyncpg://saga:saga@postgres:5432/"), url
        databases[name] = url.rsplit("/", 1)[1]
    assert len(set(databases.values())) == len(databases), f"shared databases: {databases}"
    assert set(databases.values()) <= created, f"not created by {POSTGRES_INIT}: {databases}"


def package_sources() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    )


def test_every_variable_set_is_one_the_code_reads() -> None:
    used = {
        key
        for name in services()
        for key in environment(name)
        if key.startswith(("SAGA_", "OTEL_"))
    }
    assert used <= KNOWN_VARIABLES, f"unknown variables: {sorted(used - KNOWN_VARIABLES)}"
    sources = package_sources()
    # A standard OTEL_* variable may be read by OpenTelemetry itself, or by our telemetry
    # code under a name it builds (OTEL_{signal}_EXPORTER): OpenTelemetry's own lists count.
    standard = {
        key
        for key in KNOWN_VARIABLES
        if key.startswith("OTEL_")
        and (hasattr(otel_api_variables, key) or hasattr(otel_sdk_variables, key))
    }
    unread = {key for key in KNOWN_VARIABLES - standard if f'"{key}"' not in sources}
    assert not unread, f"set in {COMPOSE.name} but read by no code: {sorted(unread)}"


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, arguments = stripped.partition(" ")
            yield instruction.upper(), arguments.strip()


def test_dockerfile_base_image_and_user() -> None:
    instructions = list(dockerfile_instructions())
    bases = [
        arguments.split()[0] for instruction, arguments in instructions if instruction == "FROM"
    ]
    assert bases, "the Dockerfile has no FROM line"
    assert set(bases) == {"python:3.11-slim"}, bases
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users, "the Dockerfile has no USER line, so the services would run as root"
    assert users[-1].partition(":")[0] not in {"root", "0"}, users[-1]


def test_dockerfile_installs_without_the_dev_extra() -> None:
    runs = " ".join(
        arguments for instruction, arguments in dockerfile_instructions() if instruction == "RUN"
    )
    assert "pip install" in runs
    assert "[dev]" not in runs


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching it
    or one of its parent folders decides (``!`` re-includes)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = docker_pattern(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def docker_pattern(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "orchestrator/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/cache.db",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/content",
        ".hypothesis/examples/x",
        "saga.db",
        ".demo/inventory.db",
        "orchestrator/left-behind.db",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert ignored(path, dockerignore_patterns()), f"{DOCKERIGNORE.name} lets {path} in"


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    sources = [
        source
        for instruction, arguments in dockerfile_instructions()
        if instruction == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path for path in [ROOT / source, *(ROOT / source).rglob("*")] if path.is_file()]
        kept = [path for path in files if not ignored(path.relative_to(ROOT).as_posix(), patterns)]
        assert kept, f"{DOCKERIGNORE.name} leaves out {source}, which the Dockerfile copies"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert ignored("a/b/x.db", ["**/*.db"])
    assert ignored("x.db", ["**/*.db"])
    assert not ignored("a/x.db", ["*.db"])
    assert ignored("tests/unit/x.py", ["tests"])
    assert not ignored("participants/examples/blobs.py", ["blobs"])
    assert not ignored("keep.db", ["**/*.db", "!keep.db"])


def test_every_service_environment_builds_settings_the_code_accepts() -> None:
    """The compose environment read by the same functions the services call at start."""
    from orchestrator.logs import LogSettings
    from orchestrator.settings import Settings
    from orchestrator.telemetry.setup import TelemetrySettings
    from participants.runtime import ParticipantSettings

    orchestrator_env = environment("orchestrator")
    Settings.from_env(orchestrator_env)
    telemetry = TelemetrySettings.from_env(orchestrator_env, service_name="unused")
    assert telemetry.service_name == "saga-orchestrator"
    assert telemetry.traces_endpoint == "http://jaeger:4318/v1/traces"
    assert telemetry.metrics_endpoint is None  # Jaeger takes only traces
    assert (telemetry.metrics_address, telemetry.metrics_port) == ("0.0.0.0", 9464)
    assert LogSettings.from_env(orchestrator_env).format == "json"
    for name in PARTICIPANTS:
        env = environment(name)
        ParticipantSettings.from_env(name, env)
        participant = TelemetrySettings.from_env(env, service_name="unused")
        assert participant.service_name == f"saga-participant-{name}"
        assert participant.traces_endpoint == "http://jaeger:4318/v1/traces"
        assert participant.metrics_port is None
