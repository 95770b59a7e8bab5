"""Generated Mosquitto users and ACLs, checked against a private real Mosquitto broker.

Each broker test starts its own ``mosquitto`` on a free port with the files our code wrote
(anonymous access off), then connects real paho-mqtt clients.
"""

from __future__ import annotations

import base64
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.broker_acl import (
    BrokerAclError,
    GatewaysConfig,
    application_owners,
    broker_users,
    hash_password,
    load_config,
    read_credentials,
    render_acl,
    write_broker_files,
)
from models.settings import DEFAULT_TOPICS

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed")

PRODUCTION_CONF = Path(__file__).parents[2] / "deploy/mosquitto/mosquitto.conf"
INGEST_PASSWORD = "ingest-secret-from-env"
ENV = {"TEST_MQTT_INGEST_PASSWORD": INGEST_PASSWORD}
CONFIG = GatewaysConfig.model_validate(
    {
        "gateway": [{"username": "alpha-gw-2", "municipality": "alpha"}],
        "network_server": [
            {
                "username": "alpha-chirpstack",
                "municipality": "alpha",
                "chirpstack_applications": ["app-alpha"],
                "tts_applications": ["alpha-parking@alpha"],
            }
        ],
        "service": [
            {
                "username": "ingest",
                "role": "ingest",
                "password_env": "TEST_MQTT_INGEST_PASSWORD",
            }
        ],
    }
)
INGEST_SHARED = [f"$share/ingest/{topic}" for topic in DEFAULT_TOPICS]
# The application mapping (network_applications) the CONFIG's network server relies on.
OWNERS = {
    ("chirpstack", "app-alpha"): "alpha",
    ("thethings", "alpha-parking@alpha"): "alpha",
    ("chirpstack", "app-beta"): "beta",
}


# --- generation ---------------------------------------------------------------------------


def test_hash_password_is_what_mosquitto_passwd_computes_for_the_same_salt(tmp_path: Path):
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret pass"], check=True)
    expected = path.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(expected.split("$")[3])

    assert hash_password("s3cret pass", salt) == expected


def test_every_municipality_gets_a_gateway_limited_to_its_native_topic():
    users = {u.username: u for u in broker_users(["alpha", "beta"], GatewaysConfig(), [])}

    assert users["gw-alpha"].write == ("municipality/alpha/sensors/+/readings",)
    assert users["gw-beta"].write == ("municipality/beta/sensors/+/readings",)
    assert users["gw-alpha"].read == () and users["gw-beta"].read == ()


def test_acl_lists_nothing_before_the_first_user_so_anonymous_gets_no_access():
    acl = render_acl(broker_users(["alpha", "beta"], CONFIG, list(DEFAULT_TOPICS), OWNERS))
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]

    assert rules[0].startswith("user ")
    assert "user alpha-chirpstack\ntopic write application/app-alpha/#\n" in acl
    assert "topic write v3/alpha-parking@alpha/#" in acl
    assert "user ingest\n" + "".join(f"topic read {t}\n" for t in DEFAULT_TOPICS) in acl


def test_user_of_a_municipality_missing_from_the_database_is_refused_by_name():
    config = GatewaysConfig.model_validate(
        {"gateway": [{"username": "ghost-gw", "municipality": "ghost"}]}
    )
    with pytest.raises(BrokerAclError, match=r"'ghost-gw'.*'ghost'.*create-municipality"):
        broker_users(["alpha"], config, [])


def test_topic_filter_with_a_newline_cannot_inject_acl_lines():
    config = GatewaysConfig.model_validate(
        {"service": [{"username": "svc", "publish": ["ok/topic\nuser evil"]}]}
    )
    with pytest.raises(BrokerAclError, match="without whitespace"):
        broker_users([], config, [])


def test_application_id_with_a_wildcard_is_refused():
    with pytest.raises(ValueError, match="one topic level"):
        GatewaysConfig.model_validate(
            {
                "network_server": [
                    {"username": "ns", "municipality": "alpha", "chirpstack_applications": ["#"]}
                ]
            }
        )


def test_duplicate_username_is_refused():
    config = GatewaysConfig.model_validate(
        {"gateway": [{"username": "gw-alpha", "municipality": "alpha"}]}
    )
    with pytest.raises(BrokerAclError, match="defined twice"):
        broker_users(["alpha"], config, [])


def test_unknown_config_key_is_refused_with_the_file_name(tmp_path: Path):
    path = tmp_path / "gateways.toml"
    path.write_text('[[gateway]]\nusername = "x"\nmunicipality = "alpha"\ncolour = "red"\n')
    with pytest.raises(BrokerAclError, match=r"gateways\.toml.*colour"):
        load_config(path)


def test_example_config_in_the_repository_is_valid():
    example = Path(__file__).parents[2] / "deploy/mosquitto/gateways.example.toml"
    config = load_config(example)
    slugs = sorted({u.municipality for u in [*config.gateway, *config.network_server]})

    # As an operator would map them: each listed application to its server's municipality.
    owners = {
        (network, application): server.municipality
        for server in config.network_server
        for network, applications in (
            ("chirpstack", server.chirpstack_applications),
            ("thethings", server.tts_applications),
        )
        for application in applications
    }
    users = broker_users(slugs, config, list(DEFAULT_TOPICS), owners)
    assert any(u.username == "ingest" and u.password_env for u in users)


def test_network_server_may_not_list_an_application_mapped_elsewhere_or_nowhere():
    # Whoever edits the gateways config cannot widen a municipality's network server to
    # another's application: the database mapping, which ingest binds by, decides.
    for application, where in (("app-beta", "to 'beta'"), ("app-gamma", "to no municipality")):
        config = GatewaysConfig.model_validate(
            {
                "network_server": [
                    {
                        "username": "alpha-ns",
                        "municipality": "alpha",
                        "chirpstack_applications": ["app-alpha", application],
                    }
                ]
            }
        )
        with pytest.raises(BrokerAclError, match=rf"'{application}'.*mapped {where}"):
            broker_users(["alpha", "beta"], config, [], OWNERS)


def test_network_server_without_a_list_gets_the_applications_mapped_to_its_municipality():
    config = GatewaysConfig.model_validate(
        {"network_server": [{"username": "alpha-ns", "municipality": "alpha"}]}
    )
    users = {u.username: u for u in broker_users(["alpha", "beta"], config, [], OWNERS)}
    assert users["alpha-ns"].write == ("application/app-alpha/#", "v3/alpha-parking@alpha/#")
    with pytest.raises(BrokerAclError, match="no application is mapped to 'alpha'"):
        broker_users(["alpha", "beta"], config, [], {})


def test_service_password_from_unset_environment_variable_is_an_error(tmp_path: Path):
    users = broker_users([], CONFIG.model_copy(update={"gateway": [], "network_server": []}), [])
    with pytest.raises(BrokerAclError, match="TEST_MQTT_INGEST_PASSWORD"):
        write_broker_files(tmp_path, users, environ={})


def test_regenerating_keeps_passwords_adds_new_users_and_drops_removed_ones(tmp_path: Path):
    first = write_broker_files(tmp_path, broker_users(["alpha", "beta"], GatewaysConfig(), []), {})
    before = read_credentials(first.credentials_file)

    second = write_broker_files(
        tmp_path, broker_users(["alpha", "gamma"], GatewaysConfig(), []), {}
    )
    after = read_credentials(second.credentials_file)

    assert first.new_users == ["gw-alpha", "gw-beta"]
    assert second.new_users == ["gw-gamma"]
    assert after["gw-alpha"] == before["gw-alpha"]
    assert set(after) == {"gw-alpha", "gw-gamma"}
    assert "gw-beta" not in second.password_file.read_text()
    assert (second.credentials_file.stat().st_mode & 0o777) == 0o600


def test_cli_writes_files_for_the_municipalities_in_the_database(
    db: psycopg.Connection, database_url: str, tmp_path: Path
):
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('alpha', 'Alpha Kommune')")
    env = {**os.environ, "IOT_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "broker-acl", "--out", str(tmp_path / "out")],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "gw-alpha" in result.stdout
    assert "user gw-alpha\ntopic write municipality/alpha/sensors/+/readings" in (
        (tmp_path / "out/acl").read_text()
    )


# --- against a real broker ----------------------------------------------------------------


@dataclass
class Broker:
    port: int
    process: subprocess.Popen
    out_dir: Path

    def password(self, username: str) -> str:
        if username == "ingest":
            return INGEST_PASSWORD
        return read_credentials(self.out_dir / "credentials")[username]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"mosquitto did not listen on {port}: {log.read_text()}")


def _production_config(auth_dir: Path, data_dir: Path, port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with the container paths and port moved here."""
    text = PRODUCTION_CONF.read_text()
    replacements = {
        "/mosquitto/auth/": f"{auth_dir}/",
        "/mosquitto/data/": f"{data_dir}/",
        "\nlistener 1883\n": f"\nlistener {port} 127.0.0.1\n",
    }
    for container_value, local_value in replacements.items():
        assert container_value in text, f"{container_value!r} no longer in {PRODUCTION_CONF}"
        text = text.replace(container_value, local_value)
    data_dir.mkdir()
    # Started as root, mosquitto would drop to user "mosquitto" and could not read the 0600
    # files; naming the current user keeps it as the files' owner (as in docker-compose).
    return f"user {pwd.getpwuid(os.getuid()).pw_name}\n" + text


@pytest.fixture
def broker(db: psycopg.Connection, tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto with the production config and files generated for alpha, beta."""
    assert MOSQUITTO is not None
    db.execute(
        "INSERT INTO municipalities (slug, name) VALUES ('alpha', 'Alpha'), ('beta', 'Beta')"
    )
    for (network, application), slug in OWNERS.items():
        db.execute(
            "INSERT INTO network_applications (network, application_id, municipality_id) "
            "SELECT %s, %s, id FROM municipalities WHERE slug = %s",
            (network, application, slug),
        )
    out_dir = tmp_path / "broker"
    slugs = [row[0] for row in db.execute("SELECT slug FROM municipalities ORDER BY slug")]
    users = broker_users(slugs, CONFIG, list(DEFAULT_TOPICS), application_owners(db))
    write_broker_files(out_dir, users, ENV)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(_production_config(out_dir, tmp_path / "data", port))
    log = tmp_path / "mosquitto.log"
    with log.open("w") as log_handle:
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=log_handle, stderr=log_handle
        )
    try:
        _wait_for_port(port, process, log)
        yield Broker(port, process, out_dir)
    finally:
        process.terminate()
        process.wait(timeout=10)


class Client:
    """A connected paho client that records what it receives and its acks."""

    def __init__(
        self,
        broker: Broker,
        username: str | None,
        password: str | None = None,
        protocol: int = mqtt.MQTTv5,
    ) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.acks: queue.Queue[int] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{username}-{os.urandom(3).hex()}",
            protocol=protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.put(rc.value)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.acks.put(rcs[0].value)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.connack_code = self.connack.get(timeout=5)

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            self.client.subscribe(topic, qos=1)
            self.acks.get(timeout=5)

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (always 0 on MQTT 3.1.1).

        With MQTT 5, 0x10 "no matching subscribers" is also a success, so tests that expect
        0 keep a subscriber on the topic.
        """
        self.client.publish(topic, payload, qos=1)
        return self.acks.get(timeout=5)

    def received(self, wait_s: float = 0.5) -> list[tuple[str, bytes]]:
        got = []
        deadline = time.monotonic() + wait_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def _connect(clients: list[Client], broker: Broker, username: str, **kwargs) -> Client:
    client = Client(
        broker, username, kwargs.pop("password", None) or broker.password(username), **kwargs
    )
    clients.append(client)
    assert client.connack_code == 0
    return client


NOT_AUTHORIZED = 0x87


@needs_mosquitto
def test_gateway_reading_under_its_own_municipality_reaches_the_shared_ingest_subscription(
    broker: Broker, clients: list[Client]
):
    ingest = _connect(clients, broker, "ingest")
    ingest.subscribe(*INGEST_SHARED)
    gateway = _connect(clients, broker, "gw-alpha")

    assert gateway.publish("municipality/alpha/sensors/s1/readings", b"own") == 0
    assert ingest.received() == [("municipality/alpha/sensors/s1/readings", b"own")]


@needs_mosquitto
def test_gateway_publishing_as_another_municipality_is_refused_and_not_delivered(
    broker: Broker, clients: list[Client]
):
    ingest = _connect(clients, broker, "ingest")
    ingest.subscribe(*INGEST_SHARED)
    gateway = _connect(clients, broker, "gw-alpha")

    assert gateway.publish("municipality/beta/sensors/s1/readings", b"forged") == NOT_AUTHORIZED
    assert gateway.publish("application/app-beta/device/00/event/up", b"forged") == NOT_AUTHORIZED
    assert ingest.received() == []


@needs_mosquitto
def test_mqtt311_gateway_publishing_as_another_municipality_is_silently_dropped(
    broker: Broker, clients: list[Client]
):
    ingest = _connect(clients, broker, "ingest")
    ingest.subscribe(*INGEST_SHARED)
    gateway = _connect(clients, broker, "alpha-gw-2", protocol=mqtt.MQTTv311)

    # MQTT 3.1.1 has no reason codes: the broker acks and drops the message.
    assert gateway.publish("municipality/beta/sensors/s1/readings", b"forged") == 0
    assert gateway.publish("municipality/alpha/sensors/s1/readings", b"own") == 0
    assert ingest.received() == [("municipality/alpha/sensors/s1/readings", b"own")]


@needs_mosquitto
def test_anonymous_and_wrong_password_connections_are_refused(
    broker: Broker, clients: list[Client]
):
    anonymous = Client(broker, None)
    wrong = Client(broker, "gw-alpha", "not-the-password")
    unknown = Client(broker, "gw-nobody", "whatever")
    clients.extend([anonymous, wrong, unknown])

    assert anonymous.connack_code == NOT_AUTHORIZED
    assert wrong.connack_code == NOT_AUTHORIZED
    assert unknown.connack_code == NOT_AUTHORIZED


@needs_mosquitto
def test_gateway_subscribing_to_everything_receives_no_data_of_others(
    broker: Broker, clients: list[Client]
):
    # Mosquitto 2.0 grants the subscription and checks read access per delivered message.
    snooper = _connect(clients, broker, "gw-alpha")
    snooper.subscribe("#", "municipality/beta/#", "$share/snoop/municipality/+/sensors/+/readings")
    beta = _connect(clients, broker, "gw-beta")

    assert beta.publish("municipality/beta/sensors/s1/readings", b"beta data") == 0
    assert snooper.received() == []


@needs_mosquitto
def test_municipal_network_server_publishes_only_its_own_applications(
    broker: Broker, clients: list[Client]
):
    ingest = _connect(clients, broker, "ingest")
    ingest.subscribe(*INGEST_SHARED)
    server = _connect(clients, broker, "alpha-chirpstack")

    own_chirpstack = "application/app-alpha/device/0011223344556677/event/up"
    own_tts = "v3/alpha-parking@alpha/devices/bay-1/up"
    assert server.publish(own_chirpstack, b"cs") == 0
    assert server.publish(own_tts, b"tts") == 0
    assert server.publish("application/app-beta/device/0011223344556677/event/up", b"x") == (
        NOT_AUTHORIZED
    )
    assert server.publish("municipality/beta/sensors/s1/readings", b"x") == NOT_AUTHORIZED
    assert sorted(ingest.received()) == sorted([(own_chirpstack, b"cs"), (own_tts, b"tts")])


@needs_mosquitto
def test_ingest_user_may_not_publish(broker: Broker, clients: list[Client]):
    ingest = _connect(clients, broker, "ingest")

    assert ingest.publish("municipality/alpha/sensors/s1/readings", b"x") == NOT_AUTHORIZED


@needs_mosquitto
def test_new_municipality_can_connect_after_regenerating_and_sighup(
    broker: Broker, clients: list[Client], db: psycopg.Connection
):
    old_password = broker.password("gw-alpha")
    db.execute("INSERT INTO municipalities (slug, name) VALUES ('gamma', 'Gamma')")
    slugs = [row[0] for row in db.execute("SELECT slug FROM municipalities ORDER BY slug")]
    written = write_broker_files(
        broker.out_dir, broker_users(slugs, CONFIG, list(DEFAULT_TOPICS), OWNERS), ENV
    )
    assert written.new_users == ["gw-gamma"]

    broker.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        gamma = Client(broker, "gw-gamma", broker.password("gw-gamma"))
        clients.append(gamma)
        if gamma.connack_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert gamma.connack_code == 0
    ingest = _connect(clients, broker, "ingest")
    ingest.subscribe(*INGEST_SHARED)
    assert gamma.publish("municipality/gamma/sensors/s1/readings", b"x") == 0
    assert ingest.received() == [("municipality/gamma/sensors/s1/readings", b"x")]
    assert gamma.publish("municipality/alpha/sensors/s1/readings", b"x") == NOT_AUTHORIZED
    assert _connect(clients, broker, "gw-alpha", password=old_password).connack_code == 0
