#!/usr/bin/env bash
# Make sure PostgreSQL and Mosquitto answer on their local ports, starting them when they
# are installed but stopped. Exits non-zero, naming the service, when one cannot be reached.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  echo "services: $name is not answering on 127.0.0.1:$port" >&2
  return 1
}

if ! port_open "${PGPORT:-5432}"; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  fi
fi
wait_port PostgreSQL "${PGPORT:-5432}" || exit 1

if ! port_open "${MQTT_PORT:-1883}"; then
  if command -v mosquitto >/dev/null 2>&1; then
    echo "services: starting Mosquitto"
    mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
  fi
fi
wait_port Mosquitto "${MQTT_PORT:-1883}" || exit 1
