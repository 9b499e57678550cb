#!/usr/bin/env bash
# Installs what the monitoring tests run, from Debian's packages, if missing:
#   prometheus - the server (scrapes a live voxgate in tests/api/test_prometheus.py) and promtool (checks
#                deploy/prometheus/alerts.yml and prometheus.yml, runs the alert rules' unit tests)
# Idempotent. Needs root (CI runs as root on a fresh Debian machine) or sudo.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -n)
fi
echo "monitoring-tools: installing prometheus"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# the package starts a system prometheus on :9090; the tests run their own on free ports
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  "${SUDO[@]}" systemctl stop prometheus || true
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "monitoring-tools: done"
