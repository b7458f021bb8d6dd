"""docker-compose.yml: valid against the Compose Specification, and right for OneMap.

The schema is the Compose Specification's own JSON schema, vendored in data/compose-spec/
(see its README for provenance and licence). What the schema cannot know (service references,
scalability, OneMap's settings, mounted files) is checked below it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from deploy_kit import COMPOSE_FILE, REPO

from onemap.cli import build_parser
from onemap.settings import Settings, describe

SCHEMA_FILE = REPO / "tests" / "deploy" / "data" / "compose-spec" / "compose-spec.json"
ONEMAP_SERVICES = ("worker", "dashboard")


def validator_class() -> Any:
    try:
        import jsonschema
    except ImportError:  # a missing test dependency must not pass silently
        pytest.fail("jsonschema is needed to validate docker-compose.yml: "
                    "pip install -e '.[test]'", pytrace=False)
    # The spec's schema declares draft 2019-09; name it rather than let jsonschema guess.
    return jsonschema.Draft201909Validator


def load_schema() -> dict[str, Any]:
    with SCHEMA_FILE.open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = validator_class()(load_schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(e.path))]


def test_vendored_schema_is_a_valid_schema() -> None:
    validator_class().check_schema(load_schema())


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = schema_errors(compose)
    assert not errors, f"{COMPOSE_FILE.name} is not valid Compose:\n" + "\n".join(errors)


@pytest.mark.parametrize(("where", "key", "value"), [
    (("services", "worker"), "comand", ["worker"]),                   # misspelt service key
    (("services", "redis", "healthcheck"), "intervall", "5s"),       # misspelt nested key
    (("services", "worker", "depends_on", "kafka"), "condition", "service_ready"),  # bad enum
    (("services", "worker", "deploy"), "replicas", "two"),           # wrong type
    ((), "servces", {}),                                             # misspelt top-level key
])
def test_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any], where: tuple[str, ...], key: str, value: Any,
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for part in where:
        node = node[part]
    node[key] = value
    assert schema_errors(broken), f"schema accepted {'/'.join((*where, key))} = {value!r}"


def test_depends_on_names_existing_services_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on", {})
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")


def test_infrastructure_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "redis", "dashboard", "prometheus"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck"
    for dep in ("kafka", "redis"):
        assert services["worker"]["depends_on"][dep]["condition"] == "service_healthy"
    assert services["dashboard"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(services["dashboard"]["healthcheck"]["test"])


def test_worker_scales(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a fixed container_name stops --scale worker=N"
    assert "ports" not in worker, "a published host port stops --scale worker=N; use expose"
    assert "hostname" not in worker
    assert int(worker["deploy"]["replicas"]) >= 1


def test_kafka_is_single_node_kraft_reachable_in_network(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    onemap_kafka = compose["services"]["worker"]["environment"]["ONEMAP_KAFKA"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    internal = onemap_kafka.removeprefix("kafka://")
    assert any(a.endswith("://" + internal) for a in advertised), (
        f"ONEMAP_KAFKA={onemap_kafka} is not an advertised listener: {advertised}")
    assert any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_redis_is_7_with_aof_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_onemap_services_use_known_settings(
    compose: dict[str, Any], compose_variables: set[str],
) -> None:
    known = {env for env, _, _ in describe()}
    for name in ONEMAP_SERVICES:
        env = compose["services"][name]["environment"]
        unknown = sorted(k for k in env if k.startswith("ONEMAP_") and k not in known)
        assert not unknown, f"{name} sets ONEMAP_* variables OneMap does not read: {unknown}"
        # The values must pass OneMap's own validation (types, URL schemes, ports).
        Settings.from_env({k: str(v) for k, v in env.items()})
    unknown_vars = sorted(
        v for v in compose_variables if v.startswith("ONEMAP_") and v not in known)
    assert not unknown_vars, f"${{...}} uses ONEMAP_* names that are not settings: {unknown_vars}"


def test_onemap_services_listen_for_other_containers(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]["environment"]
    dashboard = compose["services"]["dashboard"]["environment"]
    assert worker["ONEMAP_METRICS_HOST"] == "0.0.0.0"
    assert dashboard["ONEMAP_DASHBOARD_HOST"] == "0.0.0.0"
    assert str(worker["ONEMAP_METRICS_PORT"]) in map(str, compose["services"]["worker"]["expose"])
    port = str(dashboard["ONEMAP_DASHBOARD_PORT"])
    assert any(str(p).endswith(":" + port) for p in compose["services"]["dashboard"]["ports"])
    for name in ONEMAP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["ONEMAP_REDIS"].startswith("redis://redis:")
        # Real-cluster consumer-group timeouts: the defaults, not the embedded short ones.
        for short in ("ONEMAP_REBALANCE_TIMEOUT", "ONEMAP_SESSION_TIMEOUT"):
            assert short not in env, f"{name}: leave {short} at its default for a real cluster"


def test_onemap_commands_exist(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in ONEMAP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == compose["services"]["worker"]["image"]
        assert service["build"] in (".", {"context": "."})
        parser.parse_args(list(service["command"]))
    assert compose["services"]["worker"]["command"] == ["worker"]
    assert compose["services"]["dashboard"]["command"] == ["dashboard"]


def test_bind_mounts_exist_in_the_repo(compose: dict[str, Any]) -> None:
    mounts = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                mounts += 1
                path = (COMPOSE_FILE.parent / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which is not in the repo"
    assert mounts >= 3
    volumes = compose.get("volumes", {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} uses undeclared named volume {source!r}"


def test_no_obsolete_version_key(compose_raw: dict[str, Any]) -> None:
    assert "version" not in compose_raw, "`version:` is obsolete in the Compose Specification"
