"""docker-compose.yml and deploy/ read as data: no Docker engine runs here, so these tests
keep the production files consistent with the code (settings, commands, configs)."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from cli.__main__ import build_parser
from models.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
INGEST = {name: svc for name, svc in SERVICES.items() if svc.get("command", [None])[0] == "ingest"}
APP_SERVICES = {name: svc for name, svc in SERVICES.items() if "build" in svc}
# Files the operator creates from a committed example; they must never be committed.
OPERATOR_CREATED = {
    "deploy/mosquitto/generated": "deploy/mosquitto/mosquitto.conf",
    "deploy/mosquitto/gateways.toml": "deploy/mosquitto/gateways.example.toml",
    "backups": "docs/operations.md",
}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment"
    return {key: str(value) for key, value in env.items()}


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts.append((source[2:], target))
    return mounts


def test_production_services_are_all_defined():
    expected = {"db", "migrate", "mosquitto", "api", "maintenance", "evaluate", "deliver", "caddy"}
    assert expected <= set(SERVICES)
    assert {"broker-acl", "prometheus"} <= set(SERVICES)
    assert SERVICES["broker-acl"]["profiles"] == ["setup"]
    assert SERVICES["prometheus"]["profiles"] == ["monitoring"]


def test_long_running_services_have_health_checks_and_restart():
    for name in ("db", "mosquitto", "api", "caddy", *INGEST):
        service = SERVICES[name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name


def test_database_is_pinned_timescaledb_on_postgresql_15_with_a_data_volume():
    db = SERVICES["db"]
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg15", db["image"])
    assert "db-data:/var/lib/postgresql/data" in db["volumes"]
    assert "pg_isready" in db["healthcheck"]["test"][1]
    assert set(COMPOSE["volumes"]) >= {"db-data", "mosquitto-data", "caddy-data"}


def _compose_timescaledb() -> tuple[str, int]:
    """(TimescaleDB version, PostgreSQL major) of the compose database image."""
    tag = re.fullmatch(r"timescale/timescaledb:(\d+\.\d+\.\d+)-pg(\d+)", SERVICES["db"]["image"])
    assert tag, SERVICES["db"]["image"]
    return tag.group(1), int(tag.group(2))


@pytest.mark.timescaledb
def test_compose_runs_the_timescaledb_and_postgresql_that_the_tests_run(
    timescale_admin_url: str,
) -> None:
    """The server CI tests against (../shared/timescaledb/setup.sh) is what production gets."""
    with psycopg.connect(timescale_admin_url) as conn:
        tested = conn.execute(
            "SELECT default_version, current_setting('server_version_num')::int / 10000 "
            "FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    assert _compose_timescaledb() == tested


def test_the_migrations_refuse_timescaledb_that_loses_rows_and_accept_the_compose_one() -> None:
    spec = importlib.util.spec_from_file_location(
        "storage_migration", ROOT / "migrations/versions/0002_readings_storage.py"
    )
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    for lossy in ("2.17.2", "2.18.0", "2.14.2-dev"):
        with pytest.raises(RuntimeError, match="7672"):
            migration.refuse_unsafe_timescaledb_version(lossy)
    for safe in ("2.18.1", "2.28.3", _compose_timescaledb()[0]):
        migration.refuse_unsafe_timescaledb_version(safe)


def test_there_are_several_ingest_replicas_with_own_client_ids_in_one_share_group():
    assert len(INGEST) >= 2
    envs = [_environment(svc) for svc in INGEST.values()]
    client_ids = [env["IOT_MQTT_CLIENT_ID"] for env in envs]
    groups = {env["IOT_MQTT_SHARE_GROUP"] for env in envs}

    assert len(set(client_ids)) == len(client_ids)
    assert len(groups) == 1 and groups != {""}
    for service in INGEST.values():
        assert "replicas" not in service.get("deploy", {}), "replicas would share a client id"


def test_every_iot_variable_set_in_compose_is_a_setting_the_app_reads():
    fields = {f"IOT_{name.upper()}" for name in Settings.model_fields}
    for name, service in APP_SERVICES.items():
        unknown = {key for key in _environment(service) if key.startswith("IOT_")} - fields
        assert not unknown, f"{name} sets {unknown}, which models/settings.py does not read"


def test_app_services_reach_the_database_and_broker_by_service_name():
    for name, service in APP_SERVICES.items():
        env = _environment(service)
        assert "@db:5432/" in env["IOT_DATABASE_URL"], name
    for env in map(_environment, INGEST.values()):
        assert env["IOT_MQTT_HOST"] == "mosquitto"
        assert env["IOT_MQTT_USERNAME"] and env["IOT_MQTT_PASSWORD"].startswith("${")


def test_long_running_services_connect_as_their_own_roles_not_the_superuser():
    expected = {
        "api": "iot_api",
        "maintenance": "iot_maintenance",
        "evaluate": "iot_maintenance",
        "deliver": "iot_maintenance",
        **dict.fromkeys(INGEST, "iot_ingest"),
    }
    for name, role in expected.items():
        url = _environment(SERVICES[name])["IOT_DATABASE_URL"]
        assert url.startswith(f"postgresql://{role}:"), name
    staff = _environment(SERVICES["api"])["IOT_STAFF_DATABASE_URL"]
    assert staff.startswith("postgresql://iot_staff:")
    # migrate sets each role's password to the one in that role's URL
    passwords = json.loads(_environment(SERVICES["migrate"])["IOT_DB_ROLE_PASSWORDS"])
    urls = [staff, *(_environment(SERVICES[name])["IOT_DATABASE_URL"] for name in expected)]
    for url in urls:
        role, password = url.removeprefix("postgresql://").split("@")[0].split(":", 1)
        assert passwords[role] == password


def test_services_start_after_migrations_completed():
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name, service in APP_SERVICES.items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


def test_app_commands_parse_with_the_real_cli():
    parser = build_parser()
    available = set(
        next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    )
    missing = []
    for name, service in APP_SERVICES.items():
        command = service["command"]
        if command[0] not in available:
            missing.append(f"{name}: {command[0]}")
            continue
        parser.parse_args(command)  # exits (fails the test) on unknown arguments
    if missing:
        pytest.skip(f"commands not written yet: {', '.join(missing)}")


def test_bind_mounted_files_exist_or_are_operator_created_and_ignored():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for name, service in SERVICES.items():
        for source, _target in _bind_mounts(service):
            if source in OPERATOR_CREATED:
                assert (ROOT / OPERATOR_CREATED[source]).exists()
                assert f"/{source}" in ignored or f"/{source}/" in ignored, source
            else:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_mosquitto_reads_its_users_and_data_from_the_mounted_directories():
    mounts = dict(_bind_mounts(SERVICES["mosquitto"]))
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert mounts["deploy/mosquitto/mosquitto.conf"] == "/mosquitto/config/mosquitto.conf"
    auth_dir = mounts["deploy/mosquitto/generated"]
    assert conf["allow_anonymous"] == "false"
    assert conf["password_file"] == f"{auth_dir}/passwd"
    assert conf["acl_file"] == f"{auth_dir}/acl"
    assert (
        "mosquitto-data:" + conf["persistence_location"].rstrip("/")
        in (SERVICES["mosquitto"]["volumes"])
    )
    # broker-acl writes into the same host directory the broker reads.
    writer = dict(_bind_mounts(SERVICES["broker-acl"]))
    out_dir = SERVICES["broker-acl"]["command"][
        SERVICES["broker-acl"]["command"].index("--out") + 1
    ]
    assert writer["deploy/mosquitto/generated"] == out_dir


def test_broker_acl_ingest_user_matches_what_the_ingest_replicas_log_in_with():
    example = tomllib.loads((ROOT / "deploy/mosquitto/gateways.example.toml").read_text())
    ingest_user = next(s for s in example["service"] if s.get("role") == "ingest")
    acl_env = _environment(SERVICES["broker-acl"])

    for env in map(_environment, INGEST.values()):
        assert env["IOT_MQTT_USERNAME"] == ingest_user["username"]
        assert env["IOT_MQTT_PASSWORD"] == acl_env[ingest_user["password_env"]]


def test_api_is_reached_only_through_the_proxy():
    api = SERVICES["api"]
    assert "ports" not in api
    assert _environment(api)["IOT_API_HOST"] == "0.0.0.0"
    port = _environment(api)["IOT_API_PORT"]
    caddyfile = (ROOT / "deploy/caddy/Caddyfile").read_text()
    assert f"reverse_proxy api:{port}" in caddyfile
    assert "/health" in " ".join(api["healthcheck"]["test"])


def test_the_api_trusts_forwarded_addresses_from_the_proxy_only():
    caddy = SERVICES["caddy"]["networks"]["edge"]["ipv4_address"]
    trusted = Settings(
        trusted_proxies=json.loads(_environment(SERVICES["api"])["IOT_TRUSTED_PROXIES"])
    )
    assert trusted.trusted_proxies == [caddy]
    subnet = COMPOSE["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(caddy) in ipaddress.ip_network(subnet)
    assert "edge" in SERVICES["api"]["networks"]


def test_proxy_sets_security_headers_compresses_and_hides_metrics():
    caddyfile = (ROOT / "deploy/caddy/Caddyfile").read_text()
    for header in (
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Content-Security-Policy",
        "Referrer-Policy",
    ):
        assert header in caddyfile
    assert "encode zstd gzip" in caddyfile
    assert "respond /metrics 404" in caddyfile


def test_database_and_api_ports_are_not_published():
    assert "ports" not in SERVICES["db"]
    mqtt_ports = SERVICES["mosquitto"]["ports"]
    assert all(p.startswith("${MQTT_PUBLISH_ADDRESS:-127.0.0.1}:") for p in mqtt_ports)


def test_every_variable_compose_interpolates_is_documented_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (ROOT / "deploy/.env.example").read_text()
    documented = set(re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert used <= documented, f"undocumented: {used - documented}"


def test_prometheus_scrapes_the_api_and_every_ingest_replica():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    metrics_ports = {_environment(svc)["IOT_INGEST_METRICS_PORT"] for svc in INGEST.values()}
    assert targets["ingest"] == {f"{name}:{port}" for name in INGEST for port in metrics_ports}
    assert targets["api"] == {f"api:{_environment(SERVICES['api'])['IOT_API_PORT']}"}


@pytest.mark.parametrize("package", ["ingest", "api"])
def test_alert_rules_use_only_metrics_the_code_defines(package: str):
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    used = {
        re.sub(r"_(total|bucket|sum|count|created)$", "", name)
        for name in re.findall(rf"\biot_{package}_[a-z0-9_]+", exprs)
    }
    assert used, f"alerts.yml has no rule on iot_{package}_* metrics"
    sources = " ".join(path.read_text() for path in (ROOT / package).rglob("*.py"))
    if "prometheus_client" not in sources:
        pytest.skip(f"no Prometheus metrics defined in {package}/ yet")
    missing = {name for name in used if f'"{name}' not in sources}
    assert not missing, f"alerts.yml uses metrics {package}/ does not define: {missing}"


def test_image_runs_the_cli_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if re.match(r"^[A-Z]+ ", line)]
    assert instructions[0] == "FROM python:3.11-slim"
    user = next(line for line in instructions if line.startswith("USER "))
    assert user.split()[1] not in {"root", "0"}
    assert 'ENTRYPOINT ["python", "-m", "cli"]' in instructions
    assert instructions.index(user) > max(
        i for i, line in enumerate(instructions) if line.startswith("RUN ")
    )


def test_build_context_leaves_out_secrets_and_generated_credentials():
    ignored = set((ROOT / ".dockerignore").read_text().splitlines())
    assert {".env", ".git", ".venv", "deploy/mosquitto/generated"} <= ignored
