#!/usr/bin/env bash
# Debian packages the tests need beyond the machine image: Java + Maven for the Kafka broker,
# PostgreSQL for the incident store's second backend, Prometheus Alertmanager for alert delivery,
# the Prometheus server that scrapes a live worker in the metrics test, libfaketime (faketime) for the
# tests' clock-ahead pass.
# Installs only what is missing; needs root.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus >/dev/null || need+=(prometheus)
command -v faketime >/dev/null || need+=(faketime)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
